"""Tissue mask and resolution matching on a large synthetic slide: time, memory, accuracy.

Writes a 100,000 x 80,000 RGB pyramidal OME-TIFF (SubIFDs, 512 px tiles, ~35 % tissue in five
blobs; the writer is ``bench/synthetic_slide.py``). Level-0 tiles are written pre-encoded (one
background and one tissue tile, reused), so the file costs seconds to make; the small levels are
rendered pixel by pixel, so the mask level has real edges. Then it measures:

- ``open_image``: time (lazy: no pixel read);
- ``tissue_mask`` with the defaults: time, peak traced memory, the level used, and agreement with
  the blobs' true shape at that level; level 0 is replaced by an array that fails when read, so the
  run also proves that level 0 is never touched;
- ``TissueMask.covers`` on every 512 px tile of level 0 (what predict_file asks): time per query and
  the fraction of tiles kept, against the true tissue fraction;
- ``working_image`` for a 0.3 µm/px slide and a 0.5 µm/px model (non-integer factor: lazy bilinear
  resampling) against a plain read of the same area.

Usage: ``python bench/whole_slide_formats.py [--side 100000] [--out bench/out]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared slide writer

import pixlab  # noqa: E402
from pixlab.image.image import Image  # noqa: E402
from pixlab.image.resolution import working_image  # noqa: E402
from pixlab.image.tissue import tissue_mask  # noqa: E402
from synthetic_slide import TILE, Timer, tissue_at, write_slide  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=100_000, help="slide width (height is 0.8 x)")
    ap.add_argument("--out", default=None, help="folder for the slide (default: a temporary one)")
    args = ap.parse_args()
    nx = int(args.side)
    ny = int(nx * 0.8)
    rng = np.random.default_rng(0)
    folder = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="pixlab-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "synthetic_slide.ome.tif"

    rows = []
    with Timer() as t:
        shapes = write_slide(path, ny, nx, rng)
    rows.append(("write slide (pre-encoded level-0 tiles)", str(t),
                 f"{os.path.getsize(path) / 2**20:.1f} MB, levels {len(shapes)}"))

    with Timer() as t:
        img = pixlab.open_image(path)
    rows.append(("open_image", str(t),
                 f"{img.shape}, {len(img.levels)} levels, {img.pixel_size} µm"))

    def boom(block):
        raise RuntimeError("level 0 was read")

    guarded = Image(img.data.map_blocks(boom, dtype=img.dtype), img.channel_names, img.pixel_size,
                    [img.data.map_blocks(boom, dtype=img.dtype)] + img.levels[1:], name=img.name)
    with Timer() as cold:
        tissue_mask(guarded, dilate_px=0)  # the first call also imports scikit-image and scipy
    rows.append(("tissue_mask, first call (imports skimage)", str(cold), ""))
    tracemalloc.start()
    with Timer() as dt:
        tm = tissue_mask(guarded, dilate_px=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    my, mx = tm.mask.shape
    truth = tissue_at((np.arange(my)[:, None] + 0.5) / my, (np.arange(mx)[None, :] + 0.5) / mx)
    agree = (tm.mask == truth).mean()
    rows.append(("tissue_mask (defaults, dilate 0)", str(dt),
                 f"mask {my}x{mx} (downsample {tm.downsample:.0f}), peak {peak / 2**20:.0f} MB traced, "
                 f"{agree * 100:.2f} % pixels agree with the truth, level 0 never read"))
    tm_default = tissue_mask(guarded)
    t = time.perf_counter()  # per-query cost: wall time of many tiny calls
    boxes = [(y, min(ny, y + TILE), x, min(nx, x + TILE)) for y in range(0, ny, TILE) for x in range(0, nx, TILE)]
    kept = sum(tm_default.covers(*b) for b in boxes)
    dq = time.perf_counter() - t
    true_fraction = truth.mean()
    rows.append(("covers() on every 512 px tile (dilate 64)", f"{dq / len(boxes) * 1e6:.1f} µs/tile",
                 f"{kept}/{len(boxes)} tiles kept ({kept / len(boxes) * 100:.1f} %), true tissue "
                 f"{true_fraction * 100:.1f} %, inference work x{len(boxes) / max(kept, 1):.2f} less"))

    # Resolution matching: a 0.3 µm/px slide, a model at 0.5 µm/px.
    region = 4096
    # (on level 2, 1.2 µm/px, to keep the run short: the same code runs on level 0 for a 0.3 -> 0.5 model)
    small = Image(img.levels[2], img.channel_names, (1.2, 1.2), img.levels[2:], name="level2")
    with Timer() as t_raw:
        raw = small.read((0, region, 0, region))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        work, factor = working_image(small, pixel_size=(2.0, 2.0))
    with Timer() as t_res:
        out = work.read((0, int(region / factor), 0, int(region / factor)))
    rows.append((f"read {region}^2 px as is", str(t_raw), f"{raw.nbytes / 2**20:.0f} MB"))
    rows.append(("same area resampled 1.2 -> 2.0 µm/px", str(t_res),
                 f"{out.shape[1]}x{out.shape[2]} px, CPU ratio {t_res.cpu / max(t_raw.cpu, 1e-9):.2f} of the "
                 f"plain read; said: "
                 f"{str(caught[0].message)[:60] if caught else '-'}..."))

    width = max(len(r[0]) for r in rows)
    print(f"\nsynthetic slide {nx} x {ny} RGB, {path}")
    print(f"{'step'.ljust(width)} | {'time':>24} | result")
    print("-" * (width + 1) + "|" + "-" * 26 + "|" + "-" * 40)
    for name, value, note in rows:
        print(f"{name.ljust(width)} | {value:>24} | {note}")
    if not args.out:
        os.remove(path)


if __name__ == "__main__":
    main()
