"""Edit labels from a model's prediction: accept confident pixels as labels, relabel likely mistakes.

Core module (no Jupyter imports), the idea of the QuPath extension's "Adjust": after training, the
prediction is often right over large areas, and turning its confident part into labels is faster than
brushing it. Both functions work on one crop (a drawn polygon's or box's bounding box, or the view):
arrays in, array out; the session applies the result as one undoable step.
"""

from __future__ import annotations

import numpy as np

__all__ = ["accept_prediction", "relabel_mistake"]


def _check(probs, labels, what: str = "labels"):
    p = np.asarray(probs)
    lab = np.asarray(labels)
    if p.ndim != 3:
        raise ValueError(f"probs must be (K, h, w) class probabilities, got shape {p.shape}")
    if lab.shape != p.shape[1:]:
        raise ValueError(f"{what} have shape {lab.shape} but the prediction is {p.shape[1:]}; give the crop "
                         f"of the same region")
    return p, lab


def _class_ids(classes, n_classes: int) -> np.ndarray:
    ids = np.unique(np.asarray(list(classes), dtype=np.int64)) if classes is not None else np.arange(1, n_classes + 1)
    if ids.size == 0:
        raise ValueError("choose at least one class whose prediction to accept")
    bad = ids[(ids < 1) | (ids > n_classes)]
    if bad.size:
        raise ValueError(f"class id(s) {bad.tolist()} are not among the model's classes 1..{n_classes}")
    return ids


def _threshold(threshold) -> float:
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a probability in (0, 1], got {threshold!r}; e.g. 0.9") from None
    if not 0 < t <= 1:
        raise ValueError(f"threshold must be a probability in (0, 1], got {threshold!r}; e.g. 0.9")
    return t


def accept_prediction(probs, labels, classes=None, threshold: float = 0.9, *, inside=None,
                      only_unlabelled: bool = True) -> np.ndarray:
    """Labels with the model's confident prediction accepted: pixels whose most likely class is one of
    ``classes`` with probability ``>= threshold`` take that class.

    Parameters
    ----------
    probs : array (K, h, w)
        Class probabilities of the crop; ``probs[k - 1]`` is class ``k``.
    labels : array (h, w) int
        Current labels of the same crop (0 = unlabelled).
    classes : iterable of int, optional
        Class ids ``1..K`` to accept (default all).
    threshold : float
        Smallest probability accepted, in (0, 1].
    inside : array (h, w) bool, optional
        Only these pixels (a drawn polygon or box); default the whole crop.
    only_unlabelled : bool
        Keep every labelled pixel as it is (default). False lets the prediction overwrite labels too.

    Returns
    -------
    numpy.ndarray (h, w)
        A new array, ``labels``' dtype: ``labels`` with the accepted pixels set.

    Examples
    --------
    >>> p = np.array([[[0.95, 0.6]], [[0.05, 0.4]]], np.float32)     # 2 classes, 1 x 2 pixels
    >>> accept_prediction(p, np.zeros((1, 2), np.uint8), threshold=0.9).tolist()
    [[1, 0]]
    """
    p, lab = _check(probs, labels)
    ids = _class_ids(classes, p.shape[0])
    t = _threshold(threshold)
    pred = p.argmax(0) + 1
    take = np.isin(pred, ids) & (np.take_along_axis(p, pred[None] - 1, 0)[0] >= t)
    if inside is not None:
        inside = np.asarray(inside, bool)
        if inside.shape != lab.shape:
            raise ValueError(f"inside has shape {inside.shape} but the labels {lab.shape}")
        take &= inside
    if only_unlabelled:
        take &= lab == 0
    out = lab.copy()
    out[take] = pred[take].astype(lab.dtype)
    return out


def relabel_mistake(probs, labels, labelled_class: int, predicted_class: int, min_confidence: float = 0.9,
                    *, inside=None) -> np.ndarray:
    """Labels with one kind of possible mistake corrected: pixels labelled ``labelled_class`` that the
    model calls ``predicted_class`` with probability ``>= min_confidence`` become ``predicted_class``.

    The same pixels :func:`pixlab.analysis.active.label_refinements` flags (one row of the guide's
    "possible label mistakes" list is one connected group of them; pass its box as the crop).

    Parameters
    ----------
    probs : array (K, h, w)
    labels : array (h, w) int
    labelled_class, predicted_class : int
        Class ids ``1..K`` (different).
    min_confidence : float
        In (0, 1], as in the review.
    inside : array (h, w) bool, optional
        Only these pixels.

    Returns
    -------
    numpy.ndarray (h, w)
        A new array with those pixels relabelled.
    """
    p, lab = _check(probs, labels)
    a, b = int(labelled_class), int(predicted_class)
    _class_ids([a, b], p.shape[0])
    if a == b:
        raise ValueError(f"labelled and predicted class are the same ({a}); nothing to relabel")
    t = _threshold(min_confidence)
    pred = p.argmax(0) + 1
    take = (lab == a) & (pred == b) & (p[b - 1] >= t)
    if inside is not None:
        take &= np.asarray(inside, bool)
    out = lab.copy()
    out[take] = b
    return out
