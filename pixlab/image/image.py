"""The :class:`Image`: channels-first pixels (numpy or lazy dask), channel names, pixel size, pyramid.

Readers (:mod:`pixlab.image.open`) build it; everything else in pixlab reads pixels only through
:meth:`Image.read` (a region of one level) so that a whole slide is never held in memory.
"""

from __future__ import annotations

import math

import dask.array as da
import numpy as np

from pixlab.image.formats import stem as _stem
from pixlab.image.formats import unreadable as _unreadable

__all__ = ["Image", "RGB_NAMES", "check_pixel_size", "choose_pixel_size", "no_pixels", "block_mean", "default_names", "level_factor"]

RGB_NAMES = ["Red", "Green", "Blue"]


def default_names(n_channels: int, rgb: bool) -> list[str]:
    """"Red", "Green", "Blue" for an RGB image, else "Channel 1", "Channel 2", ..."""
    if rgb and n_channels == 3:
        return list(RGB_NAMES)
    return [f"Channel {i + 1}" for i in range(n_channels)]


def no_pixels(name, shape) -> ValueError:
    """The error for an image with a zero-length axis."""
    return ValueError(
        f"image '{name}' has no pixels: shape {tuple(int(v) for v in shape)}; give an array with at least "
        "one channel and one pixel in Y and X, e.g. np.zeros((256, 256))"
    )


