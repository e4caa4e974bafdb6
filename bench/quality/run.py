"""Run the quality benchmark: pixlab vs the random forest vs Otsu (vs the full-mask upper bound).

For each case x setting x stroke draw:

* the random forest (``pixlab.training.forest.FeatureClassifier``, the brush preview) fitted on the
  stroke pixels of the normalised image;
* Otsu on the case's designated channel, where a single threshold means something;
* pixlab called as a user would: ``pixlab.train([(img, labels)], TrainConfig(time_limit_s=S,
  seed=draw, **setting), class_names=..., progress=False)`` then ``model.predict_labels(img)``;
* optionally (``--upper``) the same configuration trained on the full truth mask, once per case and
  setting (headroom, not reachable from strokes).

Each pixlab run is a separate Python process (``python -m bench.quality --one SPEC``), so a crash
or a hang in one run becomes an error row of the table instead of ending the benchmark. Results
are merged into a JSON file by (case, setting, seconds, draw, kind), so runs at different settings
accumulate; ``--table FILE`` prints the table from saved results only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

from bench.quality.cases import CASES
from bench.quality.strokes import draw_strokes

# name -> (TrainConfig fields set explicitly, time limit override or None)
SETTINGS: dict[str, tuple[dict, float | None]] = {
    "defaults": ({}, None),
    "tile128": ({"tile_size": 128}, None),
    "tile256": ({"tile_size": 256}, None),
    "tile512": ({"tile_size": 512}, None),
    "resnet18": ({"architecture": "unet", "encoder": "resnet18", "pretrained": False}, None),
    "resnet34": ({"architecture": "unet", "encoder": "resnet34", "pretrained": False}, None),
    # the broken setting, verbatim
    "tile256_resnet18": ({"tile_size": 256, "batch_size": 8, "encoder": "resnet18", "pretrained": False}, None),
    "t60": ({}, 60.0),
    "t180": ({}, 180.0),
    "t600": ({}, 600.0),
    # Class-count variants (defaults otherwise): classes3 splits a 2-class case where a split means
    # something, classes2 merges the 3-class cases' tissue classes; other cases are skipped.
    "classes3": ({}, None),
    "classes2": ({}, None),
}
PER_RUN_OVERHEAD_S = 25.0  # process start, imports, prediction, scoring on 2 busy cores (measured ~15-30 s)


# ------------------------------------------------------------------------------------------------
# data + metrics
# ------------------------------------------------------------------------------------------------

def variant_of(setting: str) -> str:
    return setting if setting in ("classes3", "classes2") else ""


def load_case(name: str, variant: str = "", seed: int = 0):
    """``(Image, truth, class_names)`` of a case, or ``None`` if the class variant does not apply."""
    case = CASES[name]
    img, truth, classes = case.make(seed)
    if variant == "classes2":
        if len(classes) < 3:
            return None
        truth = np.minimum(truth, 2).astype(np.uint8)
        classes = [classes[0], "tissue"]
    elif variant == "classes3":
        if len(classes) >= 3 or case.split3 is None:
            return None
        truth, classes = case.split3(img, truth, seed)
    return img, truth, classes


def score(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> tuple[float, list]:
    """Foreground IoU (2 classes) or mean IoU over the non-background classes; plus IoU per class."""
    ious = []
    for k in range(1, n_classes + 1):
        p, t = pred == k, truth == k
        ious.append(float((p & t).sum() / max((p | t).sum(), 1)))
    return float(np.mean(ious[1:])), ious


def degenerate(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> bool:
    """One class on >98 % of the pixels while the truth has >= 2 classes covering > 5 % each."""
    pred_frac = np.bincount(pred.ravel(), minlength=n_classes + 1)[1:] / pred.size
    true_frac = np.bincount(truth.ravel(), minlength=n_classes + 1)[1:] / truth.size
    return bool(pred_frac.max() > 0.98 and (true_frac > 0.05).sum() >= 2)


def normalised(img) -> np.ndarray:
    from pixlab.image.normalize import apply, compute_stats
    return apply(img.read(), compute_stats(img))


def forest_run(name: str, variant: str, draw: int) -> dict:
    """Random forest fitted on the strokes of one draw (what the brush preview shows)."""
    from pixlab.training.forest import FeatureClassifier
    rec = {"case": name, "setting": variant or "-", "seconds": None, "draw": draw, "kind": "forest"}
    try:
        loaded = load_case(name, variant, 0)
        img, truth, classes = loaded
        labels = draw_strokes(CASES[name], truth, draw)
        t0 = time.perf_counter()
        norm = normalised(img)
        clf = FeatureClassifier(seed=draw).fit(norm, labels, n_classes=len(classes))
        pred = clf.predict(norm)
        rec["wall_s"] = round(time.perf_counter() - t0, 2)
        rec["score"], rec["ious"] = score(pred, truth, len(classes))
        rec["degenerate"] = degenerate(pred, truth, len(classes))
        rec["labelled_px"] = [int((labels == k).sum()) for k in range(1, len(classes) + 1)]
    except Exception as e:  # reported in the table, not fatal
        rec["error"] = f"{type(e).__name__}: {e}"
    return rec


def otsu_run(name: str, variant: str) -> dict | None:
    """Otsu (multi-Otsu for 3 classes) on the case's designated channel; ``None`` where it does not apply."""
    case = CASES[name]
    if case.otsu_channel is None:
        return None
    from skimage.filters import threshold_multiotsu, threshold_otsu
    img, truth, classes = load_case(name, variant, 0)
    x = np.asarray(img.read()[case.otsu_channel], np.float32)
    if case.otsu_dark:
        x = -x
    if len(classes) == 2:
        pred = np.where(x > threshold_otsu(x), 2, 1)
    else:
        pred = np.digitize(x, threshold_multiotsu(x, classes=len(classes))) + 1
    s, ious = score(pred, truth, len(classes))
    return {"case": name, "setting": variant or "-", "seconds": None, "draw": 0, "kind": "otsu",
            "score": s, "ious": ious}


