"""TIFF and TIFF-based slides (OME-TIFF, Aperio SVS, Hamamatsu NDPI, Leica SCN, Akoya QPTIFF), lazily.

tifffile knows each flavour's layout (its series and pyramid levels) and exposes the file as a zarr
store; dask wraps each level, so a 50 GB slide costs nothing until a region is read. The metadata
rules (pixel size, channel names) are in :mod:`pixlab.image.tiffmeta`.
"""

from __future__ import annotations

import struct
import weakref

import dask.array as da
import numpy as np
import tifffile
import zarr

from pixlab.image.formats import unreadable
from pixlab.image.image import Image, choose_pixel_size, default_names
from pixlab.image.layout import axes_to_cyx
from pixlab.image.tiffmeta import tiff_channel_names, tiff_pixel_size

__all__ = ["open_tiff", "tiff_kind"]

_ERRORS = (tifffile.TiffFileError, OSError, IndexError, KeyError, struct.error)


def tiff_kind(tif: tifffile.TiffFile) -> str:
    """The flavour tifffile recognised: "ome", "svs", "ndpi", "scn", "qpi", "imagej" or "tiff"."""
    for kind in ("ome", "svs", "ndpi", "scn", "qpi", "imagej"):
        if getattr(tif, f"is_{kind}", False):
            return kind
    return "tiff"


def _check_complete(tif: tifffile.TiffFile, series, path) -> None:
    """Fail at open time when tiles/strips point past the end of the file (a truncated copy)."""
    size = tif.filehandle.size
    for level in series.levels:
        for page in level.pages:
            if page is None:
                continue
            for offset, count in zip(page.dataoffsets, page.databytecounts):
                if count and offset + count > size:
                    raise unreadable(path, f"file is truncated ({size} bytes, data expected up to byte "
                                           f"{offset + count})")


def _main_series(tif: tifffile.TiffFile) -> int:
    """Index of the series to read: the first, except in Leica SCN files, whose collection puts a
    low-resolution macro photograph before the scan: there the largest image is the slide."""
    if not tif.is_scn:
        return 0
    areas = [int(np.prod([n for n, a in zip(s.shape, s.axes) if a in "YX"])) for s in tif.series]
    return int(np.argmax(areas))


def open_tiff(path: str, axes: str | None = None, pixel_size=None) -> Image:
    """Open a TIFF-based file as a lazy :class:`Image` with all its pyramid levels.

    Parameters
    ----------
    path : str
    axes : str, optional
        Replaces the axes tifffile reports (one letter per axis, e.g. "CYX" for a stack tifffile calls
        "QYX" or "ZYX").
    pixel_size : float or (float, float), optional
        Replaces the file's pixel size (µm).
    """
    try:
        tif = tifffile.TiffFile(path)
    except (*_ERRORS, ValueError) as exc:
        raise unreadable(path, exc) from exc
    try:
        if not tif.series:
            raise unreadable(path, "no image found in the file")
        index = _main_series(tif)
        series = tif.series[index]
        series_axes = series.axes
        if axes is not None and len(axes) != len(series_axes):
            raise ValueError(
                f"axes={axes!r} does not fit image '{path}': the file has {len(series_axes)} axes "
                f"{series_axes!r} of shape {tuple(series.shape)}; give one letter per axis"
            )
        _check_complete(tif, series, path)
        pixel_size = choose_pixel_size(pixel_size, lambda: tiff_pixel_size(tif, series, path), path)
        store = tif.aszarr(series=index)
        root = zarr.open(store, mode="r")
    except _ERRORS as exc:
        tif.close()
        raise unreadable(path, exc) from exc
    except BaseException:
        tif.close()
        raise
    # The file stays open while any lazy array needs it; close it when the last one is gone
    # (or at exit), instead of leaking the handle to the garbage collector.
    weakref.finalize(store, tif.close)
    # Multi-resolution files open as a group with arrays "0", "1", ...; single level as an array.
    arrays = [root[k] for k in sorted(root.array_keys(), key=int)] if isinstance(root, zarr.Group) else [root]
    levels, rgb = [], False
    try:
        for z in arrays:
            lv, rgb = axes_to_cyx(da.from_zarr(z), axes or series_axes, f"image '{path}'")
            levels.append(lv)
    except BaseException:
        tif.close()
        raise
    n = levels[0].shape[0]
    names = tiff_channel_names(tif, series, n)  # None e.g. for one OME Channel of an RGB plane
    if names is None:
        names = default_names(n, rgb or levels[0].dtype == np.uint8)
    try:
        return Image(levels[0], names, pixel_size, levels, path=path, _store=tif)
    except BaseException:
        tif.close()
        raise