class Image:
    """A channels-first image, possibly lazy, with channel names, pixel size and pyramid levels.

    Parameters
    ----------
    data : numpy.ndarray or dask.array.Array
        Pixels, shape ``(C, Y, X)``.
    channel_names : list of str, optional
        One name per channel; defaults to "Channel 1", ... ("Red", "Green", "Blue" for 3-channel uint8).
    pixel_size : float or (float, float), optional
        Pixel size in µm, ``(y, x)``; a single number means square pixels.
    levels : list of arrays, optional
        Pyramid levels ``(C, Y', X')``, largest first; ``levels[0]`` must be ``data``. Defaults to ``[data]``.
    path : str, optional
        File the image was read from.
    name : str, optional
        Short display name; defaults to the file name without suffix, or "image".

    Attributes
    ----------
    data, channel_names, pixel_size, levels, path, name
    """

    def __init__(self, data, channel_names=None, pixel_size=None, levels=None, path=None, name=None,
                 _store=None):
        if not isinstance(data, (np.ndarray, da.Array)):
            data = np.asarray(data)
        self.path = None if path is None else str(path)
        if name is None:
            name = _stem(path) if path is not None else "image"
        self.name = name
        if data.ndim != 3:
            raise ValueError(
                f"Image data must have shape (C, Y, X), got shape {tuple(data.shape)}; "
                "use open_image() to convert (Y, X) or (Y, X, 3) arrays"
            )
        if 0 in data.shape:
            raise no_pixels(self.path or name, data.shape)
        if data.dtype == bool:
            data = data.astype(np.uint8)
        if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
            raise ValueError(
                f"Image data must be an integer or float array, got dtype {data.dtype}; "
                "convert it with .astype(np.float32)"
            )
        self.data = data
        n = data.shape[0]
        if channel_names is None:
            channel_names = default_names(n, data.dtype == np.uint8)
        channel_names = [str(c) for c in channel_names]
        if len(channel_names) != n:
            raise ValueError(
                f"channel_names has {len(channel_names)} names {channel_names} but the image has "
                f"{n} channels; give one name per channel"
            )
        self.channel_names = channel_names
        self.pixel_size = check_pixel_size(pixel_size)
        if levels is None:
            levels = [data]
        else:
            levels = list(levels)
            if not levels or levels[0] is not data:
                levels = [data] + [lv for lv in levels if lv.shape != data.shape]
        self.levels = _check_levels(levels, self.path or name)
        self._store = _store  # what holds the open file behind lazy arrays, for close()

    # -- basic properties -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, Y, X)``."""
        return tuple(int(s) for s in self.data.shape)

    @property
    def n_channels(self) -> int:
        """Number of channels."""
        return int(self.data.shape[0])

    @property
    def dtype(self) -> np.dtype:
        """Native pixel dtype."""
        return self.data.dtype

    @property
    def is_rgb(self) -> bool:
        """True for 3-channel uint8 images (brightfield / H&E / IHC photographs)."""
        return self.n_channels == 3 and self.dtype == np.uint8

    @property
    def is_lazy(self) -> bool:
        """True when the pixels are a dask array (read on demand)."""
        return isinstance(self.data, da.Array)

    def __repr__(self) -> str:
        return (
            f"Image(name={self.name!r}, shape={self.shape}, dtype={self.dtype}, "
            f"channels={self.channel_names}, pixel_size={self.pixel_size}, levels={len(self.levels)}, "
            f"lazy={self.is_lazy})"
        )

    def close(self) -> None:
        """Close the underlying file (lazy arrays cannot be read afterwards)."""
        if self._store is not None:
            self._store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- reading ----------------------------------------------------------------------------
    def read(self, region=None, level=0) -> np.ndarray:
        """Read pixels into memory.

        Parameters
        ----------
        region : (y0, y1, x0, x1), optional
            Region in the pixel coordinates of ``level``; clipped to the image. Default: whole level.
        level : int
            Pyramid level (0 = full resolution).

        Returns
        -------
        numpy.ndarray
            ``(C, h, w)`` in the image's native dtype.
        """
        if not 0 <= int(level) < len(self.levels):
            raise ValueError(
                f"level={level} does not exist; image '{self.name}' has levels 0..{len(self.levels) - 1}"
            )
        arr = self.levels[int(level)]
        if region is not None:
            if len(region) != 4:
                raise ValueError(f"region must be (y0, y1, x0, x1), got {region!r}")
            _, ny, nx = arr.shape
            y0, y1, x0, x1 = (int(v) for v in region)
            y0, y1 = max(0, y0), min(ny, y1)
            x0, x1 = max(0, x0), min(nx, x1)
            if y1 <= y0 or x1 <= x0:
                raise ValueError(
                    f"region {tuple(region)} is empty or outside image '{self.name}' of size "
                    f"(Y={ny}, X={nx}) at level {level}; give y0 < y1 and x0 < x1 inside the image"
                )
            arr = arr[:, y0:y1, x0:x1]
        return self._compute(arr)

    def _compute(self, arr) -> np.ndarray:
        if isinstance(arr, da.Array):
            if self._store is not None and _is_closed(self._store):
                raise ValueError(
                    f"image '{self.name}' was closed; open it again with open_image({self.path!r})"
                )
            try:
                return np.asarray(arr.compute())
            except (OSError, ValueError) as exc:  # tifffile.TiffFileError is a ValueError
                raise _unreadable(self.path or self.name, exc) from exc
        return np.asarray(arr)

    def check_finite(self, max_pixels: int | None = None) -> None:
        """Raise ``ValueError`` if a float channel holds NaN or infinite values.

        Not done at open time because it means reading every pixel of a lazy image.

        Parameters
        ----------
        max_pixels : int, optional
            Check at most about this many pixels per channel (a regular strided grid). Default:
            every pixel, streamed chunk by chunk so memory stays bounded.
        """
        if not np.issubdtype(self.dtype, np.floating):
            return
        arr = self.data
        if max_pixels is not None:
            step = max(1, math.ceil(math.sqrt(self.shape[1] * self.shape[2] / max(1, int(max_pixels)))))
            arr = arr[:, ::step, ::step]
        if isinstance(arr, da.Array):
            finite = self._compute(da.isfinite(arr).all(axis=(1, 2)))
        else:
            finite = np.isfinite(arr).all(axis=(1, 2))
        bad = [self.channel_names[i] for i in np.flatnonzero(~finite)]
        if bad:
            raise ValueError(
                f"image '{self.name}' has NaN or infinite values in channel(s) {bad}; "
                "replace them (e.g. numpy.nan_to_num) before training or prediction"
            )

    # -- derived images ---------------------------------------------------------------------
    def _channel_indices(self, channels) -> list[int]:
        if isinstance(channels, (str, int, np.integer)):
            channels = [channels]
        idx = []
        for ch in channels:
            if isinstance(ch, str):
                if ch not in self.channel_names:
                    raise ValueError(
                        f"channel {ch!r} not found in image '{self.name}'; available channels: "
                        f"{self.channel_names}"
                    )
                idx.append(self.channel_names.index(ch))
            elif isinstance(ch, (int, np.integer)) and not isinstance(ch, bool):
                if not 0 <= ch < self.n_channels:
                    raise ValueError(
                        f"channel index {ch} is out of range for image '{self.name}' with "
                        f"{self.n_channels} channels; use 0..{self.n_channels - 1} or a name from "
                        f"{self.channel_names}"
                    )
                idx.append(int(ch))
            else:
                raise ValueError(
                    f"channels must be indices or names, got {ch!r}; available: {self.channel_names}"
                )
        if not idx:
            raise ValueError("channels is empty; give at least one channel index or name")
        return idx

    def select_channels(self, channels) -> "Image":
        """Return an image with only some channels, in the order given.

        Parameters
        ----------
        channels : int, str or sequence of int/str
            Channel indices or names.

        Returns
        -------
        Image
        """
        idx = self._channel_indices(channels)
        levels = [lv[idx] for lv in self.levels]
        return Image(levels[0], [self.channel_names[i] for i in idx], self.pixel_size, levels,
                     self.path, self.name, _store=self._store)

    def downsampled(self, factor) -> "Image":
        """Return the image reduced by an integer factor in Y and X.

        A pyramid level whose size matches is used as is (no pixels read); otherwise ``factor x factor``
        blocks are averaged lazily (the result keeps the native dtype, rounded for integers).

        Parameters
        ----------
        factor : int
            Reduction factor, >= 1.

        Returns
        -------
        Image
        """
        try:
            valid = float(factor) == int(factor) and int(factor) >= 1
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ValueError(f"factor must be a whole number >= 1, got {factor!r}; e.g. 2 or 4")
        f = int(factor)
        if f == 1:
            return self
        _, ny, nx = self.shape
        if ny < f or nx < f:
            raise ValueError(
                f"factor={f} is larger than image '{self.name}' of size (Y={ny}, X={nx}); use a smaller factor"
            )
        # Writers round level sizes down or up; either way a level pixel covers f x f source pixels.
        # No exact level: average blocks of the coarsest level whose factor divides f (a slide's
        # 4x level for f=8), so that level 0 of a slide is not read.
        source, rest = self.data, f
        for i, lv in enumerate(self.levels[1:], start=1):
            ly, lx = lv.shape[1:]
            if ly in (ny // f, -(-ny // f)) and lx in (nx // f, -(-nx // f)):
                levels = self.levels[i:]
                break
            fi = level_factor(self.levels[0].shape[1:], (ly, lx))
            if fi > 1 and f % fi == 0 and ly in (ny // fi, -(-ny // fi)) and lx in (nx // fi, -(-nx // fi)):
                source, rest = lv, f // fi
        else:
            levels = [block_mean(source, rest)]
        ps = None if self.pixel_size is None else (self.pixel_size[0] * f, self.pixel_size[1] * f)
        return Image(levels[0], self.channel_names, ps, levels, self.path, self.name, _store=self._store)


def level_factor(shape0_yx, shape_yx) -> int:
    """Whole-number downsample factor of a level of size ``shape_yx`` below one of size ``shape0_yx``."""
    return max(1, int(round(int(shape0_yx[0]) / max(1, int(shape_yx[0])))))


def block_mean(arr, f: int):
    """Average ``f x f`` blocks of a (C, Y, X) array (trailing partial blocks dropped), same dtype."""
    lazy = isinstance(arr, da.Array)
    x = arr if lazy else da.from_array(arr, chunks=(1, 1024, 1024))
    out = da.coarsen(np.mean, x, {1: f, 2: f}, trim_excess=True)
    if np.issubdtype(arr.dtype, np.integer):
        out = da.round(out)
    out = out.astype(arr.dtype)
    return out if lazy else out.compute()


def choose_pixel_size(given, read, name):
    """The user's pixel size if given (warning when the file says otherwise), else what ``read()`` finds.

    ``read`` may raise ValueError for a pixel size of 0 in the file: the user's value then stands.
    """
    if given is None:
        return read()
    given = check_pixel_size(given)
    try:
        found = read()
    except ValueError:
        found = None
    if found is not None and any(abs(a - b) > 0.01 * b for a, b in zip(given, found)):
        import warnings

        warnings.warn(f"pixel_size={given} replaces the {found[1]:g} µm that image '{name}' declares",
                      stacklevel=4)
    return given


def check_pixel_size(pixel_size):
    if pixel_size is None:
        return None
    if np.isscalar(pixel_size):
        pixel_size = (pixel_size, pixel_size)
    try:
        ps = tuple(float(v) for v in pixel_size)
    except (TypeError, ValueError):
        ps = ()
    if len(ps) != 2 or not all(math.isfinite(v) and v > 0 for v in ps):
        raise ValueError(
            f"pixel_size must be a positive number or (y, x) pair in µm, got {pixel_size!r}; e.g. 0.5 or (0.5, 0.5)"
        )
    return ps


def _is_closed(store) -> bool:
    handle = getattr(store, "filehandle", None)  # tifffile.TiffFile
    return bool(getattr(handle if handle is not None else store, "closed", False))


def _check_levels(levels, name) -> list:
    """Levels must share the channel count and shrink by one factor in Y and X (a real pyramid)."""
    n, ny, nx = (int(v) for v in levels[0].shape)
    for i, lv in enumerate(levels):
        if lv.ndim != 3 or lv.shape[0] != n:
            raise ValueError(
                f"pyramid level {i} of image '{name}' has shape {tuple(lv.shape)}, which does not match "
                f"the image's {n} channels; give levels as (C, Y', X') arrays"
            )
    for i in range(1, len(levels)):
        py, px = (int(v) for v in levels[i - 1].shape[1:])
        ly, lx = (int(v) for v in levels[i].shape[1:])
        # Writers round level sizes down or up, so allow one pixel either way per level.
        fy, fx = ny / max(ly, 1), nx / max(lx, 1)
        same_factor = abs(nx / fy - lx) <= 1 + 0.01 * lx or abs(ny / fx - ly) <= 1 + 0.01 * ly
        if ly > py or lx > px or ly < 1 or lx < 1 or not same_factor:
            raise ValueError(
                f"the pyramid levels of image '{name}' disagree in shape: level {i} is (Y={ly}, X={lx}), "
                f"which is not a downsample of level 0 (Y={ny}, X={nx}) following level {i - 1} "
                f"(Y={py}, X={px}); the file is damaged or its levels are separate images - convert it "
                f"again (e.g. pixlab.image.write_ome_tiff of level 0, or QuPath/bfconvert)"
            )
    return levels
