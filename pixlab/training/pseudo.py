"""Random-forest pseudo-labels for training: everywhere on small images, around the strokes of slides.

The forest (:class:`~pixlab.training.forest.FeatureClassifier`) learns from the training strokes
and labels the pixels it is confident about; the network learns from those with a small weight
(``TrainConfig.pseudo_weight``). On a whole slide only the blocks around the strokes are read and
labelled (the tiles are drawn there), within a pixel budget, and the result is a sparse label store.
"""

from __future__ import annotations

import warnings

import numpy as np

from pixlab.training.strokes import context_blocks, read_labels

__all__ = ["add_pseudo_labels", "PSEUDO_PIXELS", "PSEUDO_PIXELS_PER_SECOND"]

# Pseudo-labels of a large image are computed only in blocks around its strokes, at most this many
# pixels: about 10 µs per pixel on one core, and the forest keeps the features of the whole mosaic
# (240 B/px for RGB): 1 M px ~ 10 s and ~250 MB.
PSEUDO_PIXELS = 2**20
# With a time limit, at most ~20 % of it goes to pseudo-labels (20,000 px per second of the limit).
PSEUDO_PIXELS_PER_SECOND = 20_000


def add_pseudo_labels(samples, n_classes, cfg) -> None:
    """Random-forest pseudo-labels on confident unlabelled pixels (QUALITY-NOTES: +0.02-0.05 IoU).

    Images up to 4096 x 4096 px get them everywhere. Larger ones (slides) get them only in the
    blocks around their strokes (:attr:`Sample.context`), up to :data:`PSEUDO_PIXELS` (fewer with a
    time limit), spread over the strokes; nothing else of the slide is read.
    """
    from pixlab.training.forest import FeatureClassifier
    for s in samples:
        if s.cache is not None and s.cache.shape[1] * s.cache.shape[2] <= 4096 * 4096:
            clf = FeatureClassifier(seed=cfg.seed, n_jobs=1)
            clf.fit(s.cache, s.train_labels, n_classes=n_classes)
            s.pseudo = _confident(clf.predict_proba(s.cache), cfg.pseudo_threshold)
            continue
        _pseudo_in_context(s, n_classes, cfg, FeatureClassifier(seed=cfg.seed, n_jobs=1))


def _confident(p, threshold) -> np.ndarray:
    from pixlab.labels.classids import argmax_labels
    lab = argmax_labels(p)  # uint16 beyond 255 classes
    lab[p.max(0) < threshold] = 0
    return lab


def _pseudo_in_context(s, n_classes: int, cfg, clf) -> None:
    """Fit on the training strokes of the context blocks (a mosaic of them, each with enough
    real context for exact features) and keep confident predictions there, in a label store."""
    from pixlab.labels.store import LabelStore
    from pixlab.training.forest import feature_margin
    if s.context is None:
        s.context = context_blocks(s.train_labels, cfg.tile_size)
    budget = PSEUDO_PIXELS
    if cfg.time_limit_s is not None:
        budget = min(budget, int(cfg.time_limit_s * PSEUDO_PIXELS_PER_SECOND))
    areas = [(y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in s.context]
    n_fit = len(areas)
    while n_fit > 1 and sum(areas[int(j)] for j in np.linspace(0, len(areas) - 1, n_fit).round()) > budget:
        n_fit -= 1
    chosen = sorted({int(j) for j in np.linspace(0, len(areas) - 1, n_fit).round()}) if areas else []
    if len(chosen) < len(areas):
        warnings.warn(f"image '{s.image.name}': random-forest pseudo-labels in {len(chosen)} of the "
                      f"{len(areas)} blocks around the strokes (a budget of {budget / 1e6:.1f} M px); "
                      f"the others train on the strokes only")
    _, H, W = s.image.shape
    m = feature_margin(clf.sigma_max)
    pieces = []  # (inner region, padded region)
    for j in chosen:
        y0, y1, x0, x1 = s.context[j]
        pieces.append(((y0, y1, x0, x1), (max(0, y0 - m), min(H, y1 + m), max(0, x0 - m), min(W, x1 + m))))
    if not pieces:
        return
    width = max(p[1][3] - p[1][2] for p in pieces)
    rows = [p[1][1] - p[1][0] for p in pieces]
    C = s.image.n_channels
    mosaic = np.zeros((C, sum(rows), width), np.float32)
    lab = np.zeros((sum(rows), width), np.uint8)
    boxes, top = [], 0
    for (iy0, iy1, ix0, ix1), (py0, py1, px0, px1) in pieces:
        h, w = py1 - py0, px1 - px0
        mosaic[:, top:top + h, :w] = s.read(py0, py1, px0, px1, s.stats)
        if w < width:  # reflect so the filler looks like the block, not like a black border
            mosaic[:, top:top + h, w:] = mosaic[:, top:top + h, max(0, 2 * w - width):w][:, :, ::-1][:, :, :width - w]
        inner = (top + iy0 - py0, top + iy1 - py0, ix0 - px0, ix1 - px0)
        lab[inner[0]:inner[1], inner[2]:inner[3]] = read_labels(s.train_labels, iy0, iy1, ix0, ix1)
        boxes.append(inner)
        top += h
    if not lab.any():
        return
    clf.fit(mosaic, lab, n_classes=n_classes)
    out = LabelStore(s.train_labels.shape, np.uint8 if n_classes <= 255 else np.uint16)
    for ((iy0, iy1, ix0, ix1), _), box in zip(pieces, boxes):
        out.write((iy0, iy1, ix0, ix1), _confident(clf.predict_proba(mosaic, region=box), cfg.pseudo_threshold))
    out.mark_clean()
    s.pseudo = out
