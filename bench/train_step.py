"""Training throughput: a full pixlab training step vs the raw model step on the same batch.

"Full" = tile sampling around strokes + normalization + torchvision v2 augmentation (flips, rot90,
channel jitter) in pixlab's background prefetch thread + forward/backward/optimizer step.
"Raw" = forward/backward/optimizer step on one pre-built batch, repeated.
Goal: raw_time / full_time >= 0.9 (data loading hidden behind compute).

    python bench/train_step.py [--arch unet --encoder resnet18 --tile 256 --batch 8 --steps 20]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def setup(arch="unet", encoder="resnet18", tile=256, batch=8, device="cpu", image_size=1024):
    """``(step, make_batch, net)``: pixlab's sampler + augmentation batches and an optimizer step on ``device``.

    ``make_batch(b)`` builds a CPU batch (sampling around strokes, normalisation, augmentation);
    ``step(x, y, p)`` moves it to ``device`` (a no-op when already there, as the training loop does)
    and runs forward/backward/AdamW. Shared with ``bench/gpu_pipeline.py``.
    """
    import torch
    import pixlab
    from pixlab.datasets import strokes_from_mask, synthetic_fluorescence
    from pixlab.nn.networks import build_network
    from pixlab.image.normalize import apply, compute_stats
    from pixlab.training.augmentation import build_augmentation, collate as _collate
    from pixlab.training.losses import sparse_loss
    from pixlab.training.samples import Sample, split_strokes
    from pixlab.training.sampling import TileSampler

    torch.manual_seed(0)
    cfg = pixlab.TrainConfig(architecture=arch, encoder=encoder, tile_size=tile, batch_size=batch,
                             pretrained=False, color_jitter=True, device=str(device), loss="ce_dice")
    img, truth = synthetic_fluorescence(shape=(image_size, image_size), n_channels=2,
                                        n_nuclei=max(20, 200 * image_size**2 // 1024**2), seed=0)
    labels = strokes_from_mask(truth, strokes_per_class=30, seed=0)
    stats = compute_stats(img)
    tr, va, _ = split_strokes([labels], 2, 0.2, 0)
    sample = Sample(img, labels, tr[0], va[0], apply(img.read(), stats))
    sampler = TileSampler([sample], stats, tile, 2, 0.5, 0)
    augment = build_augmentation(cfg)
    net = build_network(arch, encoder, 2, 2).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net.train()

    def step(x, y, p):
        x, y, p = x.to(device), y.to(device), p.to(device)
        opt.zero_grad(set_to_none=True)
        loss = sparse_loss(net(x), y, p, cfg, None)
        loss.backward()
        opt.step()

    def make_batch(b):
        return _collate([sampler.draw() for _ in range(batch)], augment, b)

    return step, make_batch, net


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="unet")
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    warnings.simplefilter("ignore", UserWarning)

    import torch
    from pixlab.training.sampling import Prefetcher as _Prefetcher

    step, make_batch, _net = setup(args.arch, args.encoder, args.tile, args.batch)
    fixed = make_batch(0)
    for _ in range(3):  # warm-up (allocator, oneDNN primitives)
        step(*fixed)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(*fixed)
    raw = (time.perf_counter() - t0) / args.steps

    t0 = time.perf_counter()
    pf = _Prefetcher(make_batch, args.steps)
    for x, y, p in pf:
        step(x, y, p)
    pf.close()
    full = (time.perf_counter() - t0) / args.steps

    t0 = time.perf_counter()
    for b in range(args.steps):
        make_batch(b)
    load = (time.perf_counter() - t0) / args.steps
    print(f"{args.arch}/{args.encoder} tile {args.tile} batch {args.batch}, torch threads {torch.get_num_threads()}")
    print(f"raw step {raw * 1000:.1f} ms, full step {full * 1000:.1f} ms, data loading alone {load * 1000:.1f} ms/batch")
    print(f"throughput ratio raw/full = {raw / full:.3f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
