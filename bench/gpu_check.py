"""CUDA smoke check and timings: training with AMP, prediction, predict_file on a GPU.

Run on a machine with a CUDA GPU:  python bench/gpu_check.py [--out DIR]
Prints what ran, timings, and the largest probability difference between GPU (AMP) and CPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore", UserWarning)
    import torch
    import pixlab
    from pixlab.datasets import strokes_from_mask, synthetic_fluorescence

    assert torch.cuda.is_available(), "no CUDA device"
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    out = Path(args.out or tempfile.mkdtemp())
    img, truth = synthetic_fluorescence(shape=(1024, 1024), n_channels=2, n_nuclei=150, seed=0)
    labels = strokes_from_mask(truth, strokes_per_class=30, seed=0)
    cfg = pixlab.TrainConfig(architecture="unet", encoder="resnet34", pretrained=False, tile_size=256, epochs=6,
                             batch_size=16, patches_per_epoch=256, early_stopping=False)
    t0 = time.perf_counter()
    model = pixlab.train([(img, labels)], cfg, class_names=["background", "nuclei"], progress=False,
                         checkpoint_dir=out / "ck")
    dt = time.perf_counter() - t0
    h = model.history
    print(f"train on {model.config.device} (amp={model.config.amp}): {len(h)} epochs, {sum(x['steps'] for x in h)} steps "
          f"in {dt:.1f} s; val mIoU {[round(x['val_miou'], 3) for x in h]}")
    assert all(np.isfinite(x["train_loss"]) for x in h)
    model.to("cuda")
    t0 = time.perf_counter()
    p_gpu = model.predict(img)
    torch.cuda.synchronize()
    t_gpu = time.perf_counter() - t0
    fg, gt = p_gpu.argmax(0) == 1, truth == 2
    print(f"predict 1024^2 on GPU: {t_gpu:.2f} s, fg IoU {(fg & gt).sum() / (fg | gt).sum():.3f}")
    model.to("cpu")
    t0 = time.perf_counter()
    p_cpu = model.predict(img)
    print(f"predict on CPU: {time.perf_counter() - t0:.2f} s; max |p_gpu - p_cpu| = {np.abs(p_gpu - p_cpu).max():.4f}")
    model.save(out / "model")
    m2 = pixlab.load_model(out / "model", device="cuda")
    np.testing.assert_allclose(m2.predict(img), p_gpu, atol=1e-3)
    print("save/load on GPU: predictions equal within 1e-3")
    try:
        from pixlab.image.io import write_ome_tiff
        big = np.tile(np.asarray(img.read()), (1, 4, 4))
        write_ome_tiff(out / "big.ome.tif", big, channel_names=img.channel_names)
        t0 = time.perf_counter()
        pixlab.predict_file(m2, out / "big.ome.tif", out / "big_pred.ome.tif")
        print(f"predict_file 4096^2 on GPU: {time.perf_counter() - t0:.2f} s")
    except Exception as e:  # report, keep the rest of the check
        print(f"predict_file on GPU failed: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
