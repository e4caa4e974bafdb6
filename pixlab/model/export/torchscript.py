"""TorchScript export: the network as a traced graph that runs without pixlab (C++ libtorch, Java
DJL, deepImageJ, ``torch.jit.load``).

The graph is ``model.network``: normalised ``(B, C, H, W)`` float32 tiles in, ``(B, K, H, W)``
logits out (apply the softmax yourself, as pixlab does). It is traced at one tile size and then
checked at a second one, so a network whose Python code bakes a size into the trace is refused
instead of silently giving wrong answers at other sizes.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np

from pixlab._atomic import atomic_write
from pixlab.model.export._common import ExportError, size_divisor, torch_network

__all__ = ["trace", "torchscript_bytes", "export_torchscript", "TOLERANCE"]

#: The traced graph must give the eager network's logits within this (float32 summation order).
TOLERANCE = 1e-4


def trace(model, tile: int | None = None):
    """Trace ``model.network`` to a ``torch.jit.ScriptModule`` and check it at a second tile size.

    Parameters
    ----------
    model : pixlab.Model
    tile : int, optional
        Example tile size for tracing (default: 2 x the network's size divisor, at least 64).

    Returns
    -------
    torch.jit.ScriptModule

    Raises
    ------
    ExportError
        The network cannot be traced, or the trace does not reproduce the network at another size;
        the message names the format that works (ONNX).
    """
    import torch

    net = torch_network(model, "TorchScript")
    div = size_divisor(model)
    tile = int(tile or max(64, 2 * div))
    example = torch.zeros(1, model.in_channels, tile, tile)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # TracerWarnings about Python control flow on shapes are checked below by running the
            # trace at another size, which is the test that matters.
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(net, example, check_trace=False)
    except Exception as e:  # torch raises many types (RuntimeError, TypeError, jit errors)
        raise ExportError(
            f"the {type(net).__name__} network cannot be traced to TorchScript "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); export it with "
            "--format onnx (format='onnx') instead") from None
    # Different size and batch than the example: catches shapes baked into the trace.
    check = torch.randn(2, model.in_channels, tile + 2 * div, tile + div,
                        generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = net(check)
        try:
            got = traced(check)
        except Exception as e:
            raise ExportError(
                f"the TorchScript trace of the {type(net).__name__} network fails on another tile "
                f"size ({type(e).__name__}); export it with --format onnx (format='onnx') instead") from None
    diff = float((got - expected).abs().max()) if got.shape == expected.shape else float("inf")
    if not diff <= TOLERANCE * max(1.0, float(expected.abs().max())):
        raise ExportError(
            f"the TorchScript trace of the {type(net).__name__} network differs from the network at "
            f"another tile size (max difference {diff:.3g}); its Python code depends on the input size. "
            "Export it with --format onnx (format='onnx') instead")
    return traced


def torchscript_bytes(model, tile: int | None = None) -> bytes:
    """The traced network (see :func:`trace`) serialised as a TorchScript archive."""
    import torch

    traced = trace(model, tile)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # torch 2.9+ marks TorchScript deprecated in favour of torch.export, but TorchScript files are
        # what libtorch, DJL/deepImageJ and bioimage.io consumers load today.
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(traced, buffer)
    return buffer.getvalue()


def export_torchscript(model, path, tile: int | None = None) -> str:
    """Write ``model.network`` as a TorchScript file (atomically).

    Parameters
    ----------
    model : pixlab.Model
    path : str or PathLike
        Output ``.pt`` / ``.torchscript`` file.
    tile : int, optional
        Example tile size for tracing; the graph accepts any batch and any height/width that are
        multiples of the network's divisor.

    Returns
    -------
    str
        ``path``.

    Examples
    --------
    >>> import torch
    >>> export_torchscript(model, "model.pt")                       # doctest: +SKIP
    >>> logits = torch.jit.load("model.pt")(torch.zeros(1, 2, 64, 64))  # doctest: +SKIP
    """
    data = torchscript_bytes(model, tile)
    with atomic_write(path) as f:
        f.write(data)
    return os.fspath(path)


def max_difference(a, b) -> float:
    """Largest absolute difference between two arrays."""
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
