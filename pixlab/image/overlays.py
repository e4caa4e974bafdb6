"""Semi-transparent RGBA layers of label maps and class probabilities, and PNG encoding for canvases."""

from __future__ import annotations

import io

import numpy as np

__all__ = ["label_overlay", "probability_overlay", "encode_png"]


def _check_opacity(opacity) -> float:
    try:
        value = float(opacity)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0 <= value <= 1:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity!r}; e.g. 0.5")
    return value


def label_overlay(labels, colours, opacity: float = 0.5) -> np.ndarray:
    """Colour a label image: class ``k`` gets ``colours[k - 1]``, unlabelled pixels are transparent.

    Parameters
    ----------
    labels : array_like, shape (h, w)
        Class ids, 0 = unlabelled.
    colours : list of colours
        One per class (``[r, g, b]`` or ``"#rrggbb"``).
    opacity : float
        Alpha of labelled pixels, 0-1.

    Returns
    -------
    numpy.ndarray, shape (h, w, 4)
        uint8 RGBA.

    Examples
    --------
    >>> label_overlay(np.array([[0, 2]]), [[255, 0, 0], [0, 0, 255]], 1.0).tolist()
    [[[0, 0, 0, 0], [0, 0, 255, 255]]]
    """
    from pixlab.labels.masks import parse_colour

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D (h, w) array, got shape {labels.shape}")
    alpha = round(_check_opacity(opacity) * 255)
    lut = np.zeros((len(colours) + 1, 4), np.uint8)
    for k, c in enumerate(colours, start=1):
        lut[k, :3] = parse_colour(c)
        lut[k, 3] = alpha
    top = int(labels.max()) if labels.size else 0
    if top > len(colours):
        raise ValueError(f"labels contain class id {top} but only {len(colours)} colours were given; "
                         "give one colour per class")
    return lut[labels]


def probability_overlay(probs, colours, opacity: float = 0.5, by_confidence: bool = True) -> np.ndarray:
    """Colour class probabilities: each pixel gets the colour of its most probable class.

    Parameters
    ----------
    probs : array_like, shape (K, h, w)
        ``probs[k - 1]`` = probability of class ``k``.
    colours : list of colours
        One per class.
    opacity : float
        Alpha of a fully confident pixel, 0-1.
    by_confidence : bool
        Scale alpha by the confidence ``(p_max - 1/K) / (1 - 1/K)``, so uncertain pixels fade out.

    Returns
    -------
    numpy.ndarray, shape (h, w, 4)
        uint8 RGBA.
    """
    from pixlab.labels.masks import parse_colour

    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3:
        raise ValueError(f"probs must be a (K, h, w) array, got shape {probs.shape}")
    k = probs.shape[0]
    if len(colours) < k:
        raise ValueError(f"{len(colours)} colours were given for {k} classes; give one colour per class")
    opacity = _check_opacity(opacity)
    lut = np.array([parse_colour(c) for c in colours[:k]], np.uint8)
    best = np.argmax(probs, axis=0)
    out = np.empty(best.shape + (4,), np.uint8)
    out[..., :3] = lut[best]
    if by_confidence and k > 1:
        pmax = np.take_along_axis(probs, best[None], axis=0)[0]
        conf = np.clip((pmax - 1.0 / k) / (1.0 - 1.0 / k), 0, 1)
    else:
        conf = np.ones(best.shape, np.float32)
    out[..., 3] = np.rint(conf * opacity * 255).astype(np.uint8)
    return out


def encode_png(array) -> bytes:
    """PNG bytes of a (h, w), (h, w, 3) or (h, w, 4) uint8 array (for image widgets)."""
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
