"""Turning images, labels and probabilities into RGB(A) pictures, and mapping a screen view onto an image.

Core module (no Jupyter imports): the widgets only copy the arrays made here onto a canvas.

- :func:`composite`: RGB for brightfield photographs, additive false colour for fluorescence (one colour
  per channel, any number of channels), read from the pyramid level that matches the zoom.
- :func:`label_overlay` / :func:`probability_overlay`: semi-transparent RGBA layers.
- :class:`Viewport`: zoom and pan of a canvas over an image larger than it. It maps canvas pixels to
  full-resolution image coordinates (painting) and renders only the part of an array that is visible,
  so a 50 000 px slide costs no more to show than a 512 px one.
"""

from __future__ import annotations

import colorsys
import io
import math

import numpy as np

__all__ = [
    "CHANNEL_COLOURS",
    "channel_colours",
    "auto_range",
    "composite",
    "thumbnail",
    "label_overlay",
    "probability_overlay",
    "encode_png",
    "Viewport",
]

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


# --------------------------------------------------------------------------------------------------
# Composite
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Overlays
# --------------------------------------------------------------------------------------------------


def _check_opacity(opacity) -> float:
    try:
        value = float(opacity)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0 <= value <= 1:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity!r}; e.g. 0.5")
    return value


def label_overlay(labels, colours, opacity: float = 0.5) -> np.ndarray:
    """Colour a label image: class ``k`` gets ``colours[k - 1]``, unlabelled pixels are transparent.

    Parameters
    ----------
    labels : array_like, shape (h, w)
        Class ids, 0 = unlabelled.
    colours : list of colours
        One per class (``[r, g, b]`` or ``"#rrggbb"``).
    opacity : float
        Alpha of labelled pixels, 0-1.

    Returns
    -------
    numpy.ndarray, shape (h, w, 4)
        uint8 RGBA.

    Examples
    --------
    >>> label_overlay(np.array([[0, 2]]), [[255, 0, 0], [0, 0, 255]], 1.0).tolist()
    [[[0, 0, 0, 0], [0, 0, 255, 255]]]
    """
    from pixlab.labels.masks import parse_colour

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D (h, w) array, got shape {labels.shape}")
    alpha = round(_check_opacity(opacity) * 255)
    lut = np.zeros((len(colours) + 1, 4), np.uint8)
    for k, c in enumerate(colours, start=1):
        lut[k, :3] = parse_colour(c)
        lut[k, 3] = alpha
    top = int(labels.max()) if labels.size else 0
    if top > len(colours):
        raise ValueError(f"labels contain class id {top} but only {len(colours)} colours were given; "
                         "give one colour per class")
    return lut[labels]


def probability_overlay(probs, colours, opacity: float = 0.5, by_confidence: bool = True) -> np.ndarray:
    """Colour class probabilities: each pixel gets the colour of its most probable class.

    Parameters
    ----------
    probs : array_like, shape (K, h, w)
        ``probs[k - 1]`` = probability of class ``k``.
    colours : list of colours
        One per class.
    opacity : float
        Alpha of a fully confident pixel, 0-1.
    by_confidence : bool
        Scale alpha by the confidence ``(p_max - 1/K) / (1 - 1/K)``, so uncertain pixels fade out.

    Returns
    -------
    numpy.ndarray, shape (h, w, 4)
        uint8 RGBA.
    """
    from pixlab.labels.masks import parse_colour

    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3:
        raise ValueError(f"probs must be a (K, h, w) array, got shape {probs.shape}")
    k = probs.shape[0]
    if len(colours) < k:
        raise ValueError(f"{len(colours)} colours were given for {k} classes; give one colour per class")
    opacity = _check_opacity(opacity)
    lut = np.array([parse_colour(c) for c in colours[:k]], np.uint8)
    best = np.argmax(probs, axis=0)
    out = np.empty(best.shape + (4,), np.uint8)
    out[..., :3] = lut[best]
    if by_confidence and k > 1:
        pmax = np.take_along_axis(probs, best[None], axis=0)[0]
        conf = np.clip((pmax - 1.0 / k) / (1.0 - 1.0 / k), 0, 1)
    else:
        conf = np.ones(best.shape, np.float32)
    out[..., 3] = np.rint(conf * opacity * 255).astype(np.uint8)
    return out


def encode_png(array) -> bytes:
    """PNG bytes of a (h, w), (h, w, 3) or (h, w, 4) uint8 array (for image widgets)."""
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# Viewport
# --------------------------------------------------------------------------------------------------


