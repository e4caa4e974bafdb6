"""Display colours and ranges: a colour per channel, and a display range per channel from percentiles.

Core module (no Jupyter imports), used by :mod:`pixlab.image.composite` and the widgets.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np

__all__ = ["CHANNEL_COLOURS", "channel_colours", "auto_range"]

#: Fluorescence display colours in the order microscopists expect: blue for the nuclear stain (DAPI,
#: usually the first channel), then green, red, magenta, cyan, yellow. :func:`channel_colours` extends it.
CHANNEL_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 255),  # blue
    (0, 255, 0),  # green
    (255, 0, 0),  # red
    (255, 0, 255),  # magenta
    (0, 255, 255),  # cyan
    (255, 255, 0),  # yellow
)

_NUCLEAR_NAMES = ("dapi", "hoechst", "dna", "nuclear", "nuclei", "draq5")
_NAMED = {"red": (255, 0, 0), "r": (255, 0, 0), "green": (0, 255, 0), "g": (0, 255, 0),
          "blue": (0, 0, 255), "b": (0, 0, 255)}

# auto_range reads about this many pixels per channel: enough for stable percentiles, cheap on a slide.
_RANGE_SAMPLES = 1_000_000


# --------------------------------------------------------------------------------------------------
# Colours and ranges
# --------------------------------------------------------------------------------------------------


def _extra_colour(i: int) -> list[int]:
    """Colour number ``i`` (>= 6): fully saturated hues spaced by the golden angle, bright for additive mixing."""
    hue = (0.1 + i * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85 if i % 2 else 1.0, 1.0)
    return [round(r * 255), round(g * 255), round(b * 255)]


def channel_colours(n: int, names=None) -> list[list[int]]:
    """Default display colour of each channel.

    Parameters
    ----------
    n : int
        Number of channels.
    names : list of str, optional
        Channel names. A channel named Red/Green/Blue gets that colour (RGB photographs); a nuclear
        stain (DAPI, Hoechst, ...) gets blue. Without names the first channel is taken as the nuclear one.

    Returns
    -------
    list of [r, g, b]
        One colour per channel. A single channel is shown in white (grey levels). Beyond the six
        classic colours (blue, green, red, magenta, cyan, yellow) hues are spread by the golden angle,
        so 40+ channels still get distinct colours.

    Examples
    --------
    >>> channel_colours(3)
    [[0, 0, 255], [0, 255, 0], [255, 0, 0]]
    >>> channel_colours(3, ["Red", "Green", "Blue"])
    [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    >>> channel_colours(1)
    [[255, 255, 255]]
    """
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative number of channels, got {n!r}; e.g. channel_colours(3)")
    n = int(n)
    if n == 1:
        return [[255, 255, 255]]
    names = [str(s).strip().lower() for s in names] if names is not None else [""] * n
    if len(names) != n:
        raise ValueError(f"names has {len(names)} entries for {n} channels; give one name per channel")
    out: list = [None] * n
    if n and all(s in _NAMED for s in names) and len(set(names)) == n:
        return [list(_NAMED[s]) for s in names]
    nuclear = next((i for i, s in enumerate(names) if any(k in s for k in _NUCLEAR_NAMES)), 0)
    palette = [list(c) for c in CHANNEL_COLOURS[1:]] + [_extra_colour(i) for i in range(6, n + 6)]
    out[nuclear] = list(CHANNEL_COLOURS[0])
    rest = iter(palette)
    for i in range(n):
        if out[i] is None:
            out[i] = next(rest)
    return out


def _as_image(image_or_array):
    from pixlab.image.io import Image, open_image

    return image_or_array if isinstance(image_or_array, Image) else open_image(image_or_array)


def _channel_index(img, channel) -> int:
    if isinstance(channel, str):
        if channel not in img.channel_names:
            raise ValueError(f"channel {channel!r} not found; available channels: {img.channel_names}")
        return img.channel_names.index(channel)
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not 0 <= channel < img.n_channels:
        raise ValueError(
            f"channel={channel!r} is not valid for an image with {img.n_channels} channels; "
            f"use 0..{img.n_channels - 1} or a name from {img.channel_names}"
        )
    return int(channel)


def _level_factor(img, level: int) -> int:
    """Integer downsample factor of pyramid level ``level`` (writers round level sizes either way)."""
    y0, y = img.levels[0].shape[1], img.levels[level].shape[1]
    return max(1, int(round(y0 / max(1, y))))


def auto_range(image, channel, percentiles=(1, 99.8)) -> tuple[float, float]:
    """Display range of one channel from intensity percentiles.

    Parameters
    ----------
    image : Image or array
        Anything :func:`pixlab.open_image` accepts.
    channel : int or str
        Channel index or name.
    percentiles : (float, float)
        Lower and upper percentile; the defaults ignore the darkest 1 % and the brightest 0.2 %.

    Returns
    -------
    (float, float)
        ``(lo, hi)`` with ``hi > lo``. Large images are sampled from a pyramid level or a strided grid
        (about a million pixels), never read whole.

    Examples
    --------
    >>> auto_range(np.arange(100, dtype=np.uint16).reshape(1, 10, 10), 0, (0, 100))
    (0.0, 99.0)
    """
    img = _as_image(image)
    c = _channel_index(img, channel)
    lo_p, hi_p = (float(p) for p in percentiles)
    if not 0 <= lo_p < hi_p <= 100:
        raise ValueError(f"percentiles={percentiles!r} must be (lo, hi) with 0 <= lo < hi <= 100; e.g. (1, 99.8)")
    # The smallest level that still has enough pixels for stable percentiles, then a stride.
    level = 0
    for i in range(len(img.levels) - 1, -1, -1):
        ly, lx = img.levels[i].shape[1:]
        if ly * lx >= min(_RANGE_SAMPLES // 4, img.shape[1] * img.shape[2]):
            level = i
            break
    arr = img.levels[level]
    ly, lx = arr.shape[1:]
    step = max(1, math.ceil(math.sqrt(ly * lx / _RANGE_SAMPLES)))
    sample = arr[c, ::step, ::step]
    sample = np.asarray(sample.compute() if hasattr(sample, "compute") else sample)
    sample = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample.ravel()
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(sample, [lo_p, hi_p]))
    if not hi > lo:
        # A flat channel: widen so it shows as a mid grey instead of dividing by zero.
        hi = lo + (1.0 if sample.dtype.kind in "iu" else max(abs(lo) * 1e-6, 1e-6))
    return lo, hi
