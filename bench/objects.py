"""Objects of a streamed prediction: what tracing costs, in time and memory, band by band vs at once.

A 4096 x 4096 label map of blobs (smoothed noise thresholded into two object classes, tens of
thousands of objects, many crossing band borders) is traced by
:class:`pixlab.inference.objects.ObjectTracer` in one band (the in-memory answer) and in bands of
256 and 64 rows (what ``predict_file`` does). The table gives the time and peak traced memory of
each, their ratio to the single band, and checks that every banding finds the same objects (count
and total area). Memory of a single band includes the full-size component map; bands keep only
the objects open at the current border.

    python bench/objects.py [--side 4096] [--bands 256 64]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np


def label_map(side: int, seed: int = 0) -> np.ndarray:
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    noise = ndi.gaussian_filter(rng.standard_normal((side, side)).astype(np.float32), 4)
    lab = np.where(noise > 0.04, 2, 1).astype(np.uint8)
    lab[noise < -0.06] = 3
    return lab


def trace(lab, band: int, image=None):
    from pixlab.inference.objects import ObjectTracer

    found = {"n": 0, "area": 0.0}

    def keep(batch):
        found["n"] += len(batch)
        found["area"] += sum(o["measurements"]["area_px"] for o in batch)

    tracer = ObjectTracer(["bg", "a", "b"], lab.shape[1], channel_names=["c0", "c1"] if image is not None else (),
                          on_objects=keep)
    confidence = np.full((band, lab.shape[1]), 0.9, np.float32)
    tracemalloc.start()
    t = time.perf_counter()
    for y in range(0, lab.shape[0], band):
        rows = lab[y: y + band]
        tracer.add(rows, image=None if image is None else image[:, y: y + band],
                   confidence=confidence[: rows.shape[0]])
    tracer.finish()
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak, found, tracer.merged


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=4096)
    ap.add_argument("--bands", type=int, nargs="+", default=[256, 64])
    args = ap.parse_args()
    lab = label_map(args.side)
    t0, m0, ref, _ = trace(lab, args.side)
    print(f"{args.side} x {args.side} label map: {ref['n']} objects")
    print(f"{'band rows':>10} {'seconds':>8} {'x one band':>10} {'peak MB':>8} {'x one band':>10} {'merged':>7} same")
    print(f"{args.side:>10} {t0:8.2f} {1.0:10.2f} {m0 / 1e6:8.0f} {1.0:10.2f} {0:>7} -")
    for band in args.bands:
        t, m, found, merged = trace(lab, band)
        same = found["n"] == ref["n"] and abs(found["area"] - ref["area"]) < 1e-6 * ref["area"]
        print(f"{band:>10} {t:8.2f} {t / t0:10.2f} {m / 1e6:8.0f} {m / m0:10.2f} {merged:>7} {same}")
    # Mean intensity per channel: the image band is read and summed per object.
    image = np.random.default_rng(1).integers(0, 4000, (2, args.side, args.side), dtype=np.uint16)
    t, _, _, _ = trace(lab, args.bands[0], image)
    base, _, _, _ = trace(lab, args.bands[0])
    print(f"intensities of 2 channels: x{t / base:.2f} the time of band {args.bands[0]} without them")


if __name__ == "__main__":
    main()
