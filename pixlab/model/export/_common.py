"""What every export format needs from a model: the traced network, sizes, pixel size, a test tile.

Kept apart from the writers so that the bioimage.io package, the QuPath folder and the plain
TorchScript/ONNX files describe a model with the same rules (one copy of each rule).
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np

__all__ = ["ExportError", "torch_network", "size_divisor", "receptive_radius", "halo_px",
           "pixel_size_um", "training_pixel_size", "test_crop", "reference_logits", "log_choice"]

log = logging.getLogger("pixlab.export")


class ExportError(ValueError):
    """A model cannot be written in the requested format; the message names a format that works."""


def log_choice(message: str) -> None:
    """Print and log an automatic choice (TEAM rule: every automatic choice is printed/logged)."""
    log.info(message)
    print(f"pixlab export: {message}")


def torch_network(model, fmt: str):
    """``model.network`` in eval mode on the CPU, or an :class:`ExportError` if it is not PyTorch.

    Imported ONNX models (:class:`pixlab.model.onnx_import.OnnxModel`) run in ONNX Runtime: there is
    no PyTorch graph to trace, but their ONNX file exports as it is.
    """
    import copy

    import torch

    net = model.network
    if type(net).__name__ == "OnnxNetwork" or not isinstance(net, torch.nn.Module) or not any(
            True for _ in net.parameters()):
        raise ExportError(
            f"this model's network ({type(net).__name__}) is not a PyTorch network that can be traced, "
            f"so it cannot be exported as {fmt}; export it with --format onnx (format='onnx'), or as "
            "a QuPath folder (--format qupath-dl) or bioimage.io package with ONNX weights only "
            "(weights=['onnx'])")
    net = copy.deepcopy(net).cpu().eval()
    return net


def size_divisor(model) -> int:
    """Input height/width must be a multiple of this (the network's total downsampling)."""
    info = getattr(model.network, "pixlab_info", None) or {}
    arch = info.get("architecture") or getattr(model.config, "architecture", "")
    if arch == "tiny_unet" or type(model.network).__name__ == "TinyUNet":
        return 4  # two 2x poolings
    encoder = getattr(model.network, "encoder", None)
    stride = getattr(encoder, "output_stride", None)
    return int(stride) if isinstance(stride, int) and stride > 0 else 32


def receptive_radius(network, in_channels: int, size: int = 128) -> int:
    """Receptive-field radius in pixels, measured: the input pixels whose gradient reaches the centre
    output pixel. At most ``size // 2`` (a larger field is reported as that bound)."""
    import torch

    x = torch.randn(1, in_channels, size, size, generator=torch.Generator().manual_seed(0),
                    requires_grad=True)
    c = size // 2
    with torch.enable_grad():
        out = network(x)
        (grad,) = torch.autograd.grad(out[0, :, c, c].sum(), x)
    hit = np.argwhere(grad.abs().sum(dim=(0, 1)).numpy() > 0)
    if hit.size == 0:
        return 0
    return int(max(c - hit[:, 0].min(), hit[:, 0].max() - c, c - hit[:, 1].min(), hit[:, 1].max() - c))


def halo_px(model, network=None) -> int:
    """Output pixels to discard on each side of a tile: half the tile overlap pixlab blends away,
    and no more than the network's receptive-field radius (a small network needs less)."""
    tile = int(model.inference_tile_size)
    overlap = float(model.config.tile_overlap)
    halo = int(round(tile * overlap)) // 2
    if network is not None:
        div = size_divisor(model)
        probe = max(div * 4, min(256, tile) // div * div)
        radius = receptive_radius(network, model.in_channels, probe)
        if radius < probe // 2:  # measured, not clipped by the probe size
            halo = min(halo, radius)
    return max(1, int(halo))


def pixel_size_um(model):
    """(y, x) µm per full-resolution pixel of the training images, or None.

    Read from ``model.metadata["pixel_size_um"]`` (one number, a (y, x) pair, or one pair per
    training image: their mean is used and a spread above 5% is warned about).
    """
    value = model.metadata.get("pixel_size_um")
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.array([arr, arr])
    elif arr.ndim == 2:
        if arr.size == 0:
            return None
        spread = arr.max(axis=0) / arr.min(axis=0)
        if (spread > 1.05).any():
            warnings.warn(f"training images have different pixel sizes {arr.tolist()}; exporting their mean",
                          stacklevel=3)
        arr = arr.mean(axis=0)
    if arr.shape != (2,) or not np.isfinite(arr).all() or (arr <= 0).any():
        return None
    return float(arr[0]), float(arr[1])


def training_pixel_size(model):
    """(y, x) µm per pixel of what the network sees: the training pixel size times the downsample."""
    ps = pixel_size_um(model)
    if ps is None:
        return None
    ds = float(model.config.downsample)
    return ps[0] * ds, ps[1] * ds


def valid_size(size: int, minimum: int, step: int) -> int:
    """The largest ``minimum + n * step`` that is <= size (at least ``minimum``)."""
    return minimum + max(0, (int(size) - minimum) // step) * step


def test_crop(model, sample, size: int, minimum: int, step: int, seed: int = 0) -> np.ndarray:
    """A (C, s, s) float32 crop of ``sample`` at the network's resolution, with s a valid input size.

    ``sample`` is an image the model applies to (ideally a training image); without one a seeded
    random image within the training intensity range is made, and that choice is printed.
    """
    from pixlab.image.io import open_image
    from pixlab.inference.prepare import match_channels

    s = valid_size(size, minimum, step)
    if sample is None:
        stats = model.norm_stats
        rng = np.random.default_rng(seed)
        lo = np.asarray(stats["offset"], np.float64)[:, None, None]
        width = np.asarray(stats["scale"], np.float64)[:, None, None]
        if stats.get("clip") is None:  # z-score: offset = mean, scale = std
            data = lo + width * rng.standard_normal((model.in_channels, s, s))
        else:
            data = lo + width * rng.random((model.in_channels, s, s))
        log_choice(f"no sample image given: test tensors are a seeded random {s}x{s} image within "
                   "the training intensity range (pass sample=IMAGE / --sample IMAGE for a real one)")
        return data.astype(np.float32)
    img = match_channels(model, open_image(sample))
    ds = float(model.config.downsample)
    if ds > 1:
        img = img.downsampled(ds)
    _, h, w = img.shape
    if min(h, w) < minimum:
        raise ExportError(f"the sample image is {h}x{w} px at the model's resolution, smaller than the "
                          f"smallest input the exported model accepts ({minimum} px); pass a larger sample")
    s = valid_size(min(s, h, w), minimum, step)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return np.ascontiguousarray(img.read((y0, y0 + s, x0, x0 + s)), dtype=np.float32)


def normalise_for(model, raw: np.ndarray) -> np.ndarray:
    """``raw`` (C, H, W) normalised the way pixlab normalises it for this model."""
    from pixlab.image.normalize import apply, compute_stats

    stats = model.norm_stats
    if not model.config.use_training_stats and stats["method"] != "fixed_range":
        stats = compute_stats(raw, method=stats["method"], per_channel=stats["per_channel"],
                              fixed_range=model.config.fixed_range)
    return apply(raw, stats)


def reference_logits(network, tile: np.ndarray) -> np.ndarray:
    """Logits (1, K, H, W) of the eager network for one normalised (C, H, W) tile."""
    import torch

    with torch.inference_mode():
        return network(torch.from_numpy(np.ascontiguousarray(tile[None], np.float32))).numpy()


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    import torch

    return torch.softmax(torch.from_numpy(logits), dim=axis).numpy()


def ceil_to(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)
