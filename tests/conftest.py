import os

import numpy as np
import pytest

# Two cores are shared by everything on this machine: keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def tiny_cfg():
    """A TrainConfig that trains in about a second on a CPU."""
    from pixlab import TrainConfig
    return TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=64, epochs=2, batch_size=4,
                       patches_per_epoch=8, recipe="standard", device="cpu", early_stopping=False,
                       loss="ce", scheduler="none")


@pytest.fixture
def fluo_sample():
    """A small synthetic 2-channel fluorescence image with sparse strokes (classes bg, nuclei)."""
    from pixlab.datasets import strokes_from_mask, synthetic_fluorescence
    img, truth = synthetic_fluorescence(shape=(128, 128), n_channels=2, n_nuclei=12, seed=1)
    labels = strokes_from_mask(truth, strokes_per_class=6, radius=2, length=(6, 12), seed=1)
    return img, labels, truth, ["background", "nuclei"]


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread: small networks on a shared 2-core machine run faster and steadier
    (OpenMP barrier contention made each tiny_unet forward 7-25x slower under load)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def offline_weights(tmp_path, monkeypatch):
    """Empty weight caches under tmp_path; any download attempt fails the test."""
    import segmentation_models_pytorch as smp
    import torch

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_download(*args, **kwargs):
        raise AssertionError("pixlab must never download weights")

    monkeypatch.setattr(smp.encoders, "hf_hub_download", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
