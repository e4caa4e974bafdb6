"""Guided annotation: where to brush next, and which existing strokes look wrong.

Core module (no Jupyter imports). The brush annotator shows :func:`suggest_regions` boxes as
"annotate here next" and pans to them; :func:`label_refinements` lists strokes to double-check.

Uncertainty sampling is the classic active-learning heuristic: the pixels the model is least sure
about are the most informative to label (the guide: "include hard cases", "annotate boundaries").
Boxes right next to existing strokes are discounted, because the model has already been told
about that neighbourhood. ``bench/active_annotation.py`` measures the gain over random boxes.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["uncertainty", "suggest_regions", "label_refinements", "strokes_in_box", "MEASURES"]

#: Uncertainty measures accepted by :func:`uncertainty` and :func:`suggest_regions`.
MEASURES = ("entropy", "margin", "confidence")


def _probs(model, image, probs) -> np.ndarray:
    if probs is not None:
        p = np.asarray(probs, dtype=np.float32)
        if p.ndim != 3:
            raise ValueError(f"probs must be a (K, Y, X) array from model.predict, got shape {p.shape}")
        return p
    if model is None:
        raise ValueError("give a model (to predict the image) or probs=model.predict(image)")
    return model.predict(image)


def uncertainty(probs, measure: str = "entropy") -> np.ndarray:
    """Per-pixel uncertainty in [0, 1] from class probabilities.

    Parameters
    ----------
    probs : array_like, shape (K, Y, X)
    measure : {"entropy", "margin", "confidence"}
        "entropy": Shannon entropy / log K. "margin": 1 - (best - second best probability).
        "confidence": 1 - max probability.

    Returns
    -------
    numpy.ndarray (Y, X) float32

    Examples
    --------
    >>> p = np.array([[[1.0, 0.5]], [[0.0, 0.5]]])
    >>> uncertainty(p, "margin").tolist()
    [[0.0, 1.0]]
    """
    p = np.asarray(probs, dtype=np.float32)
    if p.ndim != 3 or p.shape[0] < 2:
        raise ValueError(f"probs must be (K, Y, X) with K >= 2 classes, got shape {p.shape}")
    if measure == "entropy":
        return (-(p * np.log(np.clip(p, 1e-7, 1))).sum(0) / math.log(p.shape[0])).astype(np.float32)
    srt = np.sort(p, axis=0)
    if measure == "margin":
        return (1 - (srt[-1] - srt[-2])).astype(np.float32)
    if measure == "confidence":
        return (1 - srt[-1]).astype(np.float32)
    raise ValueError(f"measure={measure!r} is not known; choose one of {', '.join(MEASURES)}")


def _box_size(box, shape) -> tuple[int, int]:
    if isinstance(box, (int, np.integer)) and not isinstance(box, bool):
        box = (box, box)
    try:
        by, bx = (int(v) for v in box)
    except (TypeError, ValueError):
        by = bx = 0
    if by < 1 or bx < 1:
        raise ValueError(f"box must be a positive size in pixels (int or (height, width)), got {box!r}; e.g. 64")
    return min(by, shape[0]), min(bx, shape[1])


def suggest_regions(model, image, labels=None, *, box=64, n: int = 5, measure: str = "entropy", probs=None,
                    label_distance: float | None = None, stride: int | None = None):
    """Rank boxes of an image by model uncertainty: where annotating next teaches the model most.

    Parameters
    ----------
    model : pixlab.Model or None
        Predicts ``image`` unless ``probs`` is given.
    image : Image, array or path
    labels : array_like (Y, X), optional
        Existing strokes; uncertainty is discounted near them by ``1 - exp(-d / label_distance)``
        (``d`` = distance to the nearest labelled pixel), so boxes already annotated rank low.
    box : int or (int, int)
        Box size in full-resolution pixels.
    n : int
        Number of boxes; boxes do not overlap.
    measure : {"entropy", "margin", "confidence"}
        See :func:`uncertainty`.
    probs : array (K, Y, X), optional
        ``model.predict(image)`` when already computed.
    label_distance : float, optional
        Discount length in pixels (default: half the box side).
    stride : int, optional
        Candidate box spacing (default: a quarter of the box side).

    Returns
    -------
    pandas.DataFrame
        Best first: ``rank``, ``y0, y1, x0, x1``, ``score`` (mean discounted uncertainty),
        ``uncertainty`` (mean uncertainty, undiscounted), ``labelled`` (fraction of labelled pixels).
    """
    import pandas as pd
    from scipy import ndimage as ndi

    p = _probs(model, image, probs)
    u = uncertainty(p, measure)
    H, W = u.shape
    by, bx = _box_size(box, (H, W))
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    weight = np.ones_like(u)
    lab = None
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != (H, W):
            raise ValueError(f"labels have shape {lab.shape} but the image is {(H, W)}; give the labels of this image")
        if lab.any():
            d = ndi.distance_transform_edt(lab == 0)
            scale = float(label_distance) if label_distance else max(by, bx) / 2
            weight = (1 - np.exp(-d / scale)).astype(np.float32)
    # Box means at every position (scipy's box filter); the window of size b at index i spans
    # [i - b // 2, i - b // 2 + b), so the box starting at y0 is read at y0 + b // 2.
    mean_s = ndi.uniform_filter(u * weight, size=(by, bx), mode="constant")
    mean_u = ndi.uniform_filter(u, size=(by, bx), mode="constant")
    step = int(stride or max(1, min(by, bx) // 4))
    ys = np.unique(np.r_[np.arange(0, H - by + 1, step), H - by])
    xs = np.unique(np.r_[np.arange(0, W - bx + 1, step), W - bx])
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    gy, gx = gy.ravel(), gx.ravel()
    score = mean_s[gy + by // 2, gx + bx // 2]
    order = np.argsort(-score, kind="stable")
    gy, gx, score = gy[order], gx[order], score[order]
    free = np.ones(gy.size, bool)
    rows = []
    for _ in range(int(n)):
        idx = np.flatnonzero(free)
        if not idx.size:
            break
        j = idx[0]
        y0, x0 = int(gy[j]), int(gx[j])
        lab_frac = float((lab[y0:y0 + by, x0:x0 + bx] > 0).mean()) if lab is not None else 0.0
        rows.append({"rank": len(rows) + 1, "y0": y0, "y1": y0 + by, "x0": x0, "x1": x0 + bx,
                     "score": float(score[j]), "uncertainty": float(mean_u[y0 + by // 2, x0 + bx // 2]),
                     "labelled": lab_frac})
        free &= ~((np.abs(gy - y0) < by) & (np.abs(gx - x0) < bx))  # no overlap with chosen boxes
    return pd.DataFrame(rows, columns=["rank", "y0", "y1", "x0", "x1", "score", "uncertainty", "labelled"])


def label_refinements(model, image, labels, *, probs=None, min_confidence: float = 0.9, min_pixels: int = 5,
                      class_names=None):
    """Labelled pixels the model confidently disagrees with: possible annotation mistakes.

    Parameters
    ----------
    model : pixlab.Model or None
        Predicts ``image`` unless ``probs`` is given; also supplies class names.
    image : Image, array or path
    labels : array_like (Y, X)
        Sparse labels (0 = unlabelled).
    probs : array (K, Y, X), optional
    min_confidence : float
        Only pixels whose predicted class has at least this probability.
    min_pixels : int
        Smaller connected groups are ignored.
    class_names : list of str, optional
        Default: ``model.class_names``.

    Returns
    -------
    pandas.DataFrame
        One row per connected group of such pixels (same label, same predicted class), largest
        ``pixels * confidence`` first: ``class``, ``predicted``, ``confidence`` (mean probability of
        the predicted class), ``pixels``, ``stroke_fraction`` (share of that class's labelled pixels in
        the box), ``y0, y1, x0, x1`` (bounding box).
    """
    import pandas as pd
    from skimage.measure import label as cc_label
    from skimage.measure import regionprops

    p = _probs(model, image, probs)
    K = p.shape[0]
    names = list(class_names or (model.class_names if model is not None else [f"class {k}" for k in range(1, K + 1)]))
    lab = np.asarray(labels)
    if lab.shape != p.shape[1:]:
        raise ValueError(f"labels have shape {lab.shape} but the prediction is {p.shape[1:]}; "
                         f"give the labels of this image")
    if not 0 < float(min_confidence) <= 1:
        raise ValueError(f"min_confidence must be in (0, 1], got {min_confidence!r}; e.g. 0.9")
    if lab.max() > K:
        raise ValueError(f"labels contain class id {int(lab.max())} but the model has {K} classes")
    pred = p.argmax(0) + 1
    conf = p.max(0)
    suspect = (lab > 0) & (pred != lab) & (conf >= float(min_confidence))
    # One code per (label, predicted) pair, so a component never mixes two kinds of mistake.
    code = np.where(suspect, (lab.astype(np.int64) - 1) * K + pred, 0)
    rows = []
    for r in regionprops(cc_label(code, connectivity=2), intensity_image=conf):
        if r.area < int(min_pixels):
            continue
        y0, x0, y1, x1 = r.bbox
        c = int(code[tuple(r.coords[0])])
        k, j = (c - 1) // K + 1, (c - 1) % K + 1
        box = lab[y0:y1, x0:x1]
        rows.append({"class": names[k - 1], "predicted": names[j - 1], "confidence": float(r.intensity_mean),
                     "pixels": int(r.area), "stroke_fraction": float(r.area / max(1, (box == k).sum())),
                     "y0": y0, "y1": y1, "x0": x0, "x1": x1})
    cols = ["class", "predicted", "confidence", "pixels", "stroke_fraction", "y0", "y1", "x0", "x1"]
    df = pd.DataFrame(rows, columns=cols)
    if len(df):
        df = df.iloc[np.argsort(-(df["pixels"] * df["confidence"]).to_numpy(), kind="stable")].reset_index(drop=True)
    return df


def strokes_in_box(truth, box, strokes_per_class: int = 2, radius: int = 2, length=(6, 14), seed: int = 0):
    """Simulate a person brushing inside one box: strokes drawn from a dense truth mask.

    Parameters
    ----------
    truth : array_like (Y, X) int
        Dense reference mask (classes 1..K).
    box : (y0, y1, x0, x1)
    strokes_per_class, radius, length, seed
        As for :func:`pixlab.datasets.strokes_from_mask`, applied to the box only.

    Returns
    -------
    numpy.ndarray (Y, X)
        Strokes inside the box (0 elsewhere), for every class present in it.
    """
    from pixlab.datasets import strokes_from_mask

    truth = np.asarray(truth)
    try:
        y0, y1, x0, x1 = (int(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"box must be (y0, y1, x0, x1), got {box!r}") from None
    y0, x0 = max(0, y0), max(0, x0)
    y1, x1 = min(truth.shape[0], y1), min(truth.shape[1], x1)
    if y1 <= y0 or x1 <= x0:
        raise ValueError(f"box {tuple(box)} does not overlap the mask of shape {truth.shape}")
    out = np.zeros(truth.shape, np.uint8 if truth.max() < 256 else np.uint16)
    out[y0:y1, x0:x1] = strokes_from_mask(truth[y0:y1, x0:x1], strokes_per_class, radius, length, seed)
    return out
