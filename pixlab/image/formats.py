"""Which files pixlab reads, by suffix, and the one error message for a file that cannot be read.

Kept apart from the readers so that listing an image folder (which only needs the suffixes) does not
import tifffile, zarr or bioio.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TIFF_SUFFIXES", "SLIDE_SUFFIXES", "PIL_SUFFIXES", "ZARR_SUFFIXES", "BIOIO_SUFFIXES",
           "IMAGE_SUFFIXES", "FORMATS_EXTRA", "stem", "unreadable", "is_image_path", "is_label_file",
           "list_image_folder"]

#: Read with tifffile. Whole-slide formats that are TIFF inside (Aperio SVS, Hamamatsu NDPI,
#: Leica SCN, Akoya/PerkinElmer QPTIFF) are listed here too: tifffile knows their layouts.
SLIDE_SUFFIXES = (".svs", ".ndpi", ".scn", ".qptiff")
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2") + SLIDE_SUFFIXES
#: Small formats read whole with Pillow.
PIL_SUFFIXES = (".png", ".jpg", ".jpeg")
#: OME-Zarr (NGFF) folders.
ZARR_SUFFIXES = (".ome.zarr", ".zarr")
#: Vendor formats read through bioio plugins (the optional extra ``pixlab[formats]``).
BIOIO_SUFFIXES = (".czi", ".nd2", ".lif")
IMAGE_SUFFIXES = TIFF_SUFFIXES + PIL_SUFFIXES + ZARR_SUFFIXES + BIOIO_SUFFIXES

#: The pip extra that installs the bioio plugins.
FORMATS_EXTRA = "pixlab[formats]"

_STEM_SUFFIXES = tuple(sorted((".ome.tiff", ".ome.tif", ".ome.btf") + IMAGE_SUFFIXES, key=len, reverse=True))


def stem(path) -> str:
    """File name without its image suffix (``slide.ome.tif`` -> ``slide``).

    Examples
    --------
    >>> stem("/data/slide.ome.tif"), stem("scan.ome.zarr"), stem("a.b.png")
    ('slide', 'scan', 'a.b')
    """
    name = Path(path).name
    lower = name.lower()
    for suffix in _STEM_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def is_image_path(path) -> bool:
    """True for a file with an image suffix or an OME-Zarr folder (``*.zarr``): what open_image reads."""
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        return name.endswith(ZARR_SUFFIXES)
    return p.is_file() and name.endswith(IMAGE_SUFFIXES) and not name.endswith(ZARR_SUFFIXES)


def is_label_file(name) -> bool:
    """Whether a file name is a pixlab labels file (``*.labels.png``, ``*.labels.zarr``, ...), not an image."""
    lower = Path(name).name.lower()
    return ".labels." in lower or lower.endswith(".labels")


def list_image_folder(folder) -> list[Path]:
    """The images of a folder, sorted by name: the one listing rule of every folder input.

    Not recursive; an OME-Zarr folder inside is one image; hidden files and pixlab labels files
    (:func:`is_label_file`) are left out. Empty when the folder holds no image (callers say what to do).
    """
    return sorted(p for p in Path(folder).iterdir()
                  if not p.name.startswith(".") and not is_label_file(p.name) and is_image_path(p))


def unreadable(path, reason) -> ValueError:
    """The error for a file that exists but cannot be read as an image."""
    return ValueError(
        f"cannot read image '{path}': {reason}; check the file is a complete TIFF/PNG/JPEG"
    )
