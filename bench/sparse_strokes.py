"""Sparse-stroke quality: pixlab's CPU recipe vs an ilastik-style random forest, same strokes.

Makes ~12 short strokes per class from a ground-truth mask (three stroke draws), then
  * fits the random forest on scikit-image ``multiscale_basic_features`` (pixlab.training.forest), and
  * trains pixlab with ``TrainConfig(time_limit_s=S)`` (on a CPU this selects the cpu_quick recipe),
and prints the foreground IoU of both against the full ground truth, and their ratio.

Default image: a 512x512 synthetic 2-channel nuclei image with exact ground truth (no data leaves the
repo). ``--image IMG --truth MASK`` runs on your own image (MASK: 0 = background, >0 = foreground).

    python bench/sparse_strokes.py [--seconds 180] [--draws 3] [--set weight_average=none ...]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def iou(pred_fg: np.ndarray, true_fg: np.ndarray) -> float:
    return float((pred_fg & true_fg).sum() / max((pred_fg | true_fg).sum(), 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=180.0, help="training time per stroke draw")
    ap.add_argument("--draws", type=int, default=3, help="number of stroke draws")
    ap.add_argument("--image", help="your own image (else synthetic nuclei)")
    ap.add_argument("--truth", help="ground-truth mask for --image (>0 = foreground)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="set a TrainConfig field (JSON value) to compare variants; the quick recipe only "
                         "changes fields left at their defaults")
    args = ap.parse_args()
    warnings.simplefilter("ignore", UserWarning)

    import torch
    import pixlab
    from pixlab.datasets import strokes_from_mask, synthetic_fluorescence
    from pixlab.training.forest import FeatureClassifier
    from pixlab.image.normalize import apply, compute_stats

    if args.image:
        import imageio.v3 as iio
        img = pixlab.open_image(args.image)
        truth = np.where(np.asarray(iio.imread(args.truth)) > 0, 2, 1).astype(np.uint8)
    else:
        img, truth = synthetic_fluorescence(shape=(512, 512), n_channels=1, n_nuclei=60, seed=42)
    true_fg = truth == 2
    print(f"image {img.shape}, foreground fraction {true_fg.mean():.3f}, torch threads {torch.get_num_threads()}")
    norm = apply(img.read(), compute_stats(img))
    import json
    overrides = {k: json.loads(v) if v[:1] in "0123456789-[{tfn" else v
                 for k, v in (item.split("=", 1) for item in args.set)}
    rows = []
    for draw in range(args.draws):
        labels = strokes_from_mask(truth, strokes_per_class=12, radius=2, length=(10, 20), seed=100 + draw)
        t0 = time.perf_counter()
        rf = FeatureClassifier(seed=draw).fit(norm, labels, n_classes=2)
        rf_iou = iou(rf.predict(norm) == 2, true_fg)
        rf_s = time.perf_counter() - t0
        cfg = pixlab.TrainConfig(time_limit_s=args.seconds, epochs=10_000, seed=draw, **overrides)
        t0 = time.perf_counter()
        model = pixlab.train([(img, labels)], cfg, class_names=["background", "nuclei"], progress=False)
        dl_s = time.perf_counter() - t0
        dl_iou = iou(model.predict_labels(img) == 2, true_fg)
        steps = sum(h["steps"] for h in model.history)
        rows.append((rf_iou, dl_iou))
        print(f"draw {draw}: labelled px {int((labels > 0).sum())}, random forest IoU {rf_iou:.3f} ({rf_s:.1f} s), "
              f"pixlab IoU {dl_iou:.3f} ({dl_s:.0f} s, {steps} steps, recipe {model.config.recipe}, "
              f"best epoch {model.metadata['best_epoch']}/{len(model.history)})")
    rf_m, dl_m = np.mean(rows, axis=0)
    wins = sum(d >= r for r, d in rows)
    print(f"mean foreground IoU: random forest {rf_m:.3f}, pixlab {dl_m:.3f}; ratio pixlab/RF {dl_m / rf_m:.3f}; "
          f"pixlab >= RF on {wins}/{len(rows)} draws")


if __name__ == "__main__":
    main()
