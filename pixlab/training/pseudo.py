"""Random-forest pseudo-labels for training: everywhere on small images, around the strokes of slides.

The forest (:class:`~pixlab.training.forest.FeatureClassifier`) learns from the training strokes
and labels the pixels it is confident about; the network learns from those with a small weight
(``TrainConfig.pseudo_weight``). On a whole slide only the blocks around the strokes are read and
labelled (the tiles are drawn there), within a pixel budget, and the result is a sparse label store;
there (and on in-memory images too large to hold their features) the forest's features are computed
block by block, never for all the blocks at once.
"""

from __future__ import annotations

import warnings

import numpy as np

from pixlab.training.features import labelled_subset
from pixlab.training.strokes import context_blocks, read_labels, stroke_windows

__all__ = ["add_pseudo_labels", "pseudo_budget", "PSEUDO_PIXELS", "PSEUDO_PIXELS_PER_SECOND",
           "PSEUDO_FEATURE_BYTES"]

# Pseudo-labels of a large image are computed only in blocks around its strokes, at most this many
# pixels: about 10 µs per pixel on one core (1 M px ~ 10 s).
PSEUDO_PIXELS = 2**20
# With a time limit, at most ~20 % of it goes to pseudo-labels (20,000 px per second of the limit).
PSEUDO_PIXELS_PER_SECOND = 20_000
# Rows predicted between two looks at cancel and the clock (~1 s on one core).
PSEUDO_BAND_PIXELS = 2**17
# An in-memory image whose forest features (4 bytes x 4 filters x sigmas x channels per pixel: 240 B
# for RGB) fit this budget gets them computed whole; larger ones, and slides, block by block, so that
# at most one block's features (~80 MB for RGB) are held, plus blocks kept from the fit for the
# prediction within this budget.
PSEUDO_FEATURE_BYTES = 256 * 2**20
# TrainConfig.pseudo_agreement: the second forest sees the features up to this sigma only. Large-scale
# features put a confident halo of the object class around clustered objects; a fine-scale forest does
# not, and keeping only the pixels both forests agree on halved the wrong pseudo-labels (docs/quality.md).
FINE_SIGMA = 4


def pseudo_budget(cfg) -> int | None:
    """Pixels the forest may label in one run: none without a time limit, else ~20 % of the limit."""
    return None if cfg.time_limit_s is None else int(cfg.time_limit_s * PSEUDO_PIXELS_PER_SECOND)