class Viewport:
    """Zoom and pan of a canvas over an image.

    The canvas pixel ``(i, j)`` (row, column) shows the full-resolution image pixel
    ``(floor(y0 + (i + 0.5) * scale), floor(x0 + (j + 0.5) * scale))``: ``(y0, x0)`` is the image
    point at the canvas's top-left corner and ``scale`` is image pixels per canvas pixel (> 1 when
    zoomed out). Everything shown is sampled through this one formula, so what is painted is what is seen.

    Parameters
    ----------
    image_shape : (int, int)
        ``(Y, X)`` of the full-resolution image (a longer shape uses its last two entries).
    canvas_shape : (int, int)
        ``(height, width)`` of the canvas in pixels.

    Attributes
    ----------
    y0, x0, scale : float
        Current view; :meth:`fit` sets them so the whole image is visible and centred.
    """

    MIN_SCALE = 1 / 32  # at most 32 canvas pixels per image pixel

    def __init__(self, image_shape, canvas_shape):
        self.image_shape = tuple(int(s) for s in tuple(image_shape)[-2:])
        self.canvas_shape = tuple(int(s) for s in canvas_shape)
        if min(self.image_shape) < 1 or min(self.canvas_shape) < 1:
            raise ValueError(f"image_shape {image_shape} and canvas_shape {canvas_shape} must be positive")
        self.fit()

    def __repr__(self) -> str:
        return f"Viewport(y0={self.y0:.1f}, x0={self.x0:.1f}, scale={self.scale:.4g})"

    @property
    def max_scale(self) -> float:
        """Most zoomed-out scale: the whole image fits twice over."""
        (ny, nx), (h, w) = self.image_shape, self.canvas_shape
        return max(1.0, 2 * max(ny / h, nx / w))

    def fit(self) -> "Viewport":
        """Show the whole image, centred."""
        (ny, nx), (h, w) = self.image_shape, self.canvas_shape
        self.scale = max(ny / h, nx / w)
        self.y0 = (ny - h * self.scale) / 2
        self.x0 = (nx - w * self.scale) / 2
        return self

    def _clamp(self) -> None:
        # Keep the view centre inside the image, so the image can never be panned out of sight.
        (ny, nx), (h, w) = self.image_shape, self.canvas_shape
        cy = min(max(self.y0 + h * self.scale / 2, 0), ny)
        cx = min(max(self.x0 + w * self.scale / 2, 0), nx)
        self.y0, self.x0 = cy - h * self.scale / 2, cx - w * self.scale / 2

    def zoom(self, factor: float, at=None) -> "Viewport":
        """Zoom in (``factor > 1``) or out, keeping the image point under canvas point ``at`` fixed.

        Parameters
        ----------
        factor : float
            Magnification change.
        at : (float, float), optional
            Canvas point ``(row, col)``; default the canvas centre.
        """
        factor = float(factor)
        if not factor > 0:
            raise ValueError(f"zoom factor must be > 0, got {factor!r}; e.g. 2 to zoom in, 0.5 to zoom out")
        h, w = self.canvas_shape
        cy, cx = (h / 2, w / 2) if at is None else (float(at[0]), float(at[1]))
        # Canvas pixel (cy, cx) has its centre at (cy + 0.5, cx + 0.5), as in canvas_to_image.
        uy, ux = self.y0 + (cy + 0.5) * self.scale, self.x0 + (cx + 0.5) * self.scale
        self.scale = min(max(self.scale / factor, self.MIN_SCALE), self.max_scale)
        self.y0, self.x0 = uy - (cy + 0.5) * self.scale, ux - (cx + 0.5) * self.scale
        self._clamp()
        return self

    def pan(self, dy: float, dx: float) -> "Viewport":
        """Move the image by ``(dy, dx)`` canvas pixels (positive = image moves down / right)."""
        self.y0 -= float(dy) * self.scale
        self.x0 -= float(dx) * self.scale
        self._clamp()
        return self

    def center_on(self, y0: float, y1: float, x0: float, x1: float, fill: float = 0.5,
                  max_zoom: float = 8.0) -> "Viewport":
        """Pan and zoom so the full-res box ``[y0, y1) x [x0, x1)`` is centred on the canvas and fully visible.

        Parameters
        ----------
        y0, y1, x0, x1 : float
            The box in full-resolution pixels (as in :meth:`visible_region` and pixlab's tables).
        fill : float
            Fraction of the canvas height or width the box spans afterwards (0-1): the rest is context.
        max_zoom : float
            At most this many canvas pixels per image pixel, so a box of a few pixels is not blown up
            to fill the screen.

        Returns
        -------
        Viewport
            ``self``; the canvas centre now shows the box centre.

        Examples
        --------
        >>> v = Viewport((1000, 1000), (100, 100)).center_on(200, 264, 500, 564)
        >>> v.visible_region()
        (168, 296, 468, 596)
        """
        try:
            y0, y1, x0, x1 = (float(v) for v in (y0, y1, x0, x1))
            fill = float(fill)
        except (TypeError, ValueError):
            raise ValueError(f"center_on needs numbers y0, y1, x0, x1, got {(y0, y1, x0, x1)!r}") from None
        if not (math.isfinite(y0 + y1 + x0 + x1) and y1 > y0 and x1 > x0):
            raise ValueError(f"box (y0={y0}, y1={y1}, x0={x0}, x1={x1}) is empty or not finite; "
                             "give y1 > y0 and x1 > x0 in image pixels")
        if not 0 < fill <= 1:
            raise ValueError(f"fill must be in (0, 1], got {fill!r}; e.g. 0.5")
        h, w = self.canvas_shape
        scale = max((y1 - y0) / (fill * h), (x1 - x0) / (fill * w))
        self.scale = min(max(scale, self.MIN_SCALE, 1.0 / max(float(max_zoom), 1e-9)), self.max_scale)
        # Image point u lies at canvas coordinate (u - y0) / scale: put the box centre at h / 2.
        self.y0 = (y0 + y1) / 2 - h * self.scale / 2
        self.x0 = (x0 + x1) / 2 - w * self.scale / 2
        self._clamp()
        return self

    def canvas_box(self, region) -> tuple[float, float, float, float]:
        """Canvas coordinates ``(top, bottom, left, right)`` of the edges of a full-res box (not clipped).

        For drawing outlines: canvas pixel ``i`` spans ``[i, i + 1)``, like image pixels.
        """
        y0, y1, x0, x1 = (float(v) for v in region)
        s = self.scale
        return (y0 - self.y0) / s, (y1 - self.y0) / s, (x0 - self.x0) / s, (x1 - self.x0) / s

    def canvas_to_image(self, cy: float, cx: float) -> tuple[float, float]:
        """Image coordinates (row, col; pixel centres at whole numbers) of canvas pixel ``(cy, cx)``."""
        return self.y0 + (float(cy) + 0.5) * self.scale - 0.5, self.x0 + (float(cx) + 0.5) * self.scale - 0.5

    def image_to_canvas(self, y: float, x: float) -> tuple[float, float]:
        """Canvas coordinates of image point ``(y, x)`` (inverse of :meth:`canvas_to_image`)."""
        return (float(y) + 0.5 - self.y0) / self.scale - 0.5, (float(x) + 0.5 - self.x0) / self.scale - 0.5

    def canvas_rect(self, region=None):
        """Canvas pixels that show ``region`` (full-res ``(y0, y1, x0, x1)``; default the whole image).

        Returns
        -------
        (i0, i1, j0, j1) or None
            Canvas rows ``i0:i1`` and columns ``j0:j1``; None when nothing of it is visible.
        """
        ny, nx = self.image_shape
        h, w = self.canvas_shape
        ry0, ry1, rx0, rx1 = (0, ny, 0, nx) if region is None else region
        ry0, ry1, rx0, rx1 = max(0, ry0), min(ny, ry1), max(0, rx0), min(nx, rx1)
        s = self.scale
        i0 = max(0, math.ceil((ry0 - self.y0) / s - 0.5))
        i1 = min(h, math.ceil((ry1 - self.y0) / s - 0.5))
        j0 = max(0, math.ceil((rx0 - self.x0) / s - 0.5))
        j1 = min(w, math.ceil((rx1 - self.x0) / s - 0.5))
        if i1 <= i0 or j1 <= j0:
            return None
        return i0, i1, j0, j1

    def _indices(self, rect):
        i0, i1, j0, j1 = rect
        ny, nx = self.image_shape
        rows = np.floor(self.y0 + (np.arange(i0, i1) + 0.5) * self.scale).astype(np.int64)
        cols = np.floor(self.x0 + (np.arange(j0, j1) + 0.5) * self.scale).astype(np.int64)
        return np.clip(rows, 0, ny - 1), np.clip(cols, 0, nx - 1)

    def visible_region(self, rect=None):
        """Full-res ``(y0, y1, x0, x1)`` covered by the visible canvas pixels (or by ``rect``), or None."""
        rect = rect if rect is not None else self.canvas_rect()
        if rect is None:
            return None
        i0, i1, j0, j1 = rect
        ny, nx = self.image_shape
        s = self.scale
        return (max(0, math.floor(self.y0 + i0 * s)), min(ny, math.ceil(self.y0 + i1 * s)),
                max(0, math.floor(self.x0 + j0 * s)), min(nx, math.ceil(self.x0 + j1 * s)))

    def take(self, array, rect, origin=(0, 0), factor=1):
        """Sample ``array`` for the canvas pixels ``rect`` (nearest neighbour).

        Parameters
        ----------
        array : numpy.ndarray, shape (h, w, ...)
            Covers full-res pixels from ``origin`` on, one array pixel per ``factor`` image pixels.
        rect : (i0, i1, j0, j1)
            Canvas rows and columns (from :meth:`canvas_rect`).
        origin : (int, int)
            Full-res ``(y, x)`` of ``array[0, 0]``.
        factor : int
            Downsample factor of ``array``.

        Returns
        -------
        numpy.ndarray, shape (i1 - i0, j1 - j0, ...)
        """
        rows, cols = self._indices(rect)
        a = np.clip((rows - int(origin[0])) // int(factor), 0, array.shape[0] - 1)
        b = np.clip((cols - int(origin[1])) // int(factor), 0, array.shape[1] - 1)
        return array[a[:, None], b[None, :]]

    def render_image(self, image, channels=None, ranges=None, colours=None):
        """The visible part of an image as RGB, read from the pyramid level matching the zoom.

        Returns
        -------
        (rgb, rect) or (None, None)
            ``rgb`` (h, w, 3) uint8 for canvas pixels ``rect`` (see :meth:`canvas_rect`).
        """
        img = _as_image(image)
        rect = self.canvas_rect()
        if rect is None:
            return None, None
        region = self.visible_region(rect)
        rgb, origin, factor = _composite_region(img, channels, ranges, colours, region, max(1.0, self.scale))
        return self.take(rgb, rect, origin, factor), rect

    def render_labels(self, labels, colours, opacity=0.5, region=None):
        """RGBA of the full-res ``labels`` for the canvas pixels showing ``region`` (default: all visible).

        ``labels`` is a ``(Y, X)`` array or a :class:`pixlab.labels.store.LabelStore`.

        Returns
        -------
        (rgba, rect) or (None, None)
        """
        rect = self.canvas_rect(region)
        if rect is None:
            return None, None
        if not isinstance(labels, np.ndarray) and hasattr(labels, "painted_chunks"):
            # A chunked label store (whole slides): sample only its painted chunks, no dense array.
            return label_overlay(labels.take(*self._indices(rect)), colours, opacity), rect
        return label_overlay(self.take(labels, rect), colours, opacity), rect

    def render_probabilities(self, probs, colours, origin=(0, 0), factor=1, opacity=0.5):
        """RGBA of class probabilities ``(K, h, w)`` covering full-res pixels from ``origin`` at ``factor``.

        Returns
        -------
        (rgba, rect) or (None, None)
        """
        probs = np.asarray(probs)
        y, x = int(origin[0]), int(origin[1])
        region = (y, y + probs.shape[1] * int(factor), x, x + probs.shape[2] * int(factor))
        rect = self.canvas_rect(region)
        if rect is None:
            return None, None
        rgba = probability_overlay(probs, colours, opacity)
        return self.take(rgba, rect, origin, factor), rect

    def render_overlay(self, rgba, origin=(0, 0), factor=1):
        """The visible part of a ready-made RGBA layer ``(h, w, 4)`` covering full-res pixels from ``origin``.

        Used for diagnostic maps (:func:`pixlab.analysis.diagnostics.map_overlay`) computed once for an image
        or a region: each redraw only samples them for the canvas.

        Returns
        -------
        (rgba, rect) or (None, None)
        """
        rgba = np.asarray(rgba)
        if rgba.ndim != 3 or rgba.shape[2] != 4:
            raise ValueError(f"rgba must be an (h, w, 4) array, got shape {rgba.shape}")
        y, x = int(origin[0]), int(origin[1])
        region = (y, y + rgba.shape[0] * int(factor), x, x + rgba.shape[1] * int(factor))
        rect = self.canvas_rect(region)
        if rect is None:
            return None, None
        return self.take(rgba, rect, origin, factor), rect
