"""The one OME-TIFF writer: tiled, compressed, pyramidal (SubIFDs), written atomically.

Inference's streaming :class:`pixlab.inference.outputs.RasterWriter` writes the same layout row by
row; this writer is for images that exist as (numpy or dask) arrays.
"""

from __future__ import annotations

import os

import dask.array as da
import numpy as np
import tifffile

from pixlab._atomic import atomic_path
from pixlab.image.image import Image, block_mean
from pixlab.image.open import open_image

__all__ = ["write_ome_tiff", "ome_pixel_metadata"]


def ome_pixel_metadata(pixel_size, unit="µm") -> dict:
    """The tifffile OME ``metadata`` entries for a pixel size ``(y, x)``; empty when it is None."""
    if pixel_size is None:
        return {}
    return {"PhysicalSizeY": float(pixel_size[0]), "PhysicalSizeYUnit": unit,
            "PhysicalSizeX": float(pixel_size[1]), "PhysicalSizeXUnit": unit}


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
        levels.append(block_mean(levels[-1], 2))

    metadata = {"axes": "CYX", "Channel": {"Name": img.channel_names}}
    metadata.update(ome_pixel_metadata(img.pixel_size))
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
