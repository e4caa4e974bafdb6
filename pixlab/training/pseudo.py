"""Random-forest pseudo-labels for training: everywhere on small images, around the strokes of slides.

The forest (:class:`~pixlab.training.forest.FeatureClassifier`) learns from the training strokes
and labels the pixels it is confident about; the network learns from those with a small weight
(``TrainConfig.pseudo_weight``). On a whole slide only the blocks around the strokes are read and
labelled (the tiles are drawn there), within a pixel budget, and the result is a sparse label store.
"""

from __future__ import annotations

import warnings

import numpy as np

from pixlab.training.strokes import context_blocks, read_labels, stroke_windows

__all__ = ["add_pseudo_labels", "pseudo_budget", "PSEUDO_PIXELS", "PSEUDO_PIXELS_PER_SECOND"]

# Pseudo-labels of a large image are computed only in blocks around its strokes, at most this many
# pixels: about 10 µs per pixel on one core, and the forest keeps the features of the whole mosaic
# (240 B/px for RGB): 1 M px ~ 10 s and ~250 MB.
PSEUDO_PIXELS = 2**20
# With a time limit, at most ~20 % of it goes to pseudo-labels (20,000 px per second of the limit).
PSEUDO_PIXELS_PER_SECOND = 20_000
# Rows predicted between two looks at cancel and the clock (~1 s on one core).
PSEUDO_BAND_PIXELS = 2**17


def pseudo_budget(cfg) -> int | None:
    """Pixels the forest may label in one run: none without a time limit, else ~20 % of the limit."""
    return None if cfg.time_limit_s is None else int(cfg.time_limit_s * PSEUDO_PIXELS_PER_SECOND)


def add_pseudo_labels(samples, n_classes, cfg, prep=None) -> None:
    """Random-forest pseudo-labels on confident unlabelled pixels (QUALITY-NOTES: +0.02-0.05 IoU).

    Images up to 4096 x 4096 px get them everywhere, unless a time limit's budget
    (:func:`pseudo_budget`, shared by the images) is smaller than the image: then, as on larger
    images (slides), they are computed only in the blocks around the strokes
    (:attr:`Sample.context`, where the tiles are drawn), spread over the strokes; nothing else of a
    slide is read.

    Parameters
    ----------
    samples : list of Sample
    n_classes : int
    cfg : TrainConfig
    prep : pixlab.training.preparation.Preparation, optional
        Checked between images and blocks: a cancel stops the run (:class:`TrainingCancelled`);
        past :data:`~pixlab.training.preparation.PSEUDO_SHARE` of the time limit the remaining
        pixels get no pseudo-labels (with a warning).
    """
    from pixlab.training.forest import FeatureClassifier
    from pixlab.training.preparation import PSEUDO_SHARE, Preparation
    prep = prep or Preparation()
    budget = pseudo_budget(cfg)
    share = None if budget is None else budget // max(1, len(samples))
    skipped = []
    for s in samples:
        prep.check()
        if prep.over_share(PSEUDO_SHARE):
            skipped.append(s.image.name)
            continue
        clf = FeatureClassifier(seed=cfg.seed, n_jobs=1)
        large = s.cache is None or s.cache.shape[1] * s.cache.shape[2] > 4096 * 4096
        if not large and s.cache.shape[1] * s.cache.shape[2] <= (share or 2**62):
            done = _pseudo_whole(s, n_classes, cfg, clf, prep)
        else:
            if large and s.context is None:
                s.context = context_blocks(s.train_labels, cfg.tile_size)
            # a large image: its context blocks (where its tiles are drawn); a smaller one over the
            # time limit's budget: windows of two tiles around its strokes
            blocks = s.context if large else stroke_windows(s.train_labels, 2 * cfg.tile_size)
            done = _pseudo_in_context(s, blocks, n_classes, cfg, clf, prep,
                                      PSEUDO_PIXELS if share is None else min(PSEUDO_PIXELS, share))
        if not done:
            skipped.append(s.image.name)
    if skipped:
        warnings.warn(f"random-forest pseudo-labels stopped at {PSEUDO_SHARE:.0%} of the {cfg.time_limit_s:g} s "
                      f"time limit: {', '.join(map(repr, skipped))} train(s) on the strokes alone where they are "
                      "missing (raise time_limit_s for them)")


