"""RGB pictures of images: brightfield as is, fluorescence as additive false colour, read from the
pyramid level that matches the zoom (a slide is never read at full resolution to be shown small)."""

from __future__ import annotations

import math

import numpy as np

from pixlab.image.colours import _as_image, _channel_index, _level_factor, auto_range, channel_colours

__all__ = ["composite", "thumbnail"]


def _resolve_channels(img, channels) -> list[int]:
    if channels is None:
        return list(range(img.n_channels))
    if isinstance(channels, (str, int, np.integer)):
        channels = [channels]
    idx = [_channel_index(img, c) for c in channels]
    return idx


def _choose_level(img, downsample: float) -> tuple[int, int]:
    """(level, factor): the coarsest pyramid level whose factor does not exceed ``downsample``."""
    best, best_f = 0, 1
    for i in range(1, len(img.levels)):
        f = _level_factor(img, i)
        if best_f < f <= downsample:
            best, best_f = i, f
    return best, best_f


def _check_region(region, shape_yx):
    ny, nx = shape_yx
    if region is None:
        return 0, ny, 0, nx
    try:
        y0, y1, x0, x1 = (int(math.floor(float(v))) for v in region)
    except (TypeError, ValueError):
        raise ValueError(f"region must be (y0, y1, x0, x1), got {region!r}; pass four numbers") from None
    y0, y1, x0, x1 = max(0, y0), min(ny, y1), max(0, x0), min(nx, x1)
    if y1 <= y0 or x1 <= x0:
        raise ValueError(
            f"region {tuple(region)} does not overlap the image of size (Y={ny}, X={nx}); "
            "give (y0, y1, x0, x1) with y0 < y1 and x0 < x1 inside the image"
        )
    return y0, y1, x0, x1


def _composite_region(img, channels=None, ranges=None, colours=None, region=None, downsample=1.0, level=None):
    """Composite plus where it lies: returns (rgb (h, w, 3) uint8, origin (y, x) full-res, factor)."""
    idx = _resolve_channels(img, channels)
    if colours is None:
        defaults = channel_colours(img.n_channels, img.channel_names)
        colours = [defaults[i] for i in idx]
    else:
        from pixlab.labels.masks import parse_colour

        colours = [parse_colour(c) for c in colours]
    if len(colours) != len(idx):
        raise ValueError(f"{len(colours)} colours were given for {len(idx)} channels; give one colour per channel")
    if ranges is not None and len(ranges) != len(idx):
        raise ValueError(f"{len(ranges)} ranges were given for {len(idx)} channels; give one (lo, hi) per channel")
    try:
        downsample = float(downsample)
    except (TypeError, ValueError):
        downsample = float("nan")
    if not downsample >= 1:
        raise ValueError(f"downsample must be a number >= 1, got {downsample!r}; e.g. 1 or 4")
    if level is None:
        level, factor = _choose_level(img, downsample)
    else:
        if not 0 <= int(level) < len(img.levels):
            raise ValueError(f"level={level} does not exist; the image has levels 0..{len(img.levels) - 1}")
        level, factor = int(level), _level_factor(img, int(level))
    stride = max(1, int(downsample // factor))
    y0, y1, x0, x1 = _check_region(region, img.shape[1:])
    ly, lx = img.levels[level].shape[1:]
    lregion = (y0 // factor, min(ly, -(-y1 // factor)), x0 // factor, min(lx, -(-x1 // factor)))
    source = img.select_channels(idx) if img.is_lazy else img  # lazy: read only the chosen channels
    arr = source.read(lregion, level=level)
    if not img.is_lazy:
        arr = arr[idx]
    arr = arr[:, ::stride, ::stride]
    out = np.zeros(arr.shape[1:] + (3,), np.float32)
    for k, c in enumerate(idx):
        lo, hi = ranges[k] if ranges is not None and ranges[k] is not None else (
            (0.0, 255.0) if img.is_rgb else auto_range(img, c))
        lo, hi = float(lo), float(hi)
        if not hi > lo:
            raise ValueError(f"display range ({lo}, {hi}) of channel {img.channel_names[c]!r} needs lo < hi")
        norm = (arr[k].astype(np.float32) - lo) * (1.0 / (hi - lo))
        np.clip(norm, 0, 1, out=norm)
        if img.dtype.kind == "f":
            norm = np.nan_to_num(norm, nan=0.0)
        col = np.asarray(colours[k], np.float32) / 255.0
        out += norm[..., None] * col
    np.clip(out, 0, 1, out=out)
    rgb = np.rint(out * 255).astype(np.uint8)
    return rgb, (lregion[0] * factor, lregion[2] * factor), factor * stride


def composite(image_or_array, channels=None, ranges=None, colours=None, region=None, downsample=1, level=None):
    """Render an image as an RGB picture.

    Parameters
    ----------
    image_or_array : Image or array
        Anything :func:`pixlab.open_image` accepts.
    channels : list of int or str, optional
        Channels to show (default all).
    ranges : list of (lo, hi), optional
        Display range per shown channel (``None`` entries = automatic). Default: ``(0, 255)`` for
        RGB photographs (3-channel uint8), :func:`auto_range` otherwise.
    colours : list of colours, optional
        ``[r, g, b]`` or ``"#rrggbb"`` per shown channel. Default :func:`channel_colours`, so a
        3-channel uint8 RGB photograph comes back unchanged and fluorescence is blue/green/red/...
    region : (y0, y1, x0, x1), optional
        Part of the image, in full-resolution pixels (clipped to the image).
    downsample : float
        Output pixels per full-resolution pixel: the coarsest pyramid level not coarser than this is
        read, then strided by the remaining whole factor.
    level : int, optional
        Read this pyramid level instead of choosing one from ``downsample``.

    Returns
    -------
    numpy.ndarray, shape (h, w, 3)
        uint8. Channels are added (additive false colour) and clipped at white.

    Examples
    --------
    >>> rgb = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    >>> bool((composite(rgb) == rgb).all())
    True
    """
    rgb, _, _ = _composite_region(_as_image(image_or_array), channels, ranges, colours, region, downsample, level)
    return rgb


def thumbnail(image, channel, size: int = 96, range_=None, colour=(255, 255, 255)) -> np.ndarray:
    """Small RGB picture of one channel (for channel lists).

    Parameters
    ----------
    image : Image or array
    channel : int or str
    size : int
        Longest side in pixels (approximately; whole downsample factors are used).
    range_ : (lo, hi), optional
        Display range; default :func:`auto_range`.
    colour : colour
        Colour of the channel (white = grey levels).

    Returns
    -------
    numpy.ndarray, shape (h, w, 3)
        uint8.
    """
    img = _as_image(image)
    c = _channel_index(img, channel)
    factor = max(1, math.ceil(max(img.shape[1:]) / max(1, int(size))))
    return composite(img, [c], [range_], [colour], downsample=factor)
