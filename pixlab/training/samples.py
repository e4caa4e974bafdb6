"""Training data preparation: open and check (image, labels) pairs, hold out strokes, keep tiles' source.

One copy of the rules every part of pixlab that reads training labels must agree on: how sparse
labels are downsampled (:func:`downsample_labels`), how strokes are held out (:func:`split_strokes`)
and how the training data is fingerprinted (:func:`fingerprint`).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pixlab.labels.classids import argmax_labels

__all__ = ["Sample", "prepare_samples", "split_strokes", "downsample_labels", "fingerprint",
           "build_samples", "add_pseudo_labels", "IN_MEMORY_PIXELS"]

# Images up to this many pixels (per channel) are normalized once and kept in memory for tile
# sampling; larger ones (whole slides) are read tile by tile from the lazy array.
IN_MEMORY_PIXELS = 64_000_000


@dataclass
class Sample:
    """One training image with its labels, ready for tile sampling."""

    image: object            # pixlab.image.io.Image (channel-selected, downsampled)
    labels: np.ndarray       # (Y, X) uint8, 0 = unlabelled
    train_labels: np.ndarray  # labels with validation strokes removed
    val_labels: np.ndarray    # only the validation strokes
    cache: np.ndarray | None = None   # normalized image when small enough
    pseudo: np.ndarray | None = None  # (Y, X) uint8 pseudo-labels, 0 = none

    def read(self, y0, y1, x0, x1, stats) -> np.ndarray:
        from pixlab.image.normalize import apply
        if self.cache is not None:
            return self.cache[:, y0:y1, x0:x1]
        return apply(self.image.read((y0, y1, x0, x1)), stats)


def downsample_labels(labels: np.ndarray, factor: float) -> np.ndarray:
    """Downsample a sparse label mask by block maximum, so thin strokes survive.

    Plain striding can drop a 2-px stroke entirely; the block maximum keeps every stroke (where two
    classes share a block the higher id wins, which only affects boundary blocks). Partial blocks at
    the bottom/right edge count as blocks (``ceil(Y / f)`` rows).

    Parameters
    ----------
    labels : numpy.ndarray
        ``(Y, X)`` integer labels, 0 = unlabelled.
    factor : float
        Downsample factor, rounded to a whole number; 1 or less returns ``labels`` unchanged.

    Returns
    -------
    numpy.ndarray
        ``(ceil(Y / f), ceil(X / f))``, same dtype.

    Examples
    --------
    >>> lab = np.zeros((5, 4), np.uint8); lab[4, 0] = 2
    >>> downsample_labels(lab, 2)
    array([[0, 0],
           [0, 0],
           [2, 0]], dtype=uint8)
    """
    f = int(round(factor))
    if f <= 1:
        return labels
    from skimage.measure import block_reduce
    return block_reduce(labels, (f, f), np.max).astype(labels.dtype)


_downsample_labels = downsample_labels  # the name pixlab.analysis.diagnostics used before


def prepare_samples(samples, cfg, class_names):
    """Open images, select channels, downsample, validate labels. Returns (images, labels, names)."""
    from pixlab.image.io import open_image
    from pixlab.labels.masks import load_labels, validate_labels

    if not isinstance(samples, (list, tuple)) or not samples:
        raise ValueError("samples must be a non-empty list of (image, labels) pairs, e.g. [(img, labels)]")
    images, labels = [], []
    for i, pair in enumerate(samples):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise ValueError(f"samples[{i}] must be an (image, labels) pair, got {type(pair).__name__}")
        img, lab = pair
        img = open_image(img)
        if cfg.channels is not None:
            img = img.select_channels(cfg.channels)
        if isinstance(lab, (str, Path)):
            lab = load_labels(lab)
        lab = np.asarray(lab)
        n_cls = len(class_names) if class_names is not None else max(int(np.nanmax(lab)) if lab.size else 0, 1)
        names = class_names if class_names is not None else [f"class {k}" for k in range(1, n_cls + 1)]
        lab = validate_labels(lab, img.shape[1:], names)
        if cfg.downsample > 1:
            img = img.downsampled(cfg.downsample)
            lab = downsample_labels(lab, cfg.downsample)[: img.shape[1], : img.shape[2]]
        images.append(img)
        labels.append(lab)
    chans = {im.n_channels for im in images}
    if len(chans) > 1:
        raise ValueError(f"training images have different channel counts {[im.n_channels for im in images]}; "
                         f"select the same channels in every image (TrainConfig.channels)")
    if class_names is None:
        n = max(int(lab.max()) for lab in labels)
        class_names = [f"class {k}" for k in range(1, max(n, 2) + 1)]
    class_names = list(class_names)
    if len(class_names) < 2:
        raise ValueError(f"class_names={class_names} must name at least 2 classes (e.g. ['background', 'nuclei'])")
    present = set()
    for lab in labels:
        present |= set(np.unique(lab).tolist())
    missing = [class_names[k - 1] for k in range(1, len(class_names) + 1) if k not in present]
    if missing:
        raise ValueError(f"class(es) {missing} have no labelled pixel in any training image; brush at least "
                         f"one stroke of each class or remove it from class_names")
    return images, labels, class_names


def split_strokes(labels_list: Sequence[np.ndarray], n_classes: int, fraction: float, seed: int):
    """Hold out a fraction of the strokes (8-connected components) of each class for validation.

    Returns
    -------
    train_list, val_list : lists of (Y, X) uint8 arrays
    info : dict
        Stroke counts per class in each split.
    """
    from skimage.measure import label as cc_label
    rng = np.random.default_rng(seed)
    train_list = [lab.copy() for lab in labels_list]
    val_list = [np.zeros_like(lab) for lab in labels_list]
    info = {"train_strokes": [], "val_strokes": []}
    for k in range(1, n_classes + 1):
        comps = []  # (image index, component id, component map)
        maps = []
        for i, lab in enumerate(labels_list):
            cc, n = cc_label(lab == k, connectivity=2, return_num=True)
            maps.append(cc)
            comps += [(i, c) for c in range(1, n + 1)]
        n_val = int(round(fraction * len(comps))) if len(comps) >= 2 else 0
        n_val = min(max(n_val, 1 if fraction > 0 and len(comps) >= 2 else 0), len(comps) - 1) if comps else 0
        chosen = rng.choice(len(comps), size=n_val, replace=False) if n_val else []
        for j in chosen:
            i, c = comps[j]
            m = maps[i] == c
            val_list[i][m] = k
            train_list[i][m] = 0
        info["train_strokes"].append(len(comps) - n_val)
        info["val_strokes"].append(n_val)
    return train_list, val_list, info


def intensity_stats(images):
    """Raw per-channel training intensities for distribution-shift checks (pixlab.analysis.shift.ood_check)."""
    try:
        from pixlab.analysis.shift import intensity_stats as _stats
    except ImportError:  # diagnostics not installed in a trimmed build
        return None
    return _stats(images)


def fingerprint(images, labels) -> str:
    """A short hash of the training data (labels + a strided sample of each image)."""
    h = hashlib.sha256()
    for img, lab in zip(images, labels):
        h.update(np.ascontiguousarray(lab).tobytes())
        h.update(str(img.shape).encode())
        step = max(1, int(math.sqrt(img.shape[1] * img.shape[2] / 65536)))
        h.update(np.ascontiguousarray(np.asarray(img.data[:, ::step, ::step])).tobytes())
    return h.hexdigest()[:16]


_fingerprint = fingerprint  # the name pixlab.analysis.diagnostics used before


def build_samples(images, labels, train_l, val_l, stats) -> list[Sample]:
    """One :class:`Sample` per image; images that fit :data:`IN_MEMORY_PIXELS` are normalized once."""
    from pixlab.image.normalize import apply
    out = []
    for img, lab, tl, vl in zip(images, labels, train_l, val_l):
        cache = None
        if img.shape[1] * img.shape[2] <= IN_MEMORY_PIXELS:
            cache = apply(img.read(), stats)
            if not np.isfinite(cache).all():
                raise ValueError(f"image '{img.name}' contains NaN or infinite values; replace them "
                                 f"(e.g. numpy.nan_to_num) before training")
        out.append(Sample(img, lab, tl, vl, cache))
    return out


def add_pseudo_labels(samples, n_classes, cfg) -> None:
    """Random-forest pseudo-labels on confident unlabelled pixels (QUALITY-NOTES: +0.02-0.05 IoU)."""
    from pixlab.training.forest import FeatureClassifier
    for s in samples:
        if s.cache is None or s.cache.shape[1] * s.cache.shape[2] > 4096 * 4096:
            warnings.warn(f"image '{s.image.name}' is too large for random-forest pseudo-labels; training without them there")
            continue
        clf = FeatureClassifier(seed=cfg.seed, n_jobs=1)
        clf.fit(s.cache, s.train_labels, n_classes=n_classes)
        p = clf.predict_proba(s.cache)
        conf = p.max(0)
        lab = argmax_labels(p)
        lab[conf < cfg.pseudo_threshold] = 0
        s.pseudo = lab