def _pseudo_whole(s, n_classes: int, cfg, clf, prep) -> bool:
    """Pseudo-labels of an in-memory image, in bands of rows (a cancel is seen between bands).

    Returns False when the time share ran out before the last band (those rows stay unlabelled).
    """
    from pixlab.training.preparation import PSEUDO_SHARE
    clf.fit(s.cache, s.train_labels, n_classes=n_classes)
    H, W = s.cache.shape[1:]
    out = np.zeros((H, W), np.uint8 if n_classes <= 255 else np.uint16)
    rows = max(1, PSEUDO_BAND_PIXELS // W)
    for y0 in range(0, H, rows):
        prep.check()
        if prep.over_share(PSEUDO_SHARE):
            s.pseudo = out
            return False
        region = (y0, min(H, y0 + rows), 0, W)
        out[region[0]:region[1]] = _confident(clf.predict_proba(s.cache, region=region), cfg.pseudo_threshold)
    s.pseudo = out
    return True


def _confident(p, threshold) -> np.ndarray:
    from pixlab.labels.classids import argmax_labels
    lab = argmax_labels(p)  # uint16 beyond 255 classes
    lab[p.max(0) < threshold] = 0
    return lab


def _pseudo_in_context(s, blocks, n_classes: int, cfg, clf, prep, budget: int) -> bool:
    """Fit on the training strokes of ``blocks`` (a mosaic of them, each with enough real context
    for exact features) and keep confident predictions there, in a label store.

    Returns False when the time share ran out before the last block."""
    from pixlab.labels.store import LabelStore
    from pixlab.training.forest import feature_margin
    areas = [(y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in blocks]
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
        y0, y1, x0, x1 = blocks[j]
        pieces.append(((y0, y1, x0, x1), (max(0, y0 - m), min(H, y1 + m), max(0, x0 - m), min(W, x1 + m))))
    if not pieces:
        return True
    width = max(p[1][3] - p[1][2] for p in pieces)
    rows = [p[1][1] - p[1][0] for p in pieces]
    C = s.image.n_channels
    mosaic = np.zeros((C, sum(rows), width), np.float32)
    lab = np.zeros((sum(rows), width), np.uint8)
    boxes, top = [], 0
    for (iy0, iy1, ix0, ix1), (py0, py1, px0, px1) in pieces:
        prep.check()
        h, w = py1 - py0, px1 - px0
        mosaic[:, top:top + h, :w] = s.read(py0, py1, px0, px1, s.stats)
        if w < width:  # reflect so the filler looks like the block, not like a black border
            mosaic[:, top:top + h, w:] = mosaic[:, top:top + h, max(0, 2 * w - width):w][:, :, ::-1][:, :, :width - w]
        inner = (top + iy0 - py0, top + iy1 - py0, ix0 - px0, ix1 - px0)
        lab[inner[0]:inner[1], inner[2]:inner[3]] = read_labels(s.train_labels, iy0, iy1, ix0, ix1)
        boxes.append(inner)
        top += h
    if not lab.any():
        return True
    from pixlab.training.preparation import PSEUDO_SHARE
    prep.check()
    clf.fit(mosaic, lab, n_classes=n_classes)
    out = LabelStore(s.train_labels.shape, np.uint8 if n_classes <= 255 else np.uint16)
    done = True
    for ((iy0, iy1, ix0, ix1), _), box in zip(pieces, boxes):
        prep.check()
        if prep.over_share(PSEUDO_SHARE):
            done = False
            break
        out.write((iy0, iy1, ix0, ix1), _confident(clf.predict_proba(mosaic, region=box), cfg.pseudo_threshold))
    out.mark_clean()
    s.pseudo = out
    return done