def add_pseudo_labels(samples, n_classes, cfg, prep=None) -> None:
    """Random-forest pseudo-labels on confident unlabelled pixels (docs/quality.md: +0.02-0.05 IoU).

    In-memory images whose features fit :data:`PSEUDO_FEATURE_BYTES` (1024 x 1024 RGB) get them
    everywhere, unless a time limit's budget (:func:`pseudo_budget`, shared by the images) is
    smaller than the image. Otherwise they get them in windows around their strokes, and larger
    images (slides) in the blocks around the strokes (:attr:`Sample.context`, where the tiles are
    drawn), spread over the strokes, features computed block by block; nothing else of a slide is
    read.

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
    from pixlab.training.features import n_features
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
        # whole when its features fit in memory and its pixels in the time budget
        whole = not large and (4 * n_features(s.cache.shape[0], clf.sigma_min, clf.sigma_max) * s.cache[0].size
                               <= PSEUDO_FEATURE_BYTES) and s.cache[0].size <= (share or 2**62)
        if whole:
            done = _pseudo_whole(s, n_classes, cfg, clf, prep)
        else:
            if large and s.context is None:
                s.context = context_blocks(s.train_labels, cfg.tile_size)
            # a large image: its context blocks (where its tiles are drawn); a smaller one over the
            # time limit's budget or the features' memory budget: windows of two tiles around its strokes
            blocks = s.context if large else stroke_windows(s.train_labels, 2 * cfg.tile_size)
            done = _pseudo_in_context(s, blocks, n_classes, cfg, clf, prep,
                                      PSEUDO_PIXELS if share is None else min(PSEUDO_PIXELS, share))
        if not done:
            skipped.append(s.image.name)
    if skipped:
        warnings.warn(f"random-forest pseudo-labels stopped at {PSEUDO_SHARE:.0%} of the {cfg.time_limit_s:g} s "
                      f"time limit: {', '.join(map(repr, skipped))} train(s) on the strokes alone where they are "
                      "missing (raise time_limit_s for them)")
    from pixlab.training.memory import release_memory
    release_memory()  # the blocks' features, before training allocates its own


def _pseudo_whole(s, n_classes: int, cfg, clf, prep) -> bool:
    """Pseudo-labels of an in-memory image, in bands of rows (a cancel is seen between bands).

    Returns False when the time share ran out before the last band (those rows stay unlabelled).
    """
    from pixlab.labels.classids import argmax_labels
    from pixlab.training.preparation import PSEUDO_SHARE
    clf.fit(s.cache, s.train_labels, n_classes=n_classes)
    fine = None
    if getattr(cfg, "pseudo_agreement", False):  # the whole image's features are cached by the fit
        from pixlab.labels.masks import _as_integer_labels
        flat = _as_integer_labels(s.train_labels).ravel()  # as fit() reads them: the same pixels
        index = labelled_subset(flat, clf.max_samples_per_class, np.random.default_rng(cfg.seed))
        feats = clf.features(s.cache)
        fine = _fine_forest(clf, feats.reshape(-1, feats.shape[-1])[index], flat[index], n_classes,
                            s.cache.shape[0], cfg.seed)
    H, W = s.cache.shape[1:]
    dtype = np.uint8 if n_classes <= 255 else np.uint16
    views = [(clf, None)] + ([] if fine is None else [fine])
    # per view: confident labels and (for pseudo_margin) the view's class everywhere
    outs = [np.zeros((H, W), dtype) for _ in views]
    margin = getattr(cfg, "pseudo_margin", 0)
    bests = [np.zeros((H, W), dtype) if margin else None for _ in views]
    rows = max(1, PSEUDO_BAND_PIXELS // W)
    done = True
    for y0 in range(0, H, rows):
        prep.check()
        if prep.over_share(PSEUDO_SHARE):
            done = False
            break
        region = (y0, min(H, y0 + rows), 0, W)
        for (forest, cols), out, best in zip(views, outs, bests):
            if cols is None:
                p = forest.predict_proba(s.cache, region=region)
            else:
                p = forest.predict_proba_features(clf.features(s.cache, region), cols)
            out[region[0]:region[1]] = _confident(p, cfg.pseudo_threshold)
            if margin:
                best[region[0]:region[1]] = argmax_labels(p)
    s.pseudo = _agreed([_drop_near_class_changes(o, b, margin) for o, b in zip(outs, bests)])
    return done


def _fine_forest(clf, features, labels, n_classes: int, n_channels: int, seed: int):
    """A second forest on the fine-scale columns (sigmas up to :data:`FINE_SIGMA`) of the same
    labelled pixels, and those columns (``TrainConfig.pseudo_agreement``)."""
    from pixlab.training.features import scale_columns
    from pixlab.training.forest import FeatureClassifier
    cols = scale_columns(n_channels, clf.sigma_min, clf.sigma_max, FINE_SIGMA)
    fine = FeatureClassifier(seed=seed, n_jobs=1, sigma_min=clf.sigma_min, sigma_max=min(FINE_SIGMA, clf.sigma_max))
    return fine.fit_features(np.asarray(features)[:, cols], labels, n_classes, n_channels=n_channels), cols


def _agreed(labels: list) -> np.ndarray:
    """The first view's pseudo-labels where every other view has the same one (0 elsewhere)."""
    out = labels[0]
    for other in labels[1:]:
        out[other != out] = 0
    return out


def _confident(p, threshold, margin: int = 0) -> np.ndarray:
    """Argmax labels where the forest's probability reaches ``threshold``, 0 elsewhere; with
    ``margin`` > 0 also 0 within ``margin`` px of a change of the forest's class (see
    :func:`_drop_near_class_changes`)."""
    from pixlab.labels.classids import argmax_labels
    lab = argmax_labels(p)  # uint16 beyond 255 classes
    best = lab.copy() if margin else None
    lab[p.max(0) < threshold] = 0
    return _drop_near_class_changes(lab, best, margin)


