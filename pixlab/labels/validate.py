"""Checking label images against an image and its classes.

Conventions shared by all of pixlab: a label image is a 2-D ``(Y, X)`` integer array where ``0`` means
"not labelled" and ``k = 1..N`` means class ``class_names[k - 1]``. Label images are ``uint8`` when
there are at most 255 classes and ``uint16`` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["validate_labels"]


def _label_dtype(n_classes: int) -> type:
    from pixlab.labels.classids import label_dtype
    return label_dtype(n_classes).type


def _check_class_names(class_names) -> list[str]:
    if isinstance(class_names, str):
        raise ValueError(
            f"class_names must be a list of names, got the string {class_names!r}; "
            f"pass e.g. [{class_names!r}, ...]"
        )
    names = list(class_names)
    if not names:
        raise ValueError("class_names is empty; give at least one class name, e.g. ['background', 'cells']")
    return names


def _as_integer_labels(labels, what: str = "labels") -> np.ndarray:
    """Check a label array is 2-D, whole-numbered and non-negative; return it as int64."""
    array = np.asarray(labels)
    if array.ndim != 2:
        raise ValueError(
            f"{what} must be a 2-D (Y, X) array but have shape {array.shape}; "
            "pass one single-channel label image per image"
        )
    if array.dtype == bool:
        return array.astype(np.int64)
    if array.dtype.kind == "f":
        if np.isnan(array).any():
            raise ValueError(
                f"{what} contain NaN; use 0 for unlabelled pixels and 1..N for classes"
            )
        if not np.isfinite(array).all():
            raise ValueError(
                f"{what} contain infinite values; use 0 for unlabelled pixels and 1..N for classes"
            )
        fractional = array[array != np.round(array)]
        if fractional.size:
            raise ValueError(
                f"{what} contain the non-integer value {float(fractional.flat[0])}; "
                "labels are class ids, round them or build them as an integer array"
            )
    elif array.dtype.kind not in "iu":
        raise ValueError(
            f"{what} have dtype {array.dtype} but must hold integer class ids; "
            "convert them with labels.astype(np.uint8)"
        )
    if array.size and array.min() < 0:
        raise ValueError(
            f"{what} contain the negative value {array.min()}; "
            "use 0 for unlabelled pixels and 1..N for classes"
        )
    return array.astype(np.int64, copy=False)


def validate_labels(labels, image_shape_yx, class_names: Sequence[str]) -> np.ndarray:
    """Check a label image against its image and class list and return it as a compact array.

    Parameters
    ----------
    labels : array_like, shape (Y, X)
        Integer class ids (0 = unlabelled, ``k`` = ``class_names[k - 1]``). Floats are accepted when
        they are whole numbers; booleans are read as 0/1.
    image_shape_yx : tuple of int
        ``(Y, X)`` of the image the labels belong to. A longer shape such as ``Image.shape``
        ``(C, Y, X)`` is accepted: its last two entries are used.
    class_names : sequence of str
        Names of classes ``1..N``.

    Returns
    -------
    numpy.ndarray, shape (Y, X)
        ``uint8`` for up to 255 classes, ``uint16`` beyond.

    Raises
    ------
    ValueError
        If the labels are not 2-D, do not match the image shape, contain NaN, negative, fractional
        or too-large class ids.

    Examples
    --------
    >>> validate_labels([[0, 1], [2, 0]], (2, 2), ["background", "cells"]).dtype
    dtype('uint8')
    """
    names = _check_class_names(class_names)
    dtype = _label_dtype(len(names))
    array = np.asarray(labels)
    if not (array.ndim == 2 and array.dtype.kind == "u"):  # unsigned ints are checked as they are:
        array = _as_integer_labels(labels)               # an int64 copy is 8 bytes a pixel (a slide's GB)
    shape_yx = tuple(int(s) for s in tuple(image_shape_yx)[-2:])
    if array.shape != shape_yx:
        raise ValueError(
            f"labels have shape {array.shape} but the image is {shape_yx} (Y, X); "
            "draw labels on the same image or resize them"
        )
    top = int(array.max()) if array.size else 0
    if top > len(names):
        raise ValueError(
            f"labels contain class id {top} but only {len(names)} class names were given "
            f"({', '.join(map(repr, names))}); add the class name or relabel"
        )
    return array.astype(dtype)
