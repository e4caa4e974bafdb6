"""CUDA check of weight averaging (EMA) with AMP: train, checkpoint, resume, GPU vs CPU prediction.

    python bench/gpu_ema_check.py
"""
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def main() -> None:
    warnings.simplefilter("ignore", UserWarning)
    import torch
    import pixlab
    from pixlab.datasets import strokes_from_mask, synthetic_fluorescence

    assert torch.cuda.is_available(), "no CUDA device"
    out = Path(tempfile.mkdtemp())
    img, truth = synthetic_fluorescence(shape=(512, 512), n_channels=2, n_nuclei=60, seed=0)
    labels = strokes_from_mask(truth, strokes_per_class=12, seed=0)
    cfg = pixlab.TrainConfig(architecture="unet", encoder="resnet18", pretrained=False, tile_size=128, epochs=4,
                             batch_size=16, patches_per_epoch=128, early_stopping=False, weight_average="ema",
                             ema_decay=0.99, pseudo_labels=True, pseudo_balance=True)
    names = ["background", "nuclei"]
    t0 = time.perf_counter()
    full = pixlab.train([(img, labels)], cfg, class_names=names, progress=False, checkpoint_dir=out / "ck")
    print(f"EMA train on {full.config.device} amp={full.config.amp}: {len(full.history)} epochs in "
          f"{time.perf_counter() - t0:.1f} s; val loss {[round(h['val_loss'], 4) for h in full.history]}")
    pixlab.train([(img, labels)], cfg, class_names=names, progress=False, checkpoint_dir=out / "ck2",
                 callbacks=[lambda ev: not (ev["event"] == "epoch" and ev["epoch"] == 1)])
    resumed = pixlab.train([(img, labels)], cfg, class_names=names, progress=False, resume=out / "ck2")
    print(f"resume: {len(resumed.history)} epochs, stop {resumed.metadata['stop_reason']}")
    p_gpu = pixlab.load_model(out / "ck" / "best").to("cuda").predict(img)
    p_cpu = full.to("cpu").predict(img)
    fg = p_gpu.argmax(0) == 1
    gt = truth == 2
    print(f"predict on GPU: IoU {(fg & gt).sum() / (fg | gt).sum():.3f}; "
          f"GPU vs CPU probabilities: max diff {np.abs(p_gpu - p_cpu).max():.4f}")
    print("EMA_GPU_OK")


if __name__ == "__main__":
    main()
