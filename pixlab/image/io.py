"""Reading and writing microscopy images as channels-first ``(C, Y, X)`` arrays.

TIFF / OME-TIFF files are opened lazily: ``tifffile`` exposes the file as a zarr store, and dask
wraps it, so a 50 GB slide costs nothing until a region is read. PNG/JPEG files are small and read
whole with Pillow. Everything else in pixlab sees the same :class:`Image` whatever the source.
"""

from __future__ import annotations

import math
import os
import struct
import weakref
import xml.etree.ElementTree as ET
from pathlib import Path

import dask.array as da
import numpy as np
import tifffile
import zarr

from pixlab._atomic import atomic_path

__all__ = ["Image", "open_image", "write_ome_tiff", "TIFF_SUFFIXES", "PIL_SUFFIXES"]

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg")
RGB_NAMES = ["Red", "Green", "Blue"]

# tifffile axis letters that can hold channels: C (OME channel), S (samples, e.g. RGB),
# Q (unknown, e.g. a plain (N, Y, X) stack written without metadata), I (page sequence).
_CHANNEL_AXES = "CSQI"

# OME length units -> factor to micrometres.
_UNIT_TO_UM = {
    "µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "\u03bcm": 1.0,
    "nm": 1e-3, "Å": 1e-4, "mm": 1e3, "cm": 1e4, "m": 1e6,
}


def _default_names(n_channels: int, rgb: bool) -> list[str]:
    if rgb and n_channels == 3:
        return list(RGB_NAMES)
    return [f"Channel {i + 1}" for i in range(n_channels)]


