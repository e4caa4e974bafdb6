"""``open_image``: any supported file or array -> a channels-first :class:`~pixlab.image.image.Image`.

Which reader handles what:

=====================================  ==========================================================
TIFF, OME-TIFF, SVS, NDPI, SCN, QPTIFF  :mod:`pixlab.image.tiff` (tifffile, lazy, all pyramid levels)
OME-Zarr folders                        :mod:`pixlab.image.omezarr` (ome-zarr-py, lazy)
CZI, ND2, LIF                           :mod:`pixlab.image.bioio_reader` (bioio, ``pixlab[formats]``)
PNG, JPEG                               :mod:`pixlab.image.pil` (read whole: they are small)
numpy / dask arrays                     :mod:`pixlab.image.layout` (axis rules, ``axes=``)
=====================================  ==========================================================
"""

from __future__ import annotations

import os
from pathlib import Path

from pixlab.image.formats import BIOIO_SUFFIXES, IMAGE_SUFFIXES, PIL_SUFFIXES, TIFF_SUFFIXES, ZARR_SUFFIXES
from pixlab.image.image import Image, choose_pixel_size
from pixlab.image.layout import array_to_cyx

__all__ = ["open_image"]


def _open_path(path: str, axes, pixel_size):
    if not os.path.exists(path):
        raise FileNotFoundError(f"image file '{path}' does not exist; check the path and spelling")
    lower = path.lower().rstrip("/\\")
    if os.path.isdir(path):
        from pixlab.image.omezarr import is_zarr_folder, open_ome_zarr

        if lower.endswith(ZARR_SUFFIXES) or is_zarr_folder(path):
            return open_ome_zarr(path, axes, pixel_size)
        raise ValueError(
            f"'{path}' is a folder, not an image file; give the path of a .tif/.png/.jpg file or an "
            f".ome.zarr folder"
        )
    if lower.endswith(TIFF_SUFFIXES):
        from pixlab.image.tiff import open_tiff

        return open_tiff(path, axes, pixel_size)
    if lower.endswith(BIOIO_SUFFIXES):
        from pixlab.image.bioio_reader import open_bioio

        return open_bioio(path, axes, pixel_size)
    if lower.endswith(PIL_SUFFIXES):
        if axes is not None:
            raise ValueError(f"axes={axes!r} cannot be used with '{path}': PNG/JPEG files always store "
                             f"samples last; leave axes out")
        from pixlab.image.pil import open_pil

        return open_pil(path, pixel_size)
    raise ValueError(
        f"unsupported image file type '{Path(path).suffix}' for '{path}'; "
        f"supported suffixes: {', '.join(IMAGE_SUFFIXES)}"
    )


def _with_pixel_size(img: Image, pixel_size) -> Image:
    ps = choose_pixel_size(pixel_size, lambda: img.pixel_size, img.path or img.name)
    return Image(img.data, img.channel_names, ps, img.levels, img.path, img.name, _store=img._store)


def open_image(src, channels=None, *, axes=None, pixel_size=None) -> Image:
    """Open an image as a channels-first :class:`Image`.

    Parameters
    ----------
    src : str, os.PathLike, numpy.ndarray, dask.array.Array or Image
        A file (TIFF-based formats and OME-Zarr read lazily with all pyramid levels; CZI/ND2/LIF with
        ``pip install 'pixlab[formats]'``; PNG/JPEG read whole) or an array: ``(Y, X)`` -> 1 channel,
        ``(Y, X, 3)`` -> 3 channels, ``(Y, X, 4)`` uint8 -> RGB (alpha dropped, with a warning),
        ``(C, Y, X)`` with C <= 64 and smaller than Y and X kept. Other layouts need ``axes``.
    channels : int, str or sequence, optional
        Keep only these channels (indices or names).
    axes : str, optional
        The meaning of each axis, e.g. ``"YXC"`` (channels last), ``"CYX"``; size-1 axes such as T and
        Z may be listed (``"TCZYX"``). For files it replaces the axes the file declares.
    pixel_size : float or (float, float), optional
        µm per pixel ``(y, x)``; replaces what the file says (or gives one to an array).

    Returns
    -------
    Image

    Examples
    --------
    >>> import numpy as np
    >>> img = open_image(np.zeros((32, 48, 3), np.uint8))
    >>> img.shape, img.channel_names
    ((3, 32, 48), ['Red', 'Green', 'Blue'])
    >>> open_image(np.zeros((32, 48, 5)), axes="YXC", pixel_size=0.5).shape
    (5, 32, 48)
    """
    if isinstance(src, Image):
        if axes is not None:
            raise ValueError(f"axes={axes!r} cannot be applied to an opened Image (already (C, Y, X)); "
                             f"leave axes out")
        img = src if pixel_size is None else _with_pixel_size(src, pixel_size)
    elif isinstance(src, (str, os.PathLike)):
        img = _open_path(os.fspath(src), axes, pixel_size)
    else:
        img = Image(array_to_cyx(src, axes)[0], pixel_size=pixel_size)
    if channels is not None:
        img = img.select_channels(channels)
    return img
