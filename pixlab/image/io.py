"""Reading and writing microscopy images as channels-first ``(C, Y, X)`` arrays (the public entry points).

The code lives in modules by concern; this module keeps the import path ``pixlab.image.io`` that the
rest of pixlab and users' scripts use:

- :mod:`pixlab.image.image`: the :class:`Image` class (pixels, channel names, pixel size, levels);
- :mod:`pixlab.image.open`: :func:`open_image` and which reader handles which file;
- :mod:`pixlab.image.tiff` / :mod:`pixlab.image.tiffmeta`: TIFF-based files and their metadata;
- :mod:`pixlab.image.omezarr`, :mod:`pixlab.image.bioio_reader`, :mod:`pixlab.image.pil`: the others;
- :mod:`pixlab.image.layout`: array axis rules (``axes=``);
- :mod:`pixlab.image.writer`: :func:`write_ome_tiff`, the one OME-TIFF writer.
"""

from pixlab.image.formats import PIL_SUFFIXES, TIFF_SUFFIXES
from pixlab.image.formats import stem as _stem  # noqa: F401  (used by the app and inference)
from pixlab.image.image import Image
from pixlab.image.open import open_image
from pixlab.image.writer import write_ome_tiff

__all__ = ["Image", "open_image", "write_ome_tiff", "TIFF_SUFFIXES", "PIL_SUFFIXES"]
