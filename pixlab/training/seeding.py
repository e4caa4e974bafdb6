"""Randomness and CPU threads of a training run, without process-wide side effects.

Training often runs in a background thread (the TrainPanel) beside the kernel's cells, the annotation
autosave and the preview, so it must not reseed torch's global RNG, switch on deterministic
algorithms or change the thread count for everybody:

- Augmentation and tile sampling use their own generators (``torch.Generator``, numpy ``Generator``).
- What only draws from torch's global RNG (weight initialisation in smp/timm constructors, dropout
  and drop-path in efficientnet/segformer encoders) runs inside :func:`seeded`: the global RNG is
  seeded for that block from the run's seed, then restored (``torch.random.fork_rng``), under a lock
  so two training threads do not interleave their blocks. Each optimizer step gets its own seed
  (seed, epoch, batch, rank), so a resumed run draws the same dropout masks without storing RNG state.
- CPU kernels are deterministic for a fixed thread count, so the same seed gives the same weights on a
  CPU without ``torch.use_deterministic_algorithms`` (which would stay switched on for the process).
- :func:`cpu_threads` is the one deliberate process-wide setting: torch's intra-op pools (OpenMP/MKL)
  belong to the process, and the measured recipe (bench/train_step.py: 6x more steps on 2 cores with
  one OpenMP thread fewer than cores) needs it. It is set under a lock by the first running training
  and restored when the last one ends.
"""

from __future__ import annotations

import contextlib
import threading

__all__ = ["seeded", "step_seed", "cpu_threads"]

_RNG_LOCK = threading.RLock()
_THREADS_LOCK = threading.Lock()
_threads = {"holders": 0, "before": None}


def step_seed(seed: int, epoch: int, batch: int, rank: int = 0) -> int:
    """The seed of one optimizer step (a fixed function of the run's seed and the step's position)."""
    return (int(seed) * 1_000_003 + epoch * 10_007 + batch * 101 + rank * 7_919 + 17) % (2 ** 63)


@contextlib.contextmanager
def seeded(seed: int, device: str = "cpu"):
    """torch's global RNG (CPU, and ``device``'s CUDA generator) seeded inside the block, restored after."""
    import torch
    dev = torch.device(device)
    devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with _RNG_LOCK, torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))  # seeds the CUDA generators too; fork_rng restores both
        yield


@contextlib.contextmanager
def cpu_threads(n: int):
    """torch's intra-op thread count at ``n`` while at least one training runs (see module docstring)."""
    import torch
    with _THREADS_LOCK:
        if _threads["holders"] == 0:
            _threads["before"] = torch.get_num_threads()
            torch.set_num_threads(int(n))
        _threads["holders"] += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _threads["holders"] -= 1
            if _threads["holders"] == 0:
                torch.set_num_threads(_threads["before"])