def pixlab_run(name: str, setting: str, seconds: float, draw: int, upper: bool = False) -> dict:
    """One pixlab training run as a user would call it (in this process; see :func:`isolated`)."""
    import pixlab
    overrides, limit = SETTINGS[setting]
    seconds = float(limit or seconds)
    rec = {"case": name, "setting": setting, "seconds": seconds, "draw": draw,
           "kind": "upper" if upper else "pixlab"}
    loaded = load_case(name, variant_of(setting), 0)
    img, truth, classes = loaded
    labels = truth if upper else draw_strokes(CASES[name], truth, draw)
    cfg = pixlab.TrainConfig(time_limit_s=seconds, seed=draw, **overrides)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = pixlab.train([(img, labels)], cfg, class_names=classes, progress=False)
    rec["train_s"] = round(time.perf_counter() - t0, 1)
    pred = model.predict_labels(img)
    rec["wall_s"] = round(time.perf_counter() - t0, 1)
    rec["score"], rec["ious"] = score(pred, truth, len(classes))
    rec["degenerate"] = degenerate(pred, truth, len(classes))
    rec["steps"] = int(sum(h.get("steps", 0) for h in model.history))
    rec["epochs"] = len(model.history)
    used = model.config
    rec["recipe"] = getattr(used, "recipe", None)
    rec["architecture"] = f"{used.architecture}" + ("" if used.architecture == "tiny_unet" else f"/{used.encoder}")
    rec["tile_size"] = getattr(used, "tile_size", None)
    rec["warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    meta = getattr(model, "metadata", None) or {}
    qc = meta.get("quality_check")
    if qc is not None:
        rec["quality_check"] = json.loads(json.dumps(qc, default=str))
    return rec


def one_main(spec_json: str) -> None:
    """Entry of the child process: run one spec, print its record as the last line."""
    spec = json.loads(spec_json)
    try:
        rec = pixlab_run(spec["case"], spec["setting"], spec["seconds"], spec["draw"], spec.get("upper", False))
    except Exception as e:
        rec = {**spec, "kind": "upper" if spec.get("upper") else "pixlab",
               "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
    print("RESULT " + json.dumps(rec), flush=True)


def isolated(name: str, setting: str, seconds: float, draw: int, upper: bool = False) -> dict:
    """:func:`pixlab_run` in a child process; a crash, a hang or a bad exit becomes an error record."""
    overrides, limit = SETTINGS[setting]
    eff = float(limit or seconds)
    spec = {"case": name, "setting": setting, "seconds": eff, "draw": draw, "upper": upper}
    base = {"case": name, "setting": setting, "seconds": eff, "draw": draw, "kind": "upper" if upper else "pixlab"}
    try:
        proc = subprocess.run([sys.executable, "-m", "bench.quality", "--one", json.dumps(spec)],
                              capture_output=True, text=True, timeout=3 * eff + 600)
    except subprocess.TimeoutExpired:
        return {**base, "error": f"timeout after {3 * eff + 600:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
    return {**base, "error": f"exit {proc.returncode}: {tail[0][:300]}"}


# ------------------------------------------------------------------------------------------------
# results file
# ------------------------------------------------------------------------------------------------

def _key(r: dict) -> tuple:
    return (r["case"], r["setting"], r.get("seconds"), r["draw"], r["kind"])


def load_results(path) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        return []
    return json.loads(p.read_text())["results"]


def save_results(path, new: list[dict]) -> list[dict]:
    """Merge ``new`` into the file (a newer record replaces the same key) and write it atomically."""
    p = Path(path)
    merged = {_key(r): r for r in load_results(p)}
    for r in new:
        merged[_key(r)] = r
    out = sorted(merged.values(), key=lambda r: tuple(str(v) for v in _key(r)))
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps({"version": 1, "results": out}, indent=1))
    tmp.replace(p)
    return out
