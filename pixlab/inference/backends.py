"""Inference backends: which implementation of the network runs the tiles, and how many per batch."""

from __future__ import annotations

import weakref

import numpy as np

__all__ = ["BACKENDS", "AUTO_TOLERANCE", "get_backend", "cuda_batch_size"]

#: Inference backends: eager PyTorch, ONNX Runtime, or the fastest of the two that agrees with eager.
BACKENDS = ("eager", "onnxruntime", "auto")

# "auto" accepts ONNX Runtime only if no probability differs from eager PyTorch by more than this
# (float32 kernels differ in summation order by ~1e-5; labels then differ only at exact ties).
AUTO_TOLERANCE = 1e-3


def cuda_batch_size(model, tile: int, n_channels: int, max_batch: int = 64, fraction: float = 0.5) -> int:
    """Tiles per batch that fit in the GPU's free memory.

    One tile is run first to measure the peak memory a tile needs (with the model's AMP setting);
    the batch then uses at most ``fraction`` of the memory that was free.

    Parameters
    ----------
    model : pixlab.Model
        On a CUDA device.
    tile : int
    n_channels : int
    max_batch : int
    fraction : float

    Returns
    -------
    int
        Between 1 and ``max_batch``.
    """
    import torch

    device = model.device
    if device.type != "cuda":
        raise ValueError(f"cuda_batch_size needs a model on a CUDA device, got {device}; use model.to('cuda')")
    torch.cuda.synchronize(device)
    free, _total = torch.cuda.mem_get_info(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    model.infer_batch(np.zeros((1, n_channels, tile, tile), np.float32))
    per_tile = max(torch.cuda.max_memory_allocated(device) - base, 1)
    return int(max(1, min(max_batch, (free * fraction) // per_tile)))


class _EagerBackend:
    name = "eager"

    def __init__(self, model):
        self.infer_batch = model.infer_batch


_AUTO_CHOICE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def get_backend(model, backend: str = "eager", sample: np.ndarray | None = None):
    """An object with ``name`` and ``infer_batch(batch) -> probabilities`` for ``model``.

    Parameters
    ----------
    model : pixlab.Model
    backend : {"eager", "onnxruntime", "auto"}
        ``"auto"``: on a GPU, eager PyTorch (with AMP); on a CPU, ONNX Runtime when it is installed,
        faster on ``sample`` and agrees with eager PyTorch within 1e-3 on every probability, else
        eager. The choice is made once per model object.
    sample : ndarray (B, C, H, W), optional
        Normalised tiles used by ``"auto"`` to compare the backends (without it "auto" is eager).

    Returns
    -------
    object
        ``.name`` (``"eager"`` or ``"onnxruntime"``) and ``.infer_batch``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "eager":
        return _EagerBackend(model)
    if backend == "onnxruntime":
        return model.backend("onnxruntime")
    if model.device.type != "cpu" or sample is None:
        return _EagerBackend(model)
    if model in _AUTO_CHOICE:
        return _EagerBackend(model) if _AUTO_CHOICE[model] == "eager" else model.backend("onnxruntime")
    try:
        onnx_backend = model.backend("onnxruntime")
    except Exception as e:  # not installed, or a network the exporter cannot handle: eager still works
        import warnings
        warnings.warn(f"backend 'auto' uses eager PyTorch: ONNX Runtime is not usable for this model ({e})")
        _AUTO_CHOICE[model] = "eager"
        return _EagerBackend(model)
    from pixlab.model.onnx import compare_backends

    eager, ort = compare_backends(model, sample, {"eager": model, "onnxruntime": onnx_backend})
    use_ort = ort["max_prob_diff"] <= AUTO_TOLERANCE and ort["seconds"] < eager["seconds"]
    _AUTO_CHOICE[model] = "onnxruntime" if use_ort else "eager"
    return onnx_backend if use_ort else _EagerBackend(model)
