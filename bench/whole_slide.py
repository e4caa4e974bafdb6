"""Whole slide end to end (issue #14): annotate, train and predict a 100,000-px slide; memory and time.

The slide is a synthetic 100,000 x 80,000 RGB pyramidal OME-TIFF (``bench/synthetic_slide.py``:
512 px tiles written one by one, ~65 % background, five tissue pieces, each a "stroma" ring around
a darker "tumour" core). The phases, as a user would run them:

1. **write** the slide (pre-encoded tiles: seconds, never a level in memory);
2. **annotate**: an ``AnnotationSession`` on the slide file; 15 strokes (background, stroma, tumour)
   at five far-apart places (one per tissue piece) through ``session.paint`` at full resolution;
   the session's autosave thread writes them (the bench waits for its "saved" event), then
   ``flush()``; the label files' size on disk;
3. **train**: a new session on the same slide loads the labels from disk, ``training_samples()`` ->
   ``pixlab.train`` with ``time_limit_s`` (default 60 s; ``recipe="auto"``: the CPU recipe, with
   random-forest pseudo-labels) at ``downsample`` x the level-0 pixel size (default 8: 2.4 µm/px,
   a tissue-level classifier; the bundle records the pixel size and predicting reads the matching
   pyramid level, see docs/images.md);
4. **predict**: ``pixlab.predict_file`` of the whole slide with background skipping (the default
   ``background="auto"``: a tissue mask from a small level), and without (``background="none"``).
   Without skipping, the whole slide is predicted when its grid has at most ``--full-noskip-tiles``
   tiles; beyond that a band of rows through the middle of the working level is predicted and the
   time extrapolated by tile count (the output says which). Accuracy: points drawn at random from
   the synthetic truth of the predicted level, ``--points`` per class, read from the written label
   raster.

Peak memory: every phase runs in a fresh child process (this script with ``--phase``), and its peak
resident set size is the kernel's high-water mark ``VmHWM`` of ``/proc/self/status`` read when the
phase ends: exact (no sampling), for that phase alone, imports (torch: ~0.3-0.4 GB) included, which a
user's process pays too. ``start RSS`` is the resident size after the imports, before the phase's
work. Times are wall and CPU seconds of the phase's work (imports excluded).

Goals (issue #14): peak RSS < 2 GB (GiB) in every phase; label files < 5 MB; inference time
proportional to the tissue area (CPU time with skipping / without ~ the fraction of tiles kept,
which is the tissue area plus the tiles that touch its edge; CPU time because the wall time of a
shared machine follows the other jobs; both are printed); >= 90 % of the sampled points of each
class predicted right.

Usage: ``python bench/whole_slide.py [--side 100000] [--small] [--out DIR] [--time-limit 60]
[--downsample 8] [--phases train,predict]``; ``--phases`` reruns some phases and reads the others'
results from ``--out`` (``--phases none`` only prints the table again). ``--small`` is a 16,000 x 12,800 slide and a 30 s training (two or three minutes
in all; its working level has so few tiles that all of them touch tissue: skipping saves nothing
there). Without ``--out`` the files go to a temporary folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))  # the shared slide writer

from synthetic_slide import BLOBS, CORE, level_kind, level_shapes, write_slide  # noqa: E402

CLASSES = ["background", "stroma", "tumour"]
PHASES = ("write", "annotate", "train", "predict")
GB = 2**30
MB = 2**20
SLIDE = "synthetic_slide.ome.tif"


# ------------------------------------------------------------------------------------------------
# Memory and time of one phase (in its own process)
# ------------------------------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------------
# Strokes: three classes at each of the five tissue pieces
# ------------------------------------------------------------------------------------------------
def _arc(cy, cx, ry, rx, d, a0, a1, n=6):
    a = np.radians(np.linspace(a0, a1, n))
    return np.stack([cy + d * ry * np.sin(a), cx + d * rx * np.cos(a)], 1)


def _line(cy, cx, ry, rx, d, angle):
    a = math.radians(angle)
    dy, dx = d * ry * math.sin(a), d * rx * math.cos(a)
    return np.array([(cy - dy, cx - dx), (cy + dy * 0.1, cx), (cy + dy, cx + dx)])


def _valid(points, cls, radius, shapes, level, cores=True) -> bool:
    """Every pixel within ``radius`` (+ one working pixel) of the polyline is of kind ``cls - 1`` at
    level 0 and at the working ``level`` (what training and the accuracy check see)."""
    ny, nx = shapes[0]
    f = 2 ** level
    reach = radius + f
    samples = []
    for a, b in zip(points[:-1], points[1:]):
        n = max(2, int(np.hypot(*(b - a)) / max(radius / 2, 1)))
        samples.append(a + (b - a) * np.linspace(0, 1, n)[:, None])
    pts = np.concatenate(samples)
    offsets = np.array([(0, 0), (reach, 0), (-reach, 0), (0, reach), (0, -reach),
                        (reach, reach), (-reach, -reach), (reach, -reach), (-reach, reach)])
    probe = (pts[:, None, :] + offsets[None]).reshape(-1, 2)
    if (probe < 0).any() or (probe[:, 0] >= ny).any() or (probe[:, 1] >= nx).any():
        return False
    yy, xx = probe[:, 0].astype(int), probe[:, 1].astype(int)
    for lv in sorted({0, level}):
        kind = level_kind(shapes[lv], yy // 2 ** lv, xx // 2 ** lv, cores)
        if (kind != cls - 1).any():
            return False
    return True


def strokes(shapes, level: int, radius: float):
    """``[(class id, points (y, x), radius)]``: a background arc outside each piece, a stroma arc in
    its ring, a tumour line through its core; each checked against the truth at both levels."""
    ny, nx = shapes[0]
    out = []
    for cy, cx, ry, rx in BLOBS:
        cy, cx, ry, rx = cy * ny, cx * nx, ry * ny, rx * nx
        candidates = {
            3: [_line(cy, cx, ry, rx, d, ang) for d in (0.5 * CORE, 0.35 * CORE) for ang in (10, 60, 120)],
            2: [_arc(cy, cx, ry, rx, d, a, a + 40) for d in (0.75, 0.7, 0.8) for a in range(200, 560, 30)],
            1: [_arc(cy, cx, ry, rx, d, a, a + 25) for d in (1.3, 1.2, 1.45, 1.6) for a in range(0, 360, 30)],
        }
        for cls in (1, 2, 3):
            pts = next((p for p in candidates[cls] if _valid(p, cls, radius, shapes, level)), None)
            if pts is None:
                raise RuntimeError(f"no valid {CLASSES[cls - 1]} stroke at the piece centred ({cy:.0f}, {cx:.0f}); "
                                   f"the slide is too small for radius {radius}")
            out.append((cls, [tuple(map(float, p)) for p in pts], radius))
    return out


# ------------------------------------------------------------------------------------------------
# Phases
# ------------------------------------------------------------------------------------------------
def phase_write(args, out: Path) -> dict:
    shapes = write_slide(out / SLIDE, args.ny, args.nx, np.random.default_rng(0), cores=True)
    # The exact background fraction, on the smallest level (rendered pixel by pixel).
    small = shapes[-1]
    yy, xx = np.mgrid[0:small[0], 0:small[1]]
    kind = level_kind(small, yy, xx, cores=True)
    return {"file_mb": _du(out / SLIDE) / MB, "levels": len(shapes),
            "fractions": [float((kind == k).mean()) for k in range(3)]}


def phase_annotate(args, out: Path) -> dict:
    from pixlab.annotation import AnnotationSession

    shapes = level_shapes(args.ny, args.nx)
    plan = strokes(shapes, args.level, args.radius)
    shutil.rmtree(out / "labels", ignore_errors=True)  # a fresh annotation (labels of an earlier run would load)
    saved = threading.Event()
    t0 = time.perf_counter()
    s = AnnotationSession([out / SLIDE], class_names=CLASSES, labels_dir=out / "labels", autosave_delay=0.5)
    s.subscribe(lambda event, **info: saved.set() if event == "saved" else None)
    changed = 0
    for cls, pts, r in plan:
        changed += s.paint(pts, cls, r).n_changed
    t_paint = time.perf_counter() - t0
    autosaved = saved.wait(120)  # the autosave thread, 0.5 s after the last stroke
    t_saved = time.perf_counter() - t0
    s.flush()
    counts = s.label_store().bincount()[1:4].tolist()
    path = s.labels_path()
    s.close()
    return {"strokes": len(plan), "painted_px": int(changed), "px_per_class": [int(c) for c in counts],
            "paint_s": t_paint, "autosaved": bool(autosaved), "autosave_after_s": t_saved - t_paint,
            "labels_file": path.name, "labels_bytes": _du(out / "labels")}


def phase_train(args, out: Path) -> dict:
    import pixlab
    from pixlab.annotation import AnnotationSession

    s = AnnotationSession([out / SLIDE], class_names=CLASSES, labels_dir=out / "labels", autosave=False)
    samples = s.training_samples()  # labels loaded back from the files the annotate phase wrote
    cfg = pixlab.TrainConfig(time_limit_s=args.time_limit, downsample=args.downsample, device="cpu", seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = pixlab.train(samples, cfg, class_names=CLASSES, progress=False)
    model.save(out / "model", overwrite=True)
    s.close()
    m = model.metadata
    return {"architecture": model.config.architecture, "recipe": model.config.recipe,
            "tile": model.config.tile_size, "pseudo_labels": bool(model.config.pseudo_labels),
            "epochs": len(model.history or []), "patches_per_epoch": m.get("patches_per_epoch"),
            "pixel_size_um": m.get("pixel_size_um"), "validation": m.get("validation"),
            "warnings": sorted({str(w.message)[:160] for w in caught})}


def _read_points(path: Path, yy, xx) -> np.ndarray:
    """Label raster values at points (only the tiles holding them are decoded)."""
    import tifffile
    import zarr

    with tifffile.TiffFile(path) as tf:
        z = zarr.open(tf.series[0].aszarr(level=0), mode="r")
        if z.ndim == 3:
            return np.asarray(z.vindex[np.zeros_like(yy), yy, xx])
        return np.asarray(z.vindex[yy, xx])


def phase_predict(args, out: Path) -> dict:
    import pixlab
    from pixlab.image.image import Image

    model = pixlab.load_model(out / "model")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0, c0 = time.perf_counter(), time.process_time()
        skip = pixlab.predict_file(model, out / SLIDE, out / "prediction.ome.tif", output="labels",
                                   background="auto", overwrite=True)
        t_skip, c_skip = time.perf_counter() - t0, time.process_time() - c0
    said = sorted({str(w.message)[:160] for w in caught})
    rss_skip = _status_kb("VmHWM") * 1024
    grid, kept = skip["tiles"], skip["tiles"] - skip["tiles_skipped"]
    _, height, width = skip["shape"]

    # Accuracy on points drawn from the truth of the predicted level.
    level = next(i for i, s in enumerate(level_shapes(args.ny, args.nx)) if s == (height, width))
    rng = np.random.default_rng(1)
    yy, xx = rng.integers(0, height, 400_000), rng.integers(0, width, 400_000)
    truth = level_kind((height, width), yy, xx, cores=True) + 1
    accuracy, confusion = [], []
    for k in (1, 2, 3):
        where = np.flatnonzero(truth == k)[: args.points]
        pred = _read_points(out / "prediction.ome.tif", yy[where], xx[where])
        accuracy.append(float((pred == k).mean()))
        confusion.append(np.bincount(pred.ravel(), minlength=4)[1:4].tolist())

    # Without background skipping: the whole slide, or a band of rows (extrapolated by tile count).
    t0, c0 = time.perf_counter(), time.process_time()
    if grid <= args.full_noskip_tiles:
        full = pixlab.predict_file(model, out / SLIDE, out / "prediction_all.ome.tif", output="labels",
                                   background="none", overwrite=True)
        t_all, c_all = time.perf_counter() - t0, time.process_time() - c0
        noskip = {"measured": "whole slide", "tiles": full["tiles"], "seconds": t_all, "cpu_s": c_all,
                  "estimated_s": t_all, "estimated_cpu_s": c_all}
    else:
        img = pixlab.open_image(out / SLIDE)
        lv = img.levels[level]
        rows = max(1, int(round(height * args.noskip_fraction)))
        y0 = (height - rows) // 2
        band_px = tuple(p * 2 ** level for p in img.pixel_size)
        band = Image(lv[:, y0:y0 + rows], img.channel_names, band_px, [lv[:, y0:y0 + rows]], name="band")
        part = pixlab.predict_file(model, band, out / "prediction_band.ome.tif", output="labels",
                                   background="none", overwrite=True)
        t_band, c_band = time.perf_counter() - t0, time.process_time() - c0
        noskip = {"measured": f"band of {rows} of {height} rows (y {y0}-{y0 + rows}), extrapolated by tile count",
                  "tiles": part["tiles"], "seconds": t_band, "cpu_s": c_band,
                  "estimated_s": t_band / part["tiles"] * grid, "estimated_cpu_s": c_band / part["tiles"] * grid}
    return {"shape": list(skip["shape"]), "level": level, "tiles": grid, "tiles_kept": kept,
            "skip_s": t_skip, "skip_cpu_s": c_skip, "rss_skip_bytes": rss_skip, "noskip": noskip,
            "accuracy": accuracy, "confusion": confusion, "points": args.points, "said": said}


# ------------------------------------------------------------------------------------------------
# Parent: run the phases in child processes, print the table and the goals
# ------------------------------------------------------------------------------------------------
def _child(args) -> None:
    out = Path(args.out)
    import pixlab  # noqa: F401  (imports are not the phase's work; their memory counts in the peak)
    if args.phase in ("train", "predict"):
        import torch  # noqa: F401
        import pixlab.training.trainer  # noqa: F401
        import pixlab.annotation  # noqa: F401
    start_rss = _status_kb("VmRSS") * 1024
    t0, c0 = time.perf_counter(), time.process_time()
    info = globals()[f"phase_{args.phase}"](args, out)
    result = {"phase": args.phase, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
              "peak_rss_bytes": _status_kb("VmHWM") * 1024, "start_rss_bytes": start_rss, **info}
    (out / f"phase_{args.phase}.json").write_text(json.dumps(result, indent=1))


def _run_phase(args, name: str, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--out", str(out), "--side", str(args.nx),
           "--time-limit", str(args.time_limit), "--downsample", str(args.downsample),
           "--points", str(args.points), "--full-noskip-tiles", str(args.full_noskip_tiles),
           "--noskip-fraction", str(args.noskip_fraction)]
    print(f"[{time.strftime('%H:%M:%S')}] phase {name} ...", flush=True)
    subprocess.run(cmd, check=True)
    return json.loads((out / f"phase_{name}.json").read_text())


def _report(args, r: dict) -> list[str]:
    w, a, t, p = r["write"], r["annotate"], r["train"], r["predict"]
    ns = p["noskip"]
    lines = [f"\nwhole slide {args.nx} x {args.ny} RGB, {w['levels']} levels, {w['file_mb']:.0f} MB; background "
             f"{w['fractions'][0] * 100:.1f} %, stroma {w['fractions'][1] * 100:.1f} %, tumour "
             f"{w['fractions'][2] * 100:.1f} %; model at {args.downsample:g}x the level-0 pixel size "
             f"(level {p['level']}, {p['shape'][1]} x {p['shape'][2]} px)"]
    rows = [
        ("write slide (tile by tile)", w, f"{w['file_mb']:.0f} MB"),
        ("annotate: paint + autosave", a, f"{a['strokes']} strokes, {sum(a['px_per_class']) / 1e6:.2f} M px "
                                          f"labelled; autosaved {'yes' if a['autosaved'] else 'NO'} "
                                          f"{a['autosave_after_s']:.1f} s after the last stroke; "
                                          f"{a['labels_file']} {a['labels_bytes'] / MB:.2f} MB"),
        ("train (training_samples -> train)", t, f"{t['architecture']} {t['tile']} px, pseudo-labels "
                                                 f"{'on' if t['pseudo_labels'] else 'off'}, {t['epochs']} epochs "
                                                 f"x {t['patches_per_epoch']} tiles, limit {args.time_limit:g} s"),
        ("predict (skip + no-skip + accuracy)", p, f"{p['tiles_kept']} of {p['tiles']} tiles computed with "
                                                   f"skipping: {p['skip_s']:.1f} s"),
    ]
    width = max(len(x[0]) for x in rows)
    lines.append(f"{'phase'.ljust(width)} | {'wall s':>7} | {'CPU s':>7} | {'peak RSS':>10} | {'start RSS':>10} | notes")
    lines.append("-" * (width + 1) + "|" + "-" * 9 + "|" + "-" * 9 + "|" + "-" * 12 + "|" + "-" * 12 + "|" + "-" * 40)
    for name, ph, note in rows:
        lines.append(f"{name.ljust(width)} | {ph['wall_s']:7.1f} | {ph['cpu_s']:7.1f} | "
                     f"{ph['peak_rss_bytes'] / GB:6.2f} GiB | {ph['start_rss_bytes'] / GB:6.2f} GiB | {note}")
    tile_ratio = p["tiles_kept"] / p["tiles"]
    time_ratio = p["skip_s"] / ns["estimated_s"]
    cpu_ratio = p["skip_cpu_s"] / ns["estimated_cpu_s"]
    tissue = 1 - w["fractions"][0]
    lines += [
        "",
        f"inference with background skipping: {p['skip_s']:.1f} s ({p['skip_cpu_s']:.1f} CPU), "
        f"{p['tiles_kept']}/{p['tiles']} tiles; peak RSS of that call {p['rss_skip_bytes'] / GB:.2f} GiB",
        f"inference without skipping: {ns['estimated_s']:.1f} s ({ns['estimated_cpu_s']:.1f} CPU), "
        f"{ns['measured']}: {ns['tiles']} tiles in {ns['seconds']:.1f} s",
        f"ratios: time with / without {time_ratio:.3f} (CPU {cpu_ratio:.3f}); tiles kept {tile_ratio:.3f}; "
        f"true tissue area {tissue:.3f}; CPU time ratio / tile ratio {cpu_ratio / tile_ratio:.2f} (the goal uses "
        f"CPU time: the wall time of a shared machine follows the other jobs)",
        "accuracy on sampled points of the truth ({} per class): {}".format(
            p["points"], ", ".join(f"{c} {acc * 100:.1f} %" for c, acc in zip(CLASSES, p["accuracy"]))),
        "confusion (rows truth, columns predicted {}): {}".format(CLASSES, p["confusion"]),
    ]
    peak = max(ph["peak_rss_bytes"] for ph in (w, a, t, p))
    goals = [
        ("peak RSS < 2 GiB in every phase", peak < 2 * GB, f"max {peak / GB:.2f} GiB"),
        ("label files < 5 MB", a["labels_bytes"] < 5 * MB, f"{a['labels_bytes'] / MB:.2f} MB"),
        ("inference time proportional to tissue area", 0.7 <= cpu_ratio / tile_ratio <= 1.3
         and tile_ratio <= tissue + 0.15,
         f"CPU time ratio {cpu_ratio:.2f} (wall {time_ratio:.2f}) vs tiles kept {tile_ratio:.2f} "
         f"(tissue {tissue:.2f})"),
        (">= 90 % of the sampled points of each class right", min(p["accuracy"]) >= 0.9,
         f"min {min(p['accuracy']) * 100:.1f} %"),
    ]
    lines.append("")
    for name, ok, value in goals:
        lines.append(f"goal {name}: {'MET' if ok else 'NOT MET'} ({value})")
    if t["warnings"]:
        lines.append("training said: " + " | ".join(t["warnings"]))
    if p["said"]:
        lines.append("predict_file said: " + " | ".join(p["said"]))
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=100_000, help="slide width (height is 0.8 x); default 100,000")
    ap.add_argument("--small", action="store_true", help="a 16,000 px slide and a 30 s training (about two minutes)")
    ap.add_argument("--out", default=None, help="folder for the slide, labels, model and predictions (kept)")
    ap.add_argument("--time-limit", type=float, default=None, help="training seconds (default 60; 15 with --small)")
    ap.add_argument("--downsample", type=int, default=8, help="model pixel size / level-0 pixel size (power of 2)")
    ap.add_argument("--points", type=int, default=2000, help="sampled truth points per class")
    ap.add_argument("--full-noskip-tiles", type=int, default=300,
                    help="predict the whole slide without skipping up to this many tiles, else a band")
    ap.add_argument("--noskip-fraction", type=float, default=0.125, help="rows of the band predicted without skipping")
    ap.add_argument("--phases", default=",".join(PHASES),
                    help="phases to run (comma-separated); the others' results are read from --out")
    ap.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.small and args.side == 100_000:
        args.side = 16_000
    if args.time_limit is None:
        args.time_limit = 30.0 if args.small else 60.0
    args.nx, args.ny = int(args.side), int(args.side * 0.8)
    args.level = int(round(math.log2(args.downsample)))
    if 2 ** args.level != args.downsample:
        ap.error("--downsample must be a power of 2 (a pyramid level of the slide)")
    args.radius = 6.0 * args.downsample  # 6 px at the training resolution
    if args.phase:
        _child(args)
        return
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="pixlab-whole-slide-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        wanted = args.phases.split(",")
        results = {name: _run_phase(args, name, out) if name in wanted
                   else json.loads((out / f"phase_{name}.json").read_text()) for name in PHASES}
        lines = _report(args, results)
        print("\n".join(lines))
        (out / "whole_slide.json").write_text(json.dumps(results, indent=1))
        (out / "whole_slide.txt").write_text("\n".join(lines) + "\n")
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
