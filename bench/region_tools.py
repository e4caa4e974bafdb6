"""Region tools: time to rasterise a polygon at full resolution, and what a whole-slide polygon costs.

* rasteriser: a star-shaped polygon with N corners over a square bounding box, filled with
  ``pixlab.annotation.shapes`` (GDAL's scanline fill through rasterio) and with
  ``skimage.draw.polygon`` (point-in-polygon per pixel of the box); both give the pixels whose centre
  is inside, and the table checks they agree (up to pixel centres exactly on an edge). The ratio is
  the reason shapes.py uses rasterio.
* whole slide: the same polygon around most of a 100,000 x 80,000 px image, iterated tile by tile
  (``Shape.tiles``) as the session fills it; peak memory of one tile, never an image-sized array.

    python bench/region_tools.py [--corners 16 256] [--sides 1024 2048]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _star(n: int, side: int, centre=None) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = side / 2 * rng.uniform(0.55, 0.98, n)
    cy, cx = (side / 2, side / 2) if centre is None else centre
    return np.stack([cy + r * np.sin(t), cx + r * np.cos(t)], axis=1)


def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corners", type=int, nargs="+", default=[16, 256])
    ap.add_argument("--sides", type=int, nargs="+", default=[1024, 2048])
    args = ap.parse_args()

    from skimage.draw import polygon as sk_polygon

    from pixlab.annotation import shapes

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cpu cores {os.cpu_count()}, load average {load:.1f}; best of 3\n")
    print(f"{'corners':>7} {'bbox':>11} {'pixels':>11} {'rasterio s':>11} {'skimage s':>10} {'ratio':>6} "
          f"{'differ':>7}")
    for side in args.sides:
        for n in args.corners:
            v = _star(n, side)
            shape = shapes.polygon(v, (side, side))
            mine = shape.mask()
            t_mine = _best(lambda: [m for _, m in shape.tiles()])
            rr, cc = sk_polygon(v[:, 0], v[:, 1], shape=(side, side))
            t_sk = _best(lambda: sk_polygon(v[:, 0], v[:, 1], shape=(side, side)))
            ref = np.zeros((side, side), bool)
            ref[rr, cc] = True
            y0, y1, x0, x1 = shape.region
            full = np.zeros((side, side), bool)
            full[y0:y1, x0:x1] = mine
            differ = int((full != ref).sum())
            print(f"{n:>7} {f'{side}x{side}':>11} {int(full.sum()):>11,} {t_mine:>11.3f} {t_sk:>10.3f} "
                  f"{t_sk / t_mine:>6.1f} {differ:>7}")

    big = (100_000, 80_000)
    v = _star(256, 70_000, centre=(50_000, 40_000))
    shape = shapes.polygon(v, big)
    t0 = time.perf_counter()
    n_tiles = n_px = peak = 0
    for _, m in shape.tiles():
        n_tiles += 1
        n_px += int(m.sum())
        peak = max(peak, m.nbytes)
    dt = time.perf_counter() - t0
    print(f"\nwhole slide {big[0]:,} x {big[1]:,} px, polygon of 256 corners over {shape.area_bbox:,} px of "
          f"bounding box: {n_tiles} tiles, {n_px:,} px inside, {dt:.1f} s, largest tile mask "
          f"{peak / 2**20:.0f} MiB (an image-sized mask would be {big[0] * big[1] / 2**30:.1f} GiB)")


if __name__ == "__main__":
    main()
