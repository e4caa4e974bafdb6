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

from pixlab.training.strokes import is_store, read_labels

__all__ = ["Sample", "prepare_samples", "open_labels", "downsample_sample_labels", "split_strokes",
           "downsample_labels", "fingerprint", "build_samples", "add_pseudo_labels", "label_stats", "IN_MEMORY_PIXELS"]

# Images up to this many pixels (per channel) are normalized once and kept in memory for tile
# sampling; larger ones (whole slides) are read tile by tile from the lazy array, and their labels
# stay a chunked LabelStore (a 100,000 x 80,000 slide's labels would be 8 GB as an array).
IN_MEMORY_PIXELS = 64_000_000

# Image blocks of a lazy (whole-slide) sample kept in memory, in the file's dtype: tiles are drawn
# around the same strokes again and again, so most reads hit this cache instead of decoding the file.
# 64 MiB holds 85 uint8 RGB blocks of 512 px; the normalised float32 blocks cached before took 192 MiB
# for 64 (bench/whole_slide.py, train phase: peak RSS 2.08 -> 1.79 GiB, 20 -> 22 epochs in 60 s).
_IMAGE_CACHE_BYTES = 64 * 2**20


@dataclass
class Sample:
    """One training image with its labels, ready for tile sampling."""

    image: object            # pixlab.image.io.Image (channel-selected, downsampled)
    labels: np.ndarray       # (Y, X) uint8, 0 = unlabelled
    train_labels: np.ndarray  # labels with validation strokes removed
    val_labels: np.ndarray    # only the validation strokes
    cache: np.ndarray | None = None   # normalized image when small enough
    pseudo: object | None = None      # (Y, X) uint8 pseudo-labels (array or LabelStore), 0 = none
    # Regions (y0, y1, x0, x1) where untargeted tiles of a lazy image are drawn: around its strokes,
    # so training never wanders over (and reads) the whole slide. None: anywhere (in-memory images).
    context: list | None = None
    stats: dict | None = None         # normalization statistics (what read() applies)
    _context_p: object = None         # draw probabilities of the context regions (area)
    _blocks: object = None            # OrderedDict of normalized image blocks (lazy images)
    _block_bytes: int = 0

    def read(self, y0, y1, x0, x1, stats) -> np.ndarray:
        """Normalized ``(C, y1-y0, x1-x0)`` float32 pixels of the region."""
        if self.cache is not None:
            return self.cache[:, y0:y1, x0:x1]
        from pixlab.image.normalize import apply
        from pixlab.training.strokes import BLOCK
        out = None
        for by in range(y0 // BLOCK, -(-y1 // BLOCK)):
            for bx in range(x0 // BLOCK, -(-x1 // BLOCK)):
                blk = self._block(by, bx)
                if out is None:
                    out = np.empty((blk.shape[0], y1 - y0, x1 - x0), blk.dtype)
                sy0, sy1 = max(y0, by * BLOCK), min(y1, by * BLOCK + blk.shape[1])
                sx0, sx1 = max(x0, bx * BLOCK), min(x1, bx * BLOCK + blk.shape[2])
                out[:, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = \
                    blk[:, sy0 - by * BLOCK:sy1 - by * BLOCK, sx0 - bx * BLOCK:sx1 - bx * BLOCK]
        # Normalisation is per pixel, so the tile is normalised once cut (the same values as
        # normalising its blocks) and the cache holds blocks in the file's dtype.
        return apply(out, stats)

    def _block(self, by, bx) -> np.ndarray:
        """Block ``(by, bx)`` of the image in its own dtype (uint8 RGB: a quarter of float32)."""
        from collections import OrderedDict
        from pixlab.training.strokes import BLOCK
        if self._blocks is None:
            self._blocks = OrderedDict()
        blk = self._blocks.get((by, bx))
        if blk is not None:
            self._blocks.move_to_end((by, bx))
            return blk
        _, H, W = self.image.shape
        blk = self.image.read((by * BLOCK, min(H, (by + 1) * BLOCK), bx * BLOCK, min(W, (bx + 1) * BLOCK)))
        if not np.issubdtype(blk.dtype, np.integer) and not np.isfinite(blk).all():
            raise ValueError(f"image '{self.image.name}' contains NaN or infinite values near y={by * BLOCK}, "
                             f"x={bx * BLOCK}; replace them (e.g. numpy.nan_to_num) before training")
        self._blocks[(by, bx)] = blk
        self._block_bytes += blk.nbytes
        while self._block_bytes > _IMAGE_CACHE_BYTES and len(self._blocks) > 1:
            _, old = self._blocks.popitem(last=False)
            self._block_bytes -= old.nbytes
        return blk


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


def _store_labels(lab, image_shape_yx, n_names: int | None, what: str):
    """Check a label store against its image (shape, class ids); small stores become arrays."""
    from pixlab.labels.store import LabelStore, as_label_store
    if tuple(lab.shape) != tuple(image_shape_yx):
        raise ValueError(f"{what} have shape {tuple(lab.shape)} but the image's level 0 is {tuple(image_shape_yx)} "
                         f"(Y, X); paint the labels on this image or pass the matching image")
    top = int(lab.max())
    if n_names is not None and top > n_names:
        raise ValueError(f"{what} contain class id {top} but only {n_names} class names were given; "
                         f"add the class name or relabel")
    if lab.size <= IN_MEMORY_PIXELS:
        return np.asarray(lab.read()) if hasattr(lab, "read") else np.asarray(lab)
    return lab if isinstance(lab, LabelStore) else as_label_store(lab)


def _downsample_store(store, factor: float):
    """A label store downsampled by block maximum, chunk by chunk (see :func:`downsample_labels`)."""
    from pixlab.labels.store import LabelStore
    f = int(round(factor))
    if f <= 1:
        return store
    ny, nx = store.shape
    out = LabelStore((-(-ny // f), -(-nx // f)), store.dtype)
    for y0, y1, x0, x1 in store.painted_chunks():
        # Align to the factor so blocks match the image-wide grid of downsample_labels.
        y0, x0 = y0 // f * f, x0 // f * f
        small = store.read_max((y0, y1, x0, x1), f)
        region = (y0 // f, y0 // f + small.shape[0], x0 // f, x0 // f + small.shape[1])
        out.write(region, np.maximum(out.read(region), small))
    out.mark_clean()
    return out


def _present(lab) -> set:
    if is_store(lab):
        return set(np.flatnonzero(lab.bincount()).tolist())
    return set(np.unique(lab).tolist())


def open_labels(lab, image_shape_yx, class_names, what: str = "labels"):
    """Labels of one image as training and evaluation read them: an array, or a chunked label store.

    Parameters
    ----------
    lab : array, LabelStore, or path
        A label image file, a slide's ``.labels.zarr`` folder (read chunk by chunk), an array or a
        :class:`~pixlab.labels.store.LabelStore`.
    image_shape_yx : (int, int)
        The image's level-0 size the labels must have.
    class_names : list of str or None
        Class ids above ``len(class_names)`` are refused; None: any id.
    what : str
        How error messages name these labels (e.g. ``"labels of samples[0]"``).

    Returns
    -------
    numpy.ndarray or LabelStore
        A store for images beyond :data:`IN_MEMORY_PIXELS` (checked chunk by chunk, never made dense),
        an array (validated) otherwise.
    """
    from pixlab.labels.masks import load_labels, validate_labels

    if isinstance(lab, (str, Path)) and Path(lab).suffix == ".zarr" and Path(lab).is_dir():
        from pixlab.labels.chunkfile import open_chunks
        lab = open_chunks(lab)  # a slide's .labels.zarr: read chunk by chunk
    elif isinstance(lab, (str, Path)):
        lab = load_labels(lab)
    if is_store(lab):
        lab = _store_labels(lab, image_shape_yx, None if class_names is None else len(class_names), what)
    if not is_store(lab):
        lab = np.asarray(lab)
        n_cls = len(class_names) if class_names is not None else max(int(np.nanmax(lab)) if lab.size else 0, 1)
        names = class_names if class_names is not None else [f"class {k}" for k in range(1, n_cls + 1)]
        lab = validate_labels(lab, image_shape_yx, names)
        if lab.size > IN_MEMORY_PIXELS:  # a slide-sized array: read from its chunks
            from pixlab.labels.store import as_label_store
            lab = as_label_store(lab)
    return lab


def downsample_sample_labels(lab, factor: float, image_shape_yx):
    """Labels (array or store) brought to an image downsampled by ``factor`` (block maximum), cut to its size."""
    if factor <= 1:
        return lab
    if is_store(lab):
        return _downsample_store(lab, factor)
    return downsample_labels(lab, factor)[: image_shape_yx[0], : image_shape_yx[1]]


def prepare_samples(samples, cfg, class_names):
    """Open images, select channels, downsample, validate labels. Returns (images, labels, names).

    Labels of images larger than :data:`IN_MEMORY_PIXELS` may be a label store
    (:class:`~pixlab.labels.store.LabelStore`, what :meth:`AnnotationSession.training_samples`
    returns for a slide): they stay one, checked chunk by chunk; smaller ones become arrays
    (:func:`open_labels`).
    """
    from pixlab.image.io import open_image

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
        lab = open_labels(lab, img.shape[1:], class_names, f"labels of samples[{i}]")
        if cfg.downsample > 1:
            img = img.downsampled(cfg.downsample)
            lab = downsample_sample_labels(lab, cfg.downsample, img.shape[1:])
        images.append(img)
        labels.append(lab)
    images = match_training_channels(images)
    if class_names is None:
        n = max(int(lab.max()) for lab in labels)
        class_names = [f"class {k}" for k in range(1, max(n, 2) + 1)]
    class_names = list(class_names)
    if len(class_names) < 2:
        raise ValueError(f"class_names={class_names} must name at least 2 classes (e.g. ['background', 'nuclei'])")
    present = set()
    for lab in labels:
        present |= _present(lab)
    missing = [class_names[k - 1] for k in range(1, len(class_names) + 1) if k not in present]
    if missing:
        raise ValueError(f"class(es) {missing} have no labelled pixel in any training image; brush at least "
                         f"one stroke of each class or remove it from class_names")
    return images, labels, class_names


def match_training_channels(images: list) -> list:
    """Give every training image the first one's channels, in its order.

    Names are matched with the one rule of :func:`pixlab.image.channels.match_channels`: images
    whose informative names come in another order are reordered (with a warning saying so); a
    name another image lacks, or a different channel count, is an error.

    Parameters
    ----------
    images : list of Image
        The opened (channel-selected, downsampled) training images.

    Returns
    -------
    list of Image
        The images, each with the channels of ``images[0]``.
    """
    from pixlab.image.channels import match_channels

    first = images[0]
    counts = [im.n_channels for im in images]
    fix = ("select the same channels in every image (TrainConfig.channels=[names], or "
           "image.select_channels(...) per image)")
    if len(set(counts)) > 1:  # a subset of a larger image would silently drop a channel it was labelled on
        raise ValueError(f"training images have different channel counts {counts} "
                         f"({', '.join(f'{im.name!r}: {im.channel_names}' for im in images)}); {fix}")
    out = [first]
    for im in images[1:]:
        matched = match_channels(im, first.channel_names, target=f"training image '{first.name}'", fix=fix)
        if matched is not im and matched.channel_names != im.channel_names:
            warnings.warn(f"training image '{im.name}' has channels {im.channel_names} in another order than "
                          f"'{first.name}' {first.channel_names}; they are reordered by name to match it",
                          stacklevel=5)
        out.append(matched)
    return out


def label_stats(labels_list, class_names) -> list[dict]:
    """Pixels and strokes per class over arrays and label stores (chunk by chunk for stores)."""
    from pixlab.labels.components import store_stats
    from pixlab.labels.masks import label_stats as array_stats
    arrays = [lab for lab in labels_list if not is_store(lab)]
    out = array_stats(arrays, class_names)
    for lab in labels_list:
        if is_store(lab):
            for o, st in zip(out, store_stats(lab, class_names)):
                o["pixels"] += st["pixels"]
                o["strokes"] += st["strokes"]
    return out


def split_strokes(labels_list: Sequence[np.ndarray], n_classes: int, fraction: float, seed: int):
    """Hold out a fraction of the strokes (8-connected components) of each class for validation.

    Returns
    -------
    train_list, val_list : lists of (Y, X) uint8 arrays (label stores when any input is one)
    info : dict
        Stroke counts per class in each split.
    """
    if any(is_store(lab) for lab in labels_list):
        # Strokes of a slide are found chunk by chunk (no image-sized component map).
        from pixlab.labels.components import split_store_strokes
        from pixlab.labels.store import as_label_store
        return split_store_strokes([as_label_store(lab) for lab in labels_list], n_classes, fraction, seed)
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
    """A short hash of the training data (labels + a strided sample of each image).

    For a lazy whole slide with label store, the painted chunks and the coarsest pyramid level are
    hashed (a strided read of level 0 would decode every tile of the slide).
    """
    h = hashlib.sha256()
    for img, lab in zip(images, labels):
        if is_store(lab):
            h.update(str(tuple(lab.shape)).encode())
            for region in lab.painted_chunks():
                h.update(str(region).encode())
                h.update(np.ascontiguousarray(lab.read(region)).tobytes())
        else:
            h.update(np.ascontiguousarray(lab).tobytes())
        h.update(str(img.shape).encode())
        data = img.data
        if getattr(img, "is_lazy", False) and img.shape[1] * img.shape[2] > IN_MEMORY_PIXELS:
            data = img.levels[-1]
        step = max(1, int(math.sqrt(data.shape[1] * data.shape[2] / 65536)))
        h.update(np.ascontiguousarray(np.asarray(data[:, ::step, ::step])).tobytes())
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
        out.append(Sample(img, lab, tl, vl, cache, stats=stats))
    return out


from pixlab.training.pseudo import add_pseudo_labels  # noqa: E402  (the name trainer.py imports from here)