def _unreadable(path, reason) -> ValueError:
    return ValueError(
        f"cannot read image '{path}': {reason}; check the file is a complete TIFF/PNG/JPEG"
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
        if data.ndim != 3:
            raise ValueError(
                f"Image data must have shape (C, Y, X), got shape {tuple(data.shape)}; "
                "use open_image() to convert (Y, X) or (Y, X, 3) arrays"
            )
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
            channel_names = _default_names(n, data.dtype == np.uint8)
        channel_names = [str(c) for c in channel_names]
        if len(channel_names) != n:
            raise ValueError(
                f"channel_names has {len(channel_names)} names {channel_names} but the image has "
                f"{n} channels; give one name per channel"
            )
        self.channel_names = channel_names
        self.pixel_size = _check_pixel_size(pixel_size)
        if levels is None:
            levels = [data]
        else:
            levels = list(levels)
            if not levels or levels[0] is not data:
                levels = [data] + [lv for lv in levels if lv.shape != data.shape]
        for lv in levels:
            if lv.ndim != 3 or lv.shape[0] != n:
                raise ValueError(
                    f"pyramid level of shape {tuple(lv.shape)} does not match the image's {n} channels; "
                    "give levels as (C, Y', X') arrays"
                )
        self.levels = levels
        self.path = None if path is None else str(path)
        if name is None:
            name = _stem(path) if path is not None else "image"
        self.name = name
        self._store = _store  # the open TiffFile behind lazy arrays, for close()

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
            if self._store is not None and self._store.filehandle.closed:
                raise ValueError(
                    f"image '{self.name}' was closed; open it again with open_image({self.path!r})"
                )
            try:
                return np.asarray(arr.compute())
            except (tifffile.TiffFileError, OSError, ValueError) as exc:
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
        for i, lv in enumerate(self.levels[1:], start=1):
            ly, lx = lv.shape[1:]
            if ly in (ny // f, -(-ny // f)) and lx in (nx // f, -(-nx // f)):
                levels = self.levels[i:]
                break
        else:
            levels = [_block_mean(self.data, f)]
        ps = None if self.pixel_size is None else (self.pixel_size[0] * f, self.pixel_size[1] * f)
        return Image(levels[0], self.channel_names, ps, levels, self.path, self.name, _store=self._store)


def _block_mean(arr, f: int):
    """Average ``f x f`` blocks of a (C, Y, X) array (trailing partial blocks dropped), same dtype."""
    lazy = isinstance(arr, da.Array)
    x = arr if lazy else da.from_array(arr, chunks=(1, 1024, 1024))
    out = da.coarsen(np.mean, x, {1: f, 2: f}, trim_excess=True)
    if np.issubdtype(arr.dtype, np.integer):
        out = da.round(out)
    out = out.astype(arr.dtype)
    return out if lazy else out.compute()


def _check_pixel_size(pixel_size):
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


def _stem(path) -> str:
    name = Path(path).name
    lower = name.lower()
    for suffix in (".ome.tiff", ".ome.tif", ".ome.btf") + TIFF_SUFFIXES + PIL_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


# -- arrays ----------------------------------------------------------------------------------
def _array_to_cyx(arr):
    """Apply pixlab's layout rules to an in-memory or dask array; returns (data, is_rgb_layout)."""
    if not isinstance(arr, (np.ndarray, da.Array)):
        arr = np.asarray(arr)
    if arr.ndim == 2:
        return arr[None], False
    if arr.ndim == 3:
        # (Y, X, 3|4) photographs: samples last. A (C, Y, X) stack with 3-4 tiny rows is not an image,
        # so "first dim > 4" tells the two layouts apart.
        if arr.shape[-1] in (3, 4) and arr.shape[0] > 4:
            xp = da if isinstance(arr, da.Array) else np
            return xp.moveaxis(arr[..., :3], -1, 0), True
        return arr, False
    raise ValueError(
        f"image array must be (Y, X), (Y, X, 3|4) or (C, Y, X), got shape {tuple(arr.shape)}; "
        "squeeze or select the extra axes first"
    )


# -- TIFF ------------------------------------------------------------------------------------
def _ome_info(tif: tifffile.TiffFile):
    """Channel names and pixel size (µm, (y, x)) from OME-XML, or (None, None)."""
    xml = tif.ome_metadata
    if not xml:
        return None, None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None
    pixels = next((el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"), None)
    if pixels is None:
        return None, None
    names = [ch.get("Name") for ch in pixels if ch.tag.endswith("Channel")]
    names = names if names and all(names) else None
    size = []
    for ax in ("Y", "X"):
        value = pixels.get(f"PhysicalSize{ax}")
        factor = _UNIT_TO_UM.get(pixels.get(f"PhysicalSize{ax}Unit", "µm"))
        if value is None or factor is None:
            return names, None
        size.append(float(value) * factor)
    return names, tuple(size)


def _imagej_pixel_size(tif: tifffile.TiffFile):
    meta = tif.imagej_metadata or {}
    if str(meta.get("unit", "")).lower() not in ("micron", "microns", "um", "µm", "\\u00B5m"):
        return None
    try:
        tags = tif.pages.first.tags
        xres = tags["XResolution"].value
        yres = tags["YResolution"].value
        return (yres[1] / yres[0], xres[1] / xres[0])
    except (KeyError, ZeroDivisionError, TypeError, IndexError):
        return None


def _check_complete(tif: tifffile.TiffFile, series, path) -> None:
    """Fail at open time when tiles/strips point past the end of the file (a truncated copy)."""
    size = tif.filehandle.size
    for level in series.levels:
        for page in level.pages:
            if page is None:
                continue
            for offset, count in zip(page.dataoffsets, page.databytecounts):
                if count and offset + count > size:
                    raise _unreadable(path, f"file is truncated ({size} bytes, data expected up to byte "
                                            f"{offset + count})")


def _to_cyx_axes(arr, axes: str, path):
    """Squeeze size-1 axes and move the channel axis first; returns the (C, Y, X) dask array."""
    keep = [i for i, a in enumerate(axes) if a in "YX" or arr.shape[i] != 1]
    arr = arr[tuple(slice(None) if i in keep else 0 for i in range(arr.ndim))]
    axes_left = "".join(axes[i] for i in keep)
    extra = [a for a in axes_left if a not in "YX"]
    if "Y" not in axes_left or "X" not in axes_left or len(extra) > 1 or (extra and extra[0] not in _CHANNEL_AXES):
        raise ValueError(
            f"cannot read image '{path}': axes {axes!r} with shape {tuple(int(s) for s in arr.shape)} "
            f"after squeezing size-1 axes is not supported; pixlab reads 2-D images with channels "
            f"(YX, CYX, YXS or TCZYX with T=Z=1) - save one plane or channel stack per file"
        )
    if not extra:
        return arr[None], False
    order = [axes_left.index(extra[0]), axes_left.index("Y"), axes_left.index("X")]
    return da.transpose(arr, order), extra[0] == "S"


def _open_tiff(path: str) -> Image:
    try:
        tif = tifffile.TiffFile(path)
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError, struct.error) as exc:
        raise _unreadable(path, exc) from exc
    try:
        if not tif.series:
            raise _unreadable(path, "no image found in the file")
        series = tif.series[0]
        axes = series.axes
        _check_complete(tif, series, path)
        names, pixel_size = _ome_info(tif)
        if pixel_size is None and tif.is_imagej:
            pixel_size = _imagej_pixel_size(tif)
    except (tifffile.TiffFileError, OSError, IndexError, KeyError, struct.error) as exc:
        tif.close()
        raise _unreadable(path, exc) from exc
    except ValueError:
        tif.close()
        raise

    try:
        store = tif.aszarr(series=0)
        root = zarr.open(store, mode="r")
    except (tifffile.TiffFileError, OSError, ValueError, KeyError) as exc:
        tif.close()
        raise _unreadable(path, exc) from exc
    # The file stays open while any lazy array needs it; close it when the last one is gone
    # (or at exit), instead of leaking the handle to the garbage collector.
    weakref.finalize(store, tif.close)
    # Multi-resolution files open as a group with arrays "0", "1", ...; single level as an array.
    arrays = [root[k] for k in sorted(root.array_keys(), key=int)] if isinstance(root, zarr.Group) else [root]
    levels, rgb = [], False
    for z in arrays:
        lv, rgb = _to_cyx_axes(da.from_zarr(z), axes, path)
        levels.append(lv)
    n = levels[0].shape[0]
    if names is not None and len(names) != n:
        names = None  # e.g. one OME Channel element for an interleaved RGB plane
    if names is None:
        names = _default_names(n, rgb or levels[0].dtype == np.uint8)
    return Image(levels[0], names, pixel_size, levels, path=path, _store=tif)


# -- PNG / JPEG ------------------------------------------------------------------------------
def _open_pil(path: str) -> Image:
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("1", "P", "LA", "PA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La"):
                im = im.convert("L" if mode in ("1", "LA", "La") else "RGB")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise _unreadable(path, exc) from exc
    if arr.dtype == np.int32 and arr.size and arr.min() >= 0 and arr.max() < 2**16:
        arr = arr.astype(np.uint16)  # 16-bit PNGs may come back as 32-bit "I" mode
    # Pillow always returns samples last, so no layout guessing is needed here.
    data = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    return Image(np.ascontiguousarray(data), path=path)


def open_image(src, channels=None) -> Image:
    """Open an image as a channels-first :class:`Image`.

    Parameters
    ----------
    src : str, os.PathLike, numpy.ndarray, dask.array.Array or Image
        A file (TIFF/OME-TIFF read lazily; PNG/JPEG read whole) or an array: ``(Y, X)`` -> 1 channel,
        ``(Y, X, 3|4)`` with ``Y > 4`` -> RGB channels first (alpha dropped), ``(C, Y, X)`` kept.
    channels : int, str or sequence, optional
        Keep only these channels (indices or names).

    Returns
    -------
    Image

    Examples
    --------
    >>> import numpy as np
    >>> img = open_image(np.zeros((32, 48, 3), np.uint8))
    >>> img.shape, img.channel_names
    ((3, 32, 48), ['Red', 'Green', 'Blue'])
    """
    if isinstance(src, Image):
        img = src
    elif isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if not os.path.exists(path):
            raise FileNotFoundError(f"image file '{path}' does not exist; check the path and spelling")
        if os.path.isdir(path):
            raise ValueError(
                f"'{path}' is a folder, not an image file; give the path of a .tif/.png/.jpg file"
            )
        lower = path.lower()
        if lower.endswith(TIFF_SUFFIXES):
            img = _open_tiff(path)
        elif lower.endswith(PIL_SUFFIXES):
            img = _open_pil(path)
        else:
            raise ValueError(
                f"unsupported image file type '{Path(path).suffix}' for '{path}'; "
                f"supported suffixes: {', '.join(TIFF_SUFFIXES + PIL_SUFFIXES)}"
            )
    else:
        img = Image(_array_to_cyx(src)[0])
    if channels is not None:
        img = img.select_channels(channels)
    return img


# -- writing ---------------------------------------------------------------------------------
def _band_tiles(arr, tile: int):
    """Yield (tile, tile) blocks of a lazy (C, Y, X) array in TIFF order, computing one band at a time."""
    _, ny, nx = arr.shape
    for c in range(arr.shape[0]):
        for y in range(0, ny, tile):
            band = np.asarray(arr[c, y:y + tile, :].compute())
            for x in range(0, nx, tile):
                yield np.ascontiguousarray(band[:, x:x + tile])


def write_ome_tiff(path, data, channel_names=None, pixel_size=None, tile=256, compression="zlib",
                   pyramid=True):
    """Write a tiled, compressed, pyramidal OME-TIFF atomically.

    Pyramid levels are 2x block means stored as SubIFDs (QuPath / Bio-Formats layout), added until
    the level fits in one tile. Dask input is written band by band, so it is never fully loaded.

    Parameters
    ----------
    path : str or os.PathLike
        Output file, e.g. ``"out.ome.tif"``.
    data : array or Image
        ``(C, Y, X)``, ``(Y, X)`` or ``(Y, X, 3)``; numpy or dask. An Image also gives default channel
        names and pixel size.
    channel_names : list of str, optional
        One per channel.
    pixel_size : float or (float, float), optional
        µm per pixel, ``(y, x)``.
    tile : int
        Tile size, a multiple of 16.
    compression : str or None
        Any codec tifffile/imagecodecs supports ("zlib", "zstd", "lzw", ...), or None.
    pyramid : bool
        Write reduced-resolution levels.

    Returns
    -------
    str
        ``path``.
    """
    img = open_image(data)
    if channel_names is None:
        channel_names = img.channel_names
    if pixel_size is None:
        pixel_size = img.pixel_size
    img = Image(img.data, channel_names, pixel_size)  # validates names and pixel size
    if int(tile) != tile or tile < 16 or tile % 16:
        raise ValueError(f"tile must be a multiple of 16 (TIFF rule), got {tile!r}; e.g. 256 or 512")
    tile = int(tile)

    levels = [img.data]
    while pyramid and max(levels[-1].shape[1:]) > tile and min(levels[-1].shape[1:]) >= 2:
        levels.append(_block_mean(levels[-1], 2))

    metadata = {"axes": "CYX", "Channel": {"Name": img.channel_names}}
    if img.pixel_size is not None:
        metadata.update(PhysicalSizeY=img.pixel_size[0], PhysicalSizeYUnit="µm",
                        PhysicalSizeX=img.pixel_size[1], PhysicalSizeXUnit="µm")
    nbytes = sum(int(np.prod(lv.shape)) * lv.dtype.itemsize for lv in levels)
    options = dict(tile=(tile, tile), compression=compression, photometric="minisblack")

    def _write(tw, arr, **kwargs):
        if isinstance(arr, da.Array):
            tw.write(_band_tiles(arr, tile), shape=arr.shape, dtype=arr.dtype, **options, **kwargs)
        else:
            tw.write(np.ascontiguousarray(arr), **options, **kwargs)

    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp, ome=True, bigtiff=nbytes > 2**31) as tw:
            try:
                _write(tw, levels[0], subifds=len(levels) - 1, metadata=metadata)
            except ValueError as exc:
                if "COMPRESSION" in str(exc):
                    raise ValueError(
                        f"compression={compression!r} is not a TIFF codec tifffile knows; use 'zlib', "
                        "'zstd', 'lzw' or None"
                    ) from exc
                raise
            for lv in levels[1:]:
                _write(tw, lv, subfiletype=1, metadata=None)
    return os.fspath(path)
