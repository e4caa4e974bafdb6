"""Vendor formats (Zeiss CZI, Nikon ND2, Leica LIF) through bioio and its plugins, lazily.

These readers are an optional extra, ``pip install 'pixlab[formats]'``: they bring compiled vendor
libraries that most users (TIFF/OME-Zarr only) do not need. bioio gives every format the same
``TCZYX(S)`` dask array per resolution level, channel names and physical pixel sizes.
"""

from __future__ import annotations

import os

from pixlab.image.formats import FORMATS_EXTRA, unreadable
from pixlab.image.image import Image, choose_pixel_size, default_names
from pixlab.image.layout import axes_to_cyx

__all__ = ["open_bioio", "PLUGINS", "missing_extra"]

#: Suffix -> the bioio plugin package that reads it.
PLUGINS = {".czi": "bioio-czi", ".nd2": "bioio-nd2", ".lif": "bioio-lif"}


def missing_extra(path, package: str) -> ImportError:
    """The error for a vendor file whose reader is not installed: names the extra and the plugin."""
    suffix = os.path.splitext(str(path))[1].lower()
    return ImportError(
        f"reading '{path}' ({suffix} files) needs the optional readers: pip install '{FORMATS_EXTRA}' "
        f"(installs bioio and {PLUGINS.get(suffix, 'its plugins')}; {package} is missing); or convert "
        f"the file to OME-TIFF (e.g. with QuPath or bfconvert)"
    )


def _bioimage(path, reader):
    from bioio import BioImage

    return BioImage(path, reader=reader) if reader is not None else BioImage(path)


def _plugin_reader(path):
    """The plugin's Reader class for ``path`` (so that bioio does not try every installed plugin)."""
    import importlib

    package = PLUGINS.get(os.path.splitext(str(path))[1].lower())
    if package is None:
        return None
    try:
        return importlib.import_module(package.replace("-", "_")).Reader
    except ImportError:
        raise missing_extra(path, package) from None


def open_bioio(path: str, axes: str | None = None, pixel_size=None, reader=None) -> Image:
    """Open the first scene of a CZI/ND2/LIF file (or anything a bioio plugin reads) as a lazy Image.

    Parameters
    ----------
    path : str
    axes : str, optional
        Replaces bioio's dimension order (one letter per axis of its dask array).
    pixel_size : float or (float, float), optional
        Replaces the file's pixel size (µm).
    reader : bioio Reader class, optional
        The plugin to use; default: chosen from the suffix (:data:`PLUGINS`).
    """
    try:
        import bioio  # noqa: F401
    except ImportError:
        raise missing_extra(path, "bioio") from None
    if reader is None:
        reader = _plugin_reader(path)
    try:
        first = _bioimage(path, reader)
        n_levels = len(first.resolution_levels) if hasattr(first, "resolution_levels") else 1
        scenes = list(first.scenes)
        # One BioImage per level: a level's dask array keeps reading from the object it came from,
        # so switching one object's level would change arrays handed out before.
        images = [first] + [_bioimage(path, reader) for _ in range(1, n_levels)]
        for i, im in enumerate(images):
            if i:
                im.set_resolution_level(i)
        arrays = [im.dask_data for im in images]
        order = str(first.dims.order)
        names = list(first.channel_names or [])
        sizes = first.physical_pixel_sizes
    except ImportError as exc:
        raise missing_extra(path, getattr(exc, "name", None) or "a bioio plugin") from None
    except Exception as exc:  # plugins raise their own error types for damaged files
        raise unreadable(path, f"{type(exc).__name__}: {exc}") from exc
    if len(scenes) > 1:
        import warnings

        warnings.warn(f"'{path}' holds {len(scenes)} scenes {scenes[:5]}; pixlab reads the first, "
                      f"{scenes[0]!r} (export the others as separate files to use them)", stacklevel=3)
    levels, rgb = [], False
    for arr in arrays:
        lv, rgb = axes_to_cyx(arr, axes or order, f"image '{path}'")
        levels.append(lv)

    def read_size():
        if sizes is None or sizes.Y is None or sizes.X is None:
            return None
        if not (sizes.Y > 0 and sizes.X > 0):
            raise ValueError(
                f"image '{path}' declares a pixel size of {sizes.X} µm, which is not a size; pass the real "
                f"one with pixlab.open_image(path, pixel_size=...), e.g. pixel_size=0.5")
        return (float(sizes.Y), float(sizes.X))

    pixel_size = choose_pixel_size(pixel_size, read_size, path)
    n = levels[0].shape[0]
    if len(names) != n or not all(names):
        names = default_names(n, rgb or levels[0].dtype.name == "uint8")
    return Image(levels[0], [str(c) for c in names], pixel_size, levels, path=path)
