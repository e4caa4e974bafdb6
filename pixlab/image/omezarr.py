"""OME-Zarr (NGFF) images, lazily, with their multiscale levels, channel labels and pixel size.

ome-zarr-py parses the NGFF metadata (0.4 and 0.5) and gives one dask array per level; pixlab only
maps its axes onto ``(C, Y, X)`` and reads the level-0 scale as the pixel size.
"""

from __future__ import annotations

import warnings

from pixlab.image.formats import unreadable
from pixlab.image.image import Image, choose_pixel_size, default_names
from pixlab.image.layout import axes_to_cyx
from pixlab.image.tiffmeta import UNIT_TO_UM

__all__ = ["open_ome_zarr", "is_zarr_folder"]


def is_zarr_folder(path) -> bool:
    """A folder that holds zarr metadata (v3 ``zarr.json`` or v2 ``.zgroup``/``.zattrs``)."""
    import os

    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, f))
                                       for f in ("zarr.json", ".zgroup", ".zattrs"))


def _pixel_size(meta, axes, path):
    transforms = (meta.get("coordinateTransformations") or [[]])[0]
    scale = next((t.get("scale") for t in transforms if t.get("type") == "scale"), None)
    if scale is None or len(scale) != len(axes):
        return None
    size = []
    for letter in "YX":
        i = next((k for k, a in enumerate(axes) if str(a.get("name", "")).upper() == letter), None)
        if i is None:
            return None
        factor = UNIT_TO_UM.get(str(axes[i].get("unit", "")).lower())
        if factor is None:
            return None  # no unit: the scale is in unknown units (pixlab writes 1.0 then)
        value = float(scale[i])
        if not value > 0:
            raise ValueError(
                f"image '{path}' declares a pixel size of {value} in its OME-Zarr scale, which is not a size; "
                f"pass the real one with pixlab.open_image(path, pixel_size=...) in µm, e.g. pixel_size=0.5")
        size.append(value * factor)
    return tuple(size)


def open_ome_zarr(path: str, axes: str | None = None, pixel_size=None) -> Image:
    """Open the first image of an OME-Zarr folder as a lazy :class:`Image`.

    Parameters
    ----------
    path : str
        The ``*.ome.zarr`` folder.
    axes : str, optional
        Replaces the axis names of the file (one letter per axis).
    pixel_size : float or (float, float), optional
        Replaces the file's pixel size (µm).
    """
    with warnings.catch_warnings():  # ome_zarr's own imports warn about deprecated names
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.io import parse_url
        from ome_zarr.reader import Multiscales, Reader

    try:
        location = parse_url(path, mode="r")
        nodes = list(Reader(location)()) if location is not None else []
    except Exception as exc:  # ome_zarr raises a variety of errors on broken metadata
        raise unreadable(path, f"{type(exc).__name__}: {exc}") from exc
    node = next((n for n in nodes if any(isinstance(s, Multiscales) for s in n.specs)), None)
    if node is None or not node.data:
        raise unreadable(path, "no OME-Zarr image (multiscales metadata) in the folder")
    meta = node.metadata
    file_axes = meta.get("axes") or []
    letters = axes or "".join(str(a.get("name", "?"))[:1].upper() for a in file_axes)
    if not letters:
        letters = "TCZYX"[-node.data[0].ndim:]  # NGFF 0.1-0.3 had no axes: they were TCZYX
    levels, rgb = [], False
    for arr in node.data:
        lv, rgb = axes_to_cyx(arr, letters, f"image '{path}'")
        levels.append(lv)
    pixel_size = choose_pixel_size(pixel_size, lambda: _pixel_size(meta, file_axes, path) if file_axes else None,
                                   path)
    names = meta.get("channel_names")
    n = levels[0].shape[0]
    if not names or len(names) != n or not all(names):
        names = default_names(n, rgb or levels[0].dtype.name == "uint8")
    return Image(levels[0], [str(c) for c in names], pixel_size, levels, path=path)
