"""Peak memory of ``predict_file`` on an image far larger than memory should allow.

Makes a 16384x16384x3 uint8 pyramidal tiled TIFF tile by tile (the full image is never in memory),
then, in a fresh subprocess per run, loads torch + pixlab + a small model, records the resident
memory (RSS), runs ``predict_file`` (OME-TIFF of uint8 probabilities + measurements CSV) and reports
the peak RSS above that baseline. A second, 16x smaller image is run the same way: with streaming,
the peak must not grow with the image area (it grows only with its width, by the few rows of tiles
held at a time).

Goal (issue 3): peak RSS < 2 GB above the interpreter with torch loaded. The network is tiny_unet
at the model's training downsample 2 (it reads the file's level 1), so that the run takes minutes on
2 CPU cores; the time is printed too.

    python bench/big_image_memory.py [--size 16384] [--small 4096] [--downsample 2] [--tile 512]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out" / "big_image_memory"


def _tile(y0, x0, tile, scale):
    """Synthetic tissue-like RGB content at full-resolution coordinates (y0, x0) * scale."""
    rng = np.random.default_rng(int(y0 * 7919 + x0 * 104_729 + scale))
    yy, xx = np.mgrid[0:tile, 0:tile].astype(np.float32)
    yy = (yy + y0) * scale
    xx = (xx + x0) * scale
    blobs = np.sin(yy / 91.0) * np.sin(xx / 67.0) + 0.5 * np.sin((yy + xx) / 23.0)
    base = 190 - 60 * np.clip(blobs, 0, None)
    rgb = np.stack([base, base * 0.7 + 30, base * 0.85 + 10], axis=-1) + rng.normal(0, 8, (tile, tile, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def make_pyramidal_tiff(path: Path, size: int, tile: int = 512) -> None:
    """Tiled, zlib-compressed RGB TIFF with 2x reduced levels in SubIFDs, written tile by tile."""
    import tifffile

    levels = [size]
    while levels[-1] > tile:
        levels.append(levels[-1] // 2)

    def tiles(n, scale):
        for y0 in range(0, n, tile):
            for x0 in range(0, n, tile):
                yield _tile(y0, x0, tile, scale)[: n - y0, : n - x0]

    opts = dict(dtype=np.uint8, tile=(tile, tile), photometric="rgb", compression="zlib")
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(tiles(size, 1), shape=(size, size, 3), subifds=len(levels) - 1, **opts)
        for i, n in enumerate(levels[1:], start=1):
            tw.write(tiles(n, 2 ** i), shape=(n, n, 3), subfiletype=1, **opts)


def child(args) -> None:
    """Runs in a fresh interpreter: baseline RSS with torch and the model loaded, then predict_file."""
    import gc
    import resource

    import psutil
    import torch  # noqa: F401  (the baseline includes torch, as the goal says)

    import pixlab
    from pixlab.inference.predict import predict_file

    model = pixlab.load_model(args.model)
    gc.collect()
    baseline = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    res = predict_file(model, args.input, args.output, measurements=True, overwrite=True,
                       backend=args.backend)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    print(json.dumps({"baseline": baseline, "peak": peak, "delta": peak - baseline, "seconds": seconds,
                      "tiles": res["tiles"], "shape": res["shape"], "backend": res["backend"]}))


def run_child(model_dir, src, out, backend) -> dict:
    cmd = [sys.executable, __file__, "--child", "--model", str(model_dir), "--input", str(src),
           "--output", str(out), "--backend", backend]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--small", type=int, default=4096, help="second, smaller image (0: skip)")
    ap.add_argument("--downsample", type=float, default=2.0)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--backend", default="eager")
    ap.add_argument("--keep", action="store_true", help="keep the images in bench/out")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--output", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    import torch

    import pixlab
    from pixlab.labels.masks import default_colours
    from pixlab.model.model import Model
    from pixlab.nn.networks import build_network

    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = pixlab.TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=args.tile, recipe="standard",
                             device="cpu", downsample=args.downsample)
    stats = {"method": "fixed_range", "per_channel": False, "offset": [0.0] * 3, "scale": [255.0] * 3,
             "clip": [0.0, 1.0]}
    model = Model(build_network("tiny_unet", None, 3, 2), ["background", "tissue"], default_colours(2),
                  ["Red", "Green", "Blue"], stats, cfg, metadata={"inference_tile_size": args.tile})
    model_dir = OUT / "model"
    model.save(model_dir, overwrite=True)

    rows = []
    for size in [s for s in (args.size, args.small) if s]:
        src = OUT / f"image_{size}.tif"
        t0 = time.perf_counter()
        if not src.exists():
            make_pyramidal_tiff(src, size)
        made = time.perf_counter() - t0
        out = OUT / f"pred_{size}.ome.tif"
        r = run_child(model_dir, src, out, args.backend)
        r.update(size=size, make_s=made, output_mb=out.stat().st_size / 2**20)
        rows.append(r)
        print(f"{size}x{size}x3 uint8 input (made in {made:.0f} s; {src.stat().st_size / 2**20:.0f} MB on disk), "
              f"tiny_unet at downsample {args.downsample:g} -> prediction {r['shape']}, {r['tiles']} tiles: "
              f"predict_file {r['seconds']:.0f} s; baseline RSS (python + torch + model) "
              f"{r['baseline'] / 2**20:.0f} MB, peak {r['peak'] / 2**20:.0f} MB, "
              f"peak above baseline {r['delta'] / 2**20:.0f} MB (goal < 2048 MB)")
        if not args.keep:
            out.unlink(missing_ok=True)
            Path(str(out).replace(".ome.tif", ".measurements.csv")).unlink(missing_ok=True)
    if len(rows) == 2:
        big, small = rows
        print(f"image area x{(big['size'] / small['size']) ** 2:.0f}: peak above baseline x"
              f"{big['delta'] / max(small['delta'], 1):.2f} (bounded memory: grows with the width only)")
    (OUT / "results.json").write_text(json.dumps(rows, indent=2))
    if not args.keep:
        for size in (args.size, args.small):
            (OUT / f"image_{size}.tif").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
