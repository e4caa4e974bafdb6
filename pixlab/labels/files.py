"""Label image files: ``.labels.png`` (up to 255 classes) and ``.labels.tif`` (more), written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pixlab._atomic import atomic_path
from pixlab.labels.validate import _as_integer_labels

__all__ = ["save_labels", "load_labels"]


_PNG_SUFFIXES = (".png",)


_TIFF_SUFFIXES = (".tif", ".tiff")


def save_labels(path: str | os.PathLike, labels) -> None:
    """Write a label image as PNG (up to 255 classes) or TIFF, atomically.

    Parameters
    ----------
    path : str or PathLike
        Output file ending in ``.png``, ``.tif`` or ``.tiff``. PNG files are 8-bit grey images of the
        class ids; TIFF files are ``uint8`` or ``uint16``.
    labels : array_like, shape (Y, X)
        Class ids (0 = unlabelled).

    Raises
    ------
    ValueError
        If the suffix is not supported, or labels above 255 are saved as PNG.
    FileNotFoundError
        If the output folder does not exist.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _PNG_SUFFIXES + _TIFF_SUFFIXES:
        raise ValueError(
            f"cannot save labels as '{path.name}': suffix {path.suffix!r} is not supported; "
            "use .png (up to 255 classes) or .tif"
        )
    array = _as_integer_labels(labels)
    top = int(array.max()) if array.size else 0
    if top > 65535:
        raise ValueError(f"labels contain class id {top}, above the uint16 limit 65535; relabel them")
    dtype = np.uint8 if top <= 255 else np.uint16
    if suffix in _PNG_SUFFIXES and dtype != np.uint8:
        raise ValueError(
            f"labels contain class id {top} which does not fit an 8-bit PNG ('{path.name}'); "
            "save them as .tif instead"
        )
    array = array.astype(dtype)
    with atomic_path(path) as tmp:
        if suffix in _PNG_SUFFIXES:
            from PIL import Image as PILImage

            PILImage.fromarray(array, mode="L").save(tmp, format="PNG")
        else:
            import tifffile

            tifffile.imwrite(tmp, array, compression="zlib")


def load_labels(path: str | os.PathLike, shape=None) -> np.ndarray:
    """Read a label image written by :func:`save_labels` (or any single-channel PNG/TIFF).

    Parameters
    ----------
    path : str or PathLike
        A ``.png``, ``.tif`` or ``.tiff`` file of class ids.
    shape : tuple of int, optional
        Expected ``(Y, X)`` (or an image shape ``(C, Y, X)``, whose last two entries are used).

    Returns
    -------
    numpy.ndarray, shape (Y, X)
        ``uint8`` or ``uint16`` class ids.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a single-channel integer image or its shape differs from ``shape``.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"label file '{path}' is a folder; give the label file of one image (a .png or "
                                f".tif of class ids), one per image in the same order as the images")
    if not path.is_file():
        raise FileNotFoundError(f"label file '{path}' does not exist; check the path or save labels first")
    suffix = path.suffix.lower()
    if suffix in _PNG_SUFFIXES:
        from PIL import Image as PILImage

        with PILImage.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16", "1"):
                raise ValueError(
                    f"label file '{path.name}' is a {im.mode} colour image; save class ids as a "
                    "single-channel (grey or palette) image"
                )
            array = np.asarray(im)
    elif suffix in _TIFF_SUFFIXES:
        import tifffile

        array = np.squeeze(tifffile.imread(path))
    else:
        raise ValueError(
            f"cannot read labels from '{path.name}': suffix {path.suffix!r} is not supported; "
            "use .png or .tif"
        )
    array = _as_integer_labels(array, what=f"labels in '{path.name}'")
    if shape is not None:
        shape_yx = tuple(int(s) for s in tuple(shape)[-2:])
        if array.shape != shape_yx:
            raise ValueError(
                f"labels in '{path.name}' have shape {array.shape} but the image is {shape_yx} "
                "(Y, X); load the labels drawn on this image or resize them"
            )
    top = int(array.max()) if array.size else 0
    return array.astype(np.uint8 if top <= 255 else np.uint16)
