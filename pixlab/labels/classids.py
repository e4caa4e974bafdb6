"""Class-id arrays: the one dtype rule and the argmax label map.

Class ids are 1..K with 0 = unlabelled. They are stored as ``uint8`` for up to 255 classes and as
``uint16`` beyond (up to 65535): casting an argmax to ``uint8`` with 256+ classes silently wraps
class 256 to 0 ("unlabelled"), 257 to 1, ...
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_CLASSES", "label_dtype", "argmax_labels", "torch_label_dtype"]

MAX_CLASSES = 65535


def label_dtype(n_classes: int) -> np.dtype:
    """``uint8`` for up to 255 classes, ``uint16`` up to 65535.

    Examples
    --------
    >>> label_dtype(2), label_dtype(255), label_dtype(256)
    (dtype('uint8'), dtype('uint8'), dtype('uint16'))
    """
    if n_classes > MAX_CLASSES:
        raise ValueError(f"{n_classes} classes, but label images hold at most {MAX_CLASSES} classes; merge classes")
    return np.dtype(np.uint8 if n_classes <= 255 else np.uint16)


def argmax_labels(probs: np.ndarray, axis: int = 0) -> np.ndarray:
    """Class ids 1..K of the most probable class along ``axis`` (K = ``probs.shape[axis]``).

    Examples
    --------
    >>> p = np.zeros((300, 1, 2), np.float32); p[299, 0, 0] = p[0, 0, 1] = 1
    >>> argmax_labels(p).tolist(), argmax_labels(p).dtype
    ([[300, 1]], dtype('uint16'))
    """
    return (np.argmax(probs, axis=axis) + 1).astype(label_dtype(probs.shape[axis]))


def torch_label_dtype(n_classes: int):
    """The torch twin of :func:`label_dtype` (``torch.uint8`` or ``torch.uint16``)."""
    import torch
    return torch.uint8 if label_dtype(n_classes) == np.uint8 else torch.uint16
