"""The one implementation of the segmentation metrics: confusion matrix, IoU, Dice, precision, recall.

Rows of a confusion matrix are the labelled (true) class, columns the predicted class, class ``k``
at index ``k - 1``; only labelled pixels count. Training (:mod:`pixlab.training.losses`),
cross-validation, evaluation and the benchmarks all count here.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["confusion_matrix", "metrics_from_confusion", "iou_from_confusion", "mean_iou", "EPS"]

#: Probabilities are clamped here before ``log()``: a confident mistake costs ~16, not inf.
EPS = 1e-7


def confusion_matrix(labels, prediction, n_classes: int) -> np.ndarray:
    """Confusion matrix of a prediction against sparse labels, on labelled pixels only.

    Parameters
    ----------
    labels : array_like of int
        0 = unlabelled, ``k`` = class ``k`` (1..n_classes).
    prediction : array_like of int
        Predicted class ids 1..n_classes, same shape as ``labels``.
    n_classes : int
        Number of classes K.

    Returns
    -------
    numpy.ndarray, shape (K, K), int64
        ``cm[i, j]`` = labelled pixels of class ``i + 1`` predicted as class ``j + 1``.

    Examples
    --------
    >>> confusion_matrix([[0, 1, 1], [2, 2, 1]], [[2, 1, 2], [2, 1, 1]], 2).tolist()
    [[2, 1], [1, 1]]
    """
    lab = np.asarray(labels).ravel().astype(np.int64)
    pred = np.asarray(prediction).ravel().astype(np.int64)
    if lab.shape != pred.shape:
        raise ValueError(f"labels ({np.shape(labels)}) and prediction ({np.shape(prediction)}) must have the "
                         f"same shape")
    m = lab > 0
    lab, pred = lab[m] - 1, pred[m] - 1
    if lab.size and (lab.max() >= n_classes or pred.min() < 0 or pred.max() >= n_classes):
        raise ValueError(f"labels and predictions must hold class ids 1..{n_classes} (0 = unlabelled in labels), "
                         f"got labels up to {lab.max() + 1} and predictions {pred.min() + 1}..{pred.max() + 1}")
    # One bincount over (true, predicted) pairs: the same counting as sklearn.metrics.confusion_matrix
    # without its per-call label validation, which dominates on millions of pixels.
    return np.bincount(lab * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def metrics_from_confusion(cm, class_names: Sequence[str]):
    """Per-class metrics from a confusion matrix (rows = labelled class, columns = predicted).

    Parameters
    ----------
    cm : array_like, shape (K, K)
        Pixel counts, e.g. from :func:`confusion_matrix`.
    class_names : sequence of str
        K names.

    Returns
    -------
    pandas.DataFrame
        One row per class: ``iou``, ``dice``, ``precision``, ``recall``, ``pixels`` (labelled pixels of
        the class), ``predicted`` (labelled pixels predicted as the class), ``note``. A class without
        labelled pixels has NaN metrics and a note: with sparse labels, pixels predicted as that class
        are only known to be wrong, its recall and IoU cannot be measured.

    Examples
    --------
    >>> df = metrics_from_confusion([[3, 1], [0, 4]], ["bg", "cell"])
    >>> [round(v, 3) for v in df["iou"]]
    [0.75, 0.8]
    """
    import pandas as pd

    cm = np.asarray(cm, dtype=np.float64)
    names = list(class_names)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(names):
        raise ValueError(f"cm must be a square (K, K) matrix for the {len(names)} class names, got shape {cm.shape}")
    tp = np.diag(cm)
    labelled = cm.sum(1)
    predicted = cm.sum(0)
    fp, fn = predicted - tp, labelled - tp
    present = labelled > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(present, 2 * tp / (2 * tp + fp + fn), np.nan)
        recall = np.where(present, tp / labelled, np.nan)
        precision = np.where(present & (predicted > 0), tp / predicted, np.nan)
    iou = iou_from_confusion(cm)
    notes = ["" if p else "no labelled pixels: metrics undefined (NaN)" for p in present]
    for k in np.flatnonzero(present & (predicted == 0)):
        notes[k] = "never predicted: precision undefined (NaN)"
    return pd.DataFrame({"class": names, "iou": iou, "dice": dice, "precision": precision, "recall": recall,
                         "pixels": labelled.astype(np.int64), "predicted": predicted.astype(np.int64),
                         "note": notes})


def iou_from_confusion(cm) -> np.ndarray:
    """Per-class IoU ``tp / (tp + fp + fn)`` of a (K, K) confusion matrix; NaN for a class without
    labelled pixels (with sparse labels its IoU cannot be measured).

    Examples
    --------
    >>> iou_from_confusion([[3, 1], [0, 4]]).round(3).tolist()
    [0.75, 0.8]
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    labelled = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(labelled > 0, tp / (labelled + cm.sum(0) - tp), np.nan)


def mean_iou(cm) -> float:
    """Mean IoU over the classes with labelled pixels (NaN when none has any)."""
    iou = iou_from_confusion(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