def _drop_near_class_changes(lab, best, margin: int) -> np.ndarray:
    """``lab`` with 0 within ``margin`` px of a change of ``best`` (the forest's class): the forest
    errs at its boundaries (a confident halo around blurred objects), and strokes, drawn 3 px from
    boundaries, never label them either (``TrainConfig.pseudo_margin``)."""
    if not margin or best is None:
        return lab
    from scipy import ndimage as ndi
    size = 2 * int(margin) + 1
    lab[ndi.maximum_filter(best, size) != ndi.minimum_filter(best, size)] = 0
    return lab


def _block_features(s, clf, region, margin: int) -> np.ndarray:
    """``(h, w, F)`` features of one block, from the block read with ``margin`` px of real context
    (exactly the whole image's features there)."""
    from pixlab.training.features import pixel_features
    y0, y1, x0, x1 = region
    _, H, W = s.image.shape
    py0, px0 = max(0, y0 - margin), max(0, x0 - margin)
    padded = s.read(py0, min(H, y1 + margin), px0, min(W, x1 + margin), s.stats)
    return pixel_features(padded, clf.sigma_min, clf.sigma_max, region=(y0 - py0, y1 - py0, x0 - px0, x1 - px0),
                          workers=1)


def _pseudo_in_context(s, blocks, n_classes: int, cfg, clf, prep, budget: int) -> bool:
    """Fit on the training strokes of ``blocks`` and keep confident predictions there, in a label store.

    Block by block, twice: the first pass gathers the features of (a capped subset of) the labelled
    pixels of each block, the forest is fitted on them, and the second pass predicts each block.
    Features are never held for more than one block at a time, except blocks kept from the first
    pass for the second within :data:`PSEUDO_FEATURE_BYTES`.

    Returns False when the time share ran out before the last block."""
    from pixlab.labels.store import LabelStore
    from pixlab.training.features import feature_margin, labelled_subset
    from pixlab.training.preparation import PSEUDO_SHARE
    areas = [(y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in blocks]
    n_fit = len(areas)
    while n_fit > 1 and sum(areas[int(j)] for j in np.linspace(0, len(areas) - 1, n_fit).round()) > budget:
        n_fit -= 1
    chosen = sorted({int(j) for j in np.linspace(0, len(areas) - 1, n_fit).round()}) if areas else []
    if len(chosen) < len(areas):
        warnings.warn(f"image '{s.image.name}': random-forest pseudo-labels in {len(chosen)} of the "
                      f"{len(areas)} blocks around the strokes (a budget of {budget / 1e6:.1f} M px); "
                      f"the others train on the strokes only")
    regions = [tuple(blocks[j]) for j in chosen]
    m = feature_margin(clf.sigma_max)
    rng = np.random.default_rng(cfg.seed)
    cap = clf.max_samples_per_class
    xs, ys, kept, kept_bytes = [], [], {}, 0
    for region in regions:
        prep.check()
        lab = read_labels(s.train_labels, *region).ravel()
        if not lab.any():
            continue
        feats = _block_features(s, clf, region, m)
        index = labelled_subset(lab, cap, rng)
        xs.append(feats.reshape(-1, feats.shape[-1])[index])
        ys.append(lab[index])
        if kept_bytes + feats.nbytes <= PSEUDO_FEATURE_BYTES:
            kept[region] = feats
            kept_bytes += feats.nbytes
        del feats
    if not xs:
        return True
    prep.check()
    x, y = np.concatenate(xs), np.concatenate(ys)
    del xs, ys
    index = labelled_subset(y, cap, rng)
    clf.fit_features(x[index], y[index], n_classes, n_channels=s.image.n_channels)
    fine = (_fine_forest(clf, x[index], y[index], n_classes, s.image.n_channels, cfg.seed)
            if getattr(cfg, "pseudo_agreement", False) else None)
    del x, y
    out = LabelStore(s.train_labels.shape, np.uint8 if n_classes <= 255 else np.uint16)
    done = True
    for region in regions:
        prep.check()
        if prep.over_share(PSEUDO_SHARE):
            done = False
            break
        feats = kept.pop(region, None)
        if feats is None:
            feats = _block_features(s, clf, region, m)
        margin = getattr(cfg, "pseudo_margin", 0)
        views = [_confident(clf.predict_proba_features(feats), cfg.pseudo_threshold, margin)]
        if fine is not None:
            views.append(_confident(fine[0].predict_proba_features(feats, fine[1]), cfg.pseudo_threshold,
                                    margin))
        out.write(region, _agreed(views))
        del feats
    out.mark_clean()
    s.pseudo = out
    return done
