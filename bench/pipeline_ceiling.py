"""How fast can ``predict_file`` go when the network costs nothing? Its ceiling against the I/O floor.

On an 8192x8192x3 uint8 tiled, zlib-compressed TIFF (made here, tile by tile) the model's network
is replaced by a trivial one, a 1x1 convolution to K classes, so what is timed is the pipeline
around the network: reading and decoding tiles, normalising, softmax, blending, quantising,
building the pyramid, compressing and writing. In the same run the **I/O floor** is measured: tifffile
reads (decodes) every input tile, and writes the same output pyramid (the K-channel uint8 result
predict_file wrote, with its reduced levels, same tile size and compression) from memory, with no
other compute. Both use tifffile's own threads, as predict_file may.

Goal (issue 15): predict_file <= 1.5x the I/O floor on 2 CPU cores. Before this issue's work it was
3.46x (18.8 s against 5.4 s); 4.43x with the device pipeline while the network had every core (its
OpenMP threads spun against the I/O threads); 1.61x with the network's threads measured per image
(pixlab/inference/threads.py; load average 8 on 2 cores); 1.44x with in-place normalisation (one float32
copy per band instead of three). Prints the ratio and the megapixels per
second of both.

    python bench/pipeline_ceiling.py [--size 8192] [--classes 2] [--tile 512] [--overlap 0.25]
                                     [--repeat 1] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out" / "pipeline_ceiling"


def make_tiff(path: Path, size: int, tile: int = 256) -> None:
    """size x size x 3 uint8 tiled zlib TIFF with tissue-like texture, written tile by tile."""
    import tifffile

    def tiles():
        for y0 in range(0, size, tile):
            for x0 in range(0, size, tile):
                rng = np.random.default_rng((y0 // tile) * 100_003 + x0 // tile)
                yy, xx = np.mgrid[y0: y0 + tile, x0: x0 + tile].astype(np.float32)
                base = 170 + 50 * np.sin(yy / 37.0) * np.cos(xx / 53.0)
                rgb = np.stack([base, base * 0.8 + 20 * np.sin(xx / 11.0), base * 0.9], axis=-1)
                rgb += rng.normal(0, 12, rgb.shape).astype(np.float32)
                yield np.clip(rgb, 0, 255).astype(np.uint8)

    tifffile.imwrite(path, tiles(), shape=(size, size, 3), dtype=np.uint8, tile=(tile, tile),
                     photometric="rgb", compression="zlib")


def io_floor(src: Path, result: Path, scratch: Path) -> dict:
    """Seconds to decode every input tile, and to write ``result``'s pyramid again from memory."""
    import tifffile

    try:
        from pixlab.inference.rasters import _reduce_mean, _tiff_compression
    except ImportError:  # before the raster writers had their own module
        from pixlab.inference.outputs import _reduce_mean, _tiff_compression

    t0 = time.perf_counter()
    tifffile.imread(src)  # every tile decoded (tifffile's thread pool)
    read_s = time.perf_counter() - t0

    with tifffile.TiffFile(result) as tif:
        page = tif.series[0]
        levels = [page.levels[0].asarray()]
        tile = tif.pages[0].tilewidth
    while max(levels[-1].shape[1:]) > tile and min(levels[-1].shape[1:]) >= 2:
        a = levels[-1]
        levels.append(_reduce_mean(a[:, : a.shape[1] // 2 * 2, : a.shape[2] // 2 * 2]))
    out = scratch / "floor.ome.tif"
    options = dict(tile=(tile, tile), compression=_tiff_compression("zlib"), photometric="minisblack")
    t0 = time.perf_counter()
    with tifffile.TiffWriter(out, ome=True, bigtiff=True) as tw:
        tw.write(levels[0], subifds=len(levels) - 1, metadata={"axes": "CYX"}, **options)
        for lv in levels[1:]:
            tw.write(lv, subfiletype=1, metadata=None, **options)
    write_s = time.perf_counter() - t0
    out.unlink()
    return {"read_s": read_s, "write_s": write_s, "floor_s": read_s + write_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--repeat", type=int, default=2, help="alternate floor and pipeline N times, keep the fastest (the first call also measures the backends)")
    ap.add_argument("--keep", action="store_true", help="keep the image and output in bench/out")
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    import torch

    import pixlab
    from pixlab.inference.predict import predict_file
    from pixlab.labels.masks import default_colours
    from pixlab.model.model import Model

    OUT.mkdir(parents=True, exist_ok=True)
    src = OUT / f"image_{args.size}.tif"
    t0 = time.perf_counter()
    if not src.exists():
        make_tiff(src, args.size)
    print(f"made {src.name} in {time.perf_counter() - t0:.1f} s ({src.stat().st_size / 2**20:.0f} MB)")

    torch.manual_seed(0)
    k = args.classes
    net = torch.nn.Conv2d(3, k, 1)  # trivial network: the pipeline around it is what is timed
    cfg = pixlab.TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=args.tile,
                             tile_overlap=args.overlap, recipe="standard", device="cpu")
    stats = {"method": "fixed_range", "per_channel": False, "offset": [0.0] * 3, "scale": [255.0] * 3,
             "clip": [0.0, 1.0]}
    names = ["background"] + [f"class {i}" for i in range(2, k + 1)]
    model = Model(net, names, default_colours(k), ["Red", "Green", "Blue"], stats, cfg,
                  metadata={"inference_tile_size": args.tile})
    out = OUT / "pred.ome.tif"
    mp = args.size * args.size / 1e6
    print(f"{args.size}x{args.size}x3 uint8 -> {k} uint8 probability channels, tile {args.tile}, overlap "
          f"{args.overlap}; {torch.get_num_threads()} torch threads, {os.cpu_count()} cores; load average "
          f"{os.getloadavg()[0]:.1f}")

    pf_times, floors = [], []
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        res = predict_file(model, src, out, overwrite=True)
        pf_times.append(time.perf_counter() - t0)
        floors.append(io_floor(src, out, OUT))
    t_pf = min(pf_times)
    floor = min(floors, key=lambda f: f["floor_s"])
    ratio = t_pf / floor["floor_s"]
    print(f"I/O floor: read every input tile {floor['read_s']:.1f} s + write the output pyramid "
          f"{floor['write_s']:.1f} s = {floor['floor_s']:.1f} s ({mp / floor['floor_s']:.1f} MP/s)")
    print(f"predict_file (trivial network, {res['tiles']} tiles, backend {res['backend']}, network on "
          f"{res.get('net_threads')} CPU thread(s) as measured): {t_pf:.1f} s ({mp / t_pf:.1f} MP/s); "
          f"every call: {', '.join(f'{t:.1f} s' for t in pf_times)} (the first also picks the backend)")
    print(f"predict_file / I/O floor = {ratio:.2f}  (goal <= 1.5; 3.46 before issue 15); load average "
          f"{os.getloadavg()[0]:.1f}")
    (OUT / "results.json").write_text(json.dumps(
        {"size": args.size, "classes": k, "predict_file_s": t_pf, **floor, "ratio": ratio,
         "all_predict_file_s": pf_times}, indent=2))
    if not args.keep:
        out.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
