"""Is the pipeline around the network the bottleneck on a GPU? predict_file and training vs the raw network.

Issue 15's GPU benchmark, all figures measured in one run (a few minutes on one GPU):

- **Inference**: UNet-resnet34 (``pretrained=False``, built by :func:`pixlab.nn.networks.build_network`),
  512 px tiles, overlap 0.25, on an 8192x8192 uint8 RGB tiled TIFF written tile by tile
  (``bench/pipeline_ceiling.py``'s ``make_tiff``). ``predict_file`` (read, device tiling, blending,
  quantising, pyramid writing) against the **raw forward** throughput: the same engine's
  ``logits`` on as many tiles, same batch size, the batch already normalised on the device. Both in
  megapixels of the image per second, fp32 and AMP (fp16 autocast, CUDA only). Goal: ratio >= 0.8.
- **Training**: ``bench/train_step.py``'s setup on the device: the full step (pixlab's tile sampler,
  normalisation and augmentation in the prefetch thread, the batch copied to the device) against the
  raw optimizer step on one batch already on the device. Goal: raw / full >= 0.9.

    python bench/gpu_pipeline.py [--device cuda] [--small] [--size 8192] [--steps 30]

``--small`` (1024^2 image, 128 px tiles, tiny training) runs on a CPU in about a minute: a smoke run
of the same code, not a measurement of the goals.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benches' helpers

OUT = Path(__file__).resolve().parent / "out" / "gpu_pipeline"


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_model(device, tile: int, overlap: float, amp: bool):
    """A UNet-resnet34 pixlab Model (random weights, 2 classes, RGB 0..255 fixed-range stats)."""
    import pixlab
    from pixlab.labels.masks import default_colours
    from pixlab.model.model import Model
    from pixlab.nn.networks import build_network

    cfg = pixlab.TrainConfig(architecture="unet", encoder="resnet34", pretrained=False, tile_size=tile,
                             tile_overlap=overlap, device=str(device), amp=amp)
    net = build_network("unet", "resnet34", 3, 2)
    stats = {"method": "fixed_range", "per_channel": False, "offset": [0.0] * 3, "scale": [255.0] * 3,
             "clip": [0.0, 1.0]}
    model = Model(net, ["background", "tissue"], default_colours(2), ["Red", "Green", "Blue"], stats, cfg,
                  metadata={"inference_tile_size": tile})
    return model.to(device)


def inference_row(src, size, tile, overlap, device, amp: bool) -> dict:
    """predict_file vs raw forward of the same number of tiles, same batch size, same engine."""
    import torch

    from pixlab.inference.backends import get_backend, inference_batch_size
    from pixlab.inference.predict import predict_file

    model = make_model(device, tile, overlap, amp)
    bs = inference_batch_size(model, tile, 3)
    engine = get_backend(model, "eager")  # what predict_file's backend="eager" runs (AMP per config)
    out = OUT / "pred.ome.tif"
    predict_file(model, src, out, overwrite=True, batch_size=bs)  # warm-up: cuDNN autotuning, allocator
    _sync(device)
    t0 = time.perf_counter()
    res = predict_file(model, src, out, overwrite=True, batch_size=bs)
    _sync(device)
    t_pf = time.perf_counter() - t0
    out.unlink(missing_ok=True)

    n_tiles = int(res["tiles"])
    x = torch.rand((bs, 3, tile, tile), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.inference_mode():
        torch.softmax(engine.logits(x), dim=1)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(-(-n_tiles // bs)):
            torch.softmax(engine.logits(x), dim=1)
        _sync(device)
    t_raw = time.perf_counter() - t0
    mp = size * size / 1e6
    return {"what": f"inference {'AMP fp16' if engine.amp is not None else 'fp32'}", "batch": bs,
            "tiles": n_tiles, "pipeline_s": t_pf, "raw_s": t_raw, "pipeline_mps": mp / t_pf,
            "raw_mps": mp / t_raw, "ratio": t_raw / t_pf, "goal": 0.8}


def training_row(device, tile, batch, steps, image_size, encoder) -> dict:
    """bench/train_step.py's full step (prefetch thread + copy to the device) vs the raw step."""
    from pixlab.training.sampling import Prefetcher
    from train_step import setup

    step, make_batch, _net = setup("unet", encoder, tile, batch, device=device, image_size=image_size)
    fixed = tuple(t.to(device) for t in make_batch(0))
    for _ in range(3):  # warm-up (cuDNN autotuning, allocator)
        step(*fixed)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(*fixed)
    _sync(device)
    raw = (time.perf_counter() - t0) / steps
    t0 = time.perf_counter()
    pf = Prefetcher(make_batch, steps)
    try:
        for x, y, p in pf:
            step(x, y, p)
    finally:
        pf.close()
    _sync(device)
    full = (time.perf_counter() - t0) / steps
    return {"what": f"training unet/{encoder} fp32", "batch": batch, "tiles": steps * batch,
            "pipeline_s": full * steps, "raw_s": raw * steps,
            "pipeline_mps": batch * tile * tile / 1e6 / full, "raw_mps": batch * tile * tile / 1e6 / raw,
            "ratio": raw / full, "goal": 0.9}


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true", help="1024^2 image, 128 px tiles, tiny training (CPU smoke)")
    ap.add_argument("--size", type=int, default=None, help="image side (default 8192, 1024 with --small)")
    ap.add_argument("--steps", type=int, default=None, help="training steps timed (default 30, 3 with --small)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    device = torch.device(args.device)
    size = args.size or (1024 if args.small else 8192)
    tile = 128 if args.small else 512
    overlap = 0.25
    steps = args.steps or (3 if args.small else 30)
    t_batch, t_tile, t_image, t_enc = (2, 64, 256, "resnet18") if args.small else (16, 256, 1024, "resnet34")

    from pipeline_ceiling import make_tiff

    OUT.mkdir(parents=True, exist_ok=True)
    src = OUT / f"image_{size}.tif"
    t0 = time.perf_counter()
    if not src.exists():
        make_tiff(src, size)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__} on {device} ({name}); {src.name} ready in {time.perf_counter() - t0:.1f} s; "
          f"UNet-resnet34, tile {tile}, overlap {overlap}")

    rows = [inference_row(src, size, tile, overlap, device, amp=False)]
    if device.type == "cuda":  # AMP is CUDA-only in pixlab (the engine ignores it on a CPU)
        rows.append(inference_row(src, size, tile, overlap, device, amp=True))
    rows.append(training_row(device, t_tile, t_batch, steps, t_image, t_enc))

    head = f"{'what':<26} {'batch':>5} {'tiles':>6} {'pipeline s':>10} {'raw s':>8} {'pipe MP/s':>9} " \
           f"{'raw MP/s':>9} {'ratio':>6} {'goal':>5}"
    print(head)
    print("-" * len(head))
    for r in rows:
        ok = "ok" if r["ratio"] >= r["goal"] else "MISS"
        print(f"{r['what']:<26} {r['batch']:>5} {r['tiles']:>6} {r['pipeline_s']:>10.2f} {r['raw_s']:>8.2f} "
              f"{r['pipeline_mps']:>9.2f} {r['raw_mps']:>9.2f} {r['ratio']:>6.2f} {'>=' + str(r['goal']):>5} {ok}")
    print("ratio = raw time / pipeline time (inference: predict_file vs forward of the same tiles on the device; "
          "training: raw optimizer step vs full data-pipeline step)")
    if args.small:
        print("--small: a smoke run of the code, not the issue's measurement")


if __name__ == "__main__":
    main()
