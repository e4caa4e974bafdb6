"""The network's CPU threads in predict_file are measured on the image, not assumed (issue #15)."""
import time

import numpy as np
import pytest
import torch

import pixlab
from pixlab.image.io import write_ome_tiff
from pixlab.inference import threads as threads_mod
from pixlab.inference.predict import predict_file
from pixlab.inference.threads import ThreadTrial
from pixlab.labels.masks import default_colours
from pixlab.model.model import Model


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _run(trial, cost, n_batches, clock):
    """Feed ``n_batches`` through ``trial``; ``cost(threads)`` = seconds one batch takes."""
    used = []
    for b in range(n_batches):
        k = trial.threads(b)
        used.append(k)
        clock.t += cost(k)
        trial.done(b)
    return used


@pytest.mark.parametrize("fast_with", [1, 4])
def test_the_trial_keeps_the_faster_thread_count(monkeypatch, fast_with):
    clock = FakeClock()
    monkeypatch.setattr(threads_mod.time, "perf_counter", clock)
    trial = ThreadTrial(4, n_batches=40, window=3)
    used = _run(trial, lambda k: 0.01 if k == fast_with else 0.05, 40, clock)
    assert trial.chosen == fast_with
    assert used[-10:] == [fast_with] * 10
    assert set(trial.measured) == {1, 4}


def test_a_slow_many_thread_window_is_cut_short(monkeypatch):
    # 30x slower per batch with every thread (OpenMP threads spinning against the I/O threads):
    # the trial stops after the first such batch instead of paying for a whole window.
    clock = FakeClock()
    monkeypatch.setattr(threads_mod.time, "perf_counter", clock)
    trial = ThreadTrial(2, n_batches=60, window=5)
    used = _run(trial, lambda k: 0.3 if k == 2 else 0.01, 60, clock)
    assert used.count(2) == 1 and trial.chosen == 1


def test_no_trial_on_a_short_run_or_with_one_thread():
    assert ThreadTrial(2, n_batches=10, window=3).chosen == 2
    assert ThreadTrial(1, n_batches=100, window=3).chosen == 1


class ThreadSensitive(torch.nn.Module):
    """A 1x1 convolution whose forward pass costs more with ``slow_with`` threads (a stand-in for
    OpenMP contention, or for a network that needs every core)."""

    def __init__(self, slow_with_many: bool):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(2, 2, 1)
        self.slow_with_many = slow_with_many
        self.seen = []

    def forward(self, x):
        n = torch.get_num_threads()  # the compute thread's own setting for this batch
        self.seen.append(n)
        time.sleep(0.02 if (n > 1) == self.slow_with_many else 0.001)
        return self.conv(x)


@pytest.fixture
def two_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("slow_with_many", [True, False])
def test_predict_file_runs_the_network_with_the_measured_thread_count(tmp_path, two_torch_threads,
                                                                      slow_with_many):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 4000, (2, 480, 480), dtype=np.uint16)
    src = tmp_path / "in.ome.tif"
    write_ome_tiff(src, img, channel_names=["DAPI", "Membrane"])
    net = ThreadSensitive(slow_with_many)
    cfg = pixlab.TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=64, recipe="standard",
                             device="cpu")
    stats = {"method": "min_max", "per_channel": True, "offset": [0.0, 0.0], "scale": [4000.0, 4000.0],
             "clip": None}
    model = Model(net, ["background", "nuclei"], default_colours(2), ["DAPI", "Membrane"], stats, cfg)
    res = predict_file(model, src, tmp_path / "out.ome.tif", backend="eager", batch_size=4, overlap=0.25,
                       progress=False)
    expected = 1 if slow_with_many else 2
    assert res["net_threads"] == expected
    assert net.seen[-5:] == [expected] * 5  # the rest of the image ran with the choice
    assert torch.get_num_threads() == 2  # the caller's setting is untouched
