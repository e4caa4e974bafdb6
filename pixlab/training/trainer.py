"""Training a pixel classifier from sparse labels (brush strokes).

Design (see QUALITY-NOTES): the loss only sees labelled pixels; tiles are sampled around labelled
pixels so every class is seen each epoch; a fraction of strokes per class is held out to choose the
best epoch; optional random-forest pseudo-labels add signal on unlabelled pixels. Batches are prepared
in a background thread so that data loading overlaps the optimizer step.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import queue
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

__all__ = ["train", "prepare_samples", "Sample", "split_strokes"]

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


# ---------------------------------------------------------------------------------------- data prep
def _downsample_labels(labels: np.ndarray, factor: float) -> np.ndarray:
    """Nearest-neighbour downsampling of a sparse label mask that keeps thin strokes.

    Plain striding can drop a 2-px stroke entirely; taking the block maximum keeps every stroke
    (where two classes share a block the higher id wins, which only affects boundary blocks).
    """
    f = int(round(factor))
    if f <= 1:
        return labels
    from skimage.measure import block_reduce
    return block_reduce(labels, (f, f), np.max).astype(labels.dtype)


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
            lab = _downsample_labels(lab, cfg.downsample)[: img.shape[1], : img.shape[2]]
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


def _intensity_stats(images):
    """Raw per-channel training intensities for distribution-shift checks (pixlab.analysis.shift.ood_check)."""
    try:
        from pixlab.analysis.shift import intensity_stats
    except ImportError:  # diagnostics not installed in a trimmed build
        return None
    return intensity_stats(images)


def _fingerprint(images, labels) -> str:
    """A short hash of the training data (labels + a strided sample of each image)."""
    h = hashlib.sha256()
    for img, lab in zip(images, labels):
        h.update(np.ascontiguousarray(lab).tobytes())
        h.update(str(img.shape).encode())
        step = max(1, int(math.sqrt(img.shape[1] * img.shape[2] / 65536)))
        h.update(np.ascontiguousarray(np.asarray(img.data[:, ::step, ::step])).tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------- sampling
class TileSampler:
    """Draws training tiles: centred on labelled pixels (class-balanced) or uniformly at random."""

    def __init__(self, samples: list[Sample], stats: dict, tile: int, n_classes: int, stroke_focus: float,
                 seed: int):
        self.samples, self.stats, self.tile, self.n_classes = samples, stats, tile, n_classes
        self.stroke_focus = stroke_focus
        self.rng = np.random.default_rng(seed)
        # Coordinates of labelled training pixels per class, across images.
        self.coords = []
        for k in range(1, n_classes + 1):
            per = [(i, np.flatnonzero(s.train_labels.ravel() == k)) for i, s in enumerate(samples)]
            self.coords.append([(i, c) for i, c in per if c.size])
        areas = np.array([s.labels.size for s in samples], dtype=float)
        self.image_p = areas / areas.sum()

    def _window(self, sample: Sample, cy: int, cx: int):
        H, W = sample.labels.shape
        t = self.tile
        y0 = int(np.clip(cy - t // 2, 0, max(H - t, 0)))
        x0 = int(np.clip(cx - t // 2, 0, max(W - t, 0)))
        return y0, min(y0 + t, H), x0, min(x0 + t, W)

    def draw(self):
        """One tile: (image (C,t,t) float32, target (t,t) int64 with -1 unlabelled, pseudo (t,t) int64)."""
        rng, t = self.rng, self.tile
        classes = [k for k in range(self.n_classes) if self.coords[k]]
        if classes and rng.random() < self.stroke_focus:
            k = classes[rng.integers(len(classes))]
            i, flat = self.coords[k][rng.integers(len(self.coords[k]))]
            s = self.samples[i]
            p = flat[rng.integers(flat.size)]
            cy, cx = divmod(int(p), s.labels.shape[1])
            # Jitter so the labelled pixel is not always at the tile centre.
            cy += int(rng.integers(-t // 4, t // 4 + 1))
            cx += int(rng.integers(-t // 4, t // 4 + 1))
        else:
            i = int(rng.choice(len(self.samples), p=self.image_p))
            s = self.samples[i]
            cy = int(rng.integers(0, s.labels.shape[0]))
            cx = int(rng.integers(0, s.labels.shape[1]))
        y0, y1, x0, x1 = self._window(s, cy, cx)
        return self._crop(s, y0, y1, x0, x1, s.train_labels)

    def _crop(self, s: Sample, y0, y1, x0, x1, labels):
        t = self.tile
        img = s.read(y0, y1, x0, x1, self.stats)
        lab = labels[y0:y1, x0:x1].astype(np.int64) - 1
        pse = (s.pseudo[y0:y1, x0:x1].astype(np.int64) - 1) if s.pseudo is not None else np.full(lab.shape, -1)
        h, w = lab.shape
        if h < t or w < t:  # image smaller than a tile: pad, padded pixels are unlabelled
            mode = "reflect" if min(h, w) > 1 else "edge"
            img = np.pad(img, ((0, 0), (0, t - h), (0, t - w)), mode=mode)
            lab = np.pad(lab, ((0, t - h), (0, t - w)), constant_values=-1)
            pse = np.pad(pse, ((0, t - h), (0, t - w)), constant_values=-1)
        return np.ascontiguousarray(img, dtype=np.float32), lab, pse

    def validation_tiles(self, max_tiles: int = 32):
        """Fixed tiles that cover the validation strokes (deterministic)."""
        from skimage.measure import regionprops, label as cc_label
        tiles = []
        for s in self.samples:
            if not s.val_labels.any():
                continue
            for r in regionprops(cc_label(s.val_labels > 0, connectivity=2)):
                cy, cx = (int(v) for v in r.centroid)
                tiles.append(self._crop(s, *self._window(s, cy, cx), s.val_labels))
        if len(tiles) > max_tiles:
            idx = np.linspace(0, len(tiles) - 1, max_tiles).round().astype(int)
            tiles = [tiles[i] for i in idx]
        return tiles


# ---------------------------------------------------------------------------------------- augmentation
def build_augmentation(cfg):
    """torchvision.transforms.v2 pipeline applied jointly to image and mask tensors (or None)."""
    if not cfg.augment:
        return None
    import torch
    from torchvision.transforms import v2

    class RandomRot90(v2.Transform):
        # v2 has no exact 90-degree rotation; RandomRotation would interpolate. torch.rot90 is exact.
        def make_params(self, flat_inputs):
            return {"k": int(torch.randint(0, 4, ()).item())}

        def transform(self, inpt, params):
            return torch.rot90(inpt, params["k"], dims=(-2, -1)) if params["k"] else inpt

    class ChannelJitter(v2.Transform):
        # v2.ColorJitter only handles 1 or 3 channels; microscopy has N. Gain/offset per channel
        # on the normalized image is the same idea (brightness/contrast) for any channel count.
        def make_params(self, flat_inputs):
            c = next(x for x in flat_inputs if isinstance(x, torch.Tensor) and x.ndim == 3).shape[0]
            return {"gain": 1 + 0.2 * (2 * torch.rand(c, 1, 1) - 1), "offset": 0.1 * (2 * torch.rand(c, 1, 1) - 1)}

        def transform(self, inpt, params):
            from torchvision import tv_tensors
            if isinstance(inpt, tv_tensors.Mask):
                return inpt
            return inpt * params["gain"] + params["offset"]

    ts = []
    if cfg.flips:
        ts += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    if cfg.rotate90:
        ts.append(RandomRot90())
    if cfg.color_jitter:
        ts.append(ChannelJitter())
    if cfg.elastic:
        ts.append(v2.RandomApply([v2.ElasticTransform(alpha=30.0, sigma=5.0)], p=0.5))
    return v2.Compose(ts) if ts else None


def _collate(tiles, augment, gen_seed):
    """Stack tiles into tensors, augmenting each (image, target, pseudo) jointly."""
    import torch
    from torchvision import tv_tensors
    xs, ys, ps = [], [], []
    # Augmentation randomness is tied to the batch index so runs (and resumed runs) are reproducible.
    # v2 transforms draw from torch's global RNG; the training step itself draws none (no dropout in
    # our architectures), so seeding it from this producer thread does not race with the optimizer.
    torch.manual_seed(gen_seed)
    for img, lab, pse in tiles:
        x = torch.from_numpy(img)
        y = tv_tensors.Mask(torch.from_numpy(lab))
        p = tv_tensors.Mask(torch.from_numpy(pse))
        if augment is not None:
            x, y, p = augment(x, y, p)
        xs.append(torch.as_tensor(x))
        ys.append(torch.as_tensor(y))
        ps.append(torch.as_tensor(p))
    return torch.stack(xs), torch.stack(ys), torch.stack(ps)


class _Prefetcher:
    """Produces batches in a background thread (numpy/torch release the GIL for the heavy parts)."""

    def __init__(self, make_batch: Callable[[int], tuple], n: int, depth: int = 2):
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, args=(make_batch, n), daemon=True)
        self.t.start()

    def _run(self, make_batch, n):
        try:
            for b in range(n):
                if self.stop.is_set():
                    return
                self.q.put(make_batch(b))
        except BaseException as e:  # surface errors in the consumer
            self.q.put(e)
        self.q.put(None)

    def __iter__(self):
        while True:
            item = self.q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self):
        self.stop.set()
        while True:  # drain so the producer can finish
            try:
                self.q.get_nowait()
            except queue.Empty:
                break
        self.t.join(timeout=5)


# ---------------------------------------------------------------------------------------- losses
def sparse_loss(logits, target, pseudo, cfg, class_weights):
    """Loss on labelled pixels only (+ weighted pseudo-labelled pixels).

    ``target``/``pseudo`` hold class index 0..K-1 or -1 for "no label".
    """
    import torch
    import torch.nn.functional as F
    labelled = target >= 0
    # Zero that still depends on the logits, so backward() works on a batch without any label.
    total = logits.sum() * 0.0
    if labelled.any():
        if cfg.loss in ("ce", "ce_dice", "focal"):
            ce = F.cross_entropy(logits, target.clamp_min(0), weight=class_weights, reduction="none")
            if cfg.loss == "focal":
                pt = torch.exp(-F.cross_entropy(logits, target.clamp_min(0), reduction="none"))
                ce = ce * (1 - pt) ** cfg.focal_gamma
            total = total + ce[labelled].mean()
        if cfg.loss in ("dice", "ce_dice"):
            probs = torch.softmax(logits, 1).permute(0, 2, 3, 1)[labelled]  # (N, K), labelled only
            onehot = F.one_hot(target[labelled], logits.shape[1]).to(probs.dtype)
            inter = (probs * onehot).sum(0)
            denom = probs.sum(0) + onehot.sum(0)
            present = onehot.sum(0) > 0
            dice = 1 - (2 * inter + 1) / (denom + 1)
            w = cfg.dice_weight if cfg.loss == "ce_dice" else 1.0
            total = total + w * dice[present].mean()
    if cfg.pseudo_labels:
        pl = (pseudo >= 0) & ~labelled
        if pl.any():
            ce = F.cross_entropy(logits, pseudo.clamp_min(0), reduction="none")
            if cfg.pseudo_balance:
                # Mean per class, then over classes: background is most of an image's confident pixels
                # (84 % in bench/sparse_strokes.py), and a plain mean let it shrink the nuclei.
                per = [ce[pl & (pseudo == k)].mean() for k in range(logits.shape[1]) if (pl & (pseudo == k)).any()]
                total = total + cfg.pseudo_weight * torch.stack(per).mean()
            else:
                total = total + cfg.pseudo_weight * ce[pl].mean()
    return total


def _confusion(pred, target, k):
    m = target >= 0
    return np.bincount(target[m] * k + pred[m], minlength=k * k).reshape(k, k)


def miou_from_confusion(cm: np.ndarray) -> tuple[float, list[float]]:
    """Mean IoU over classes present in the labels, and per-class IoU (NaN where absent)."""
    tp = np.diag(cm).astype(float)
    denom = cm.sum(0) + cm.sum(1) - tp
    present = cm.sum(1) > 0
    iou = np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)
    iou = np.where(present, iou, np.nan)
    return (float(np.nanmean(iou)) if present.any() else float("nan")), iou.tolist()


# ---------------------------------------------------------------------------------------- main
def _dist_info() -> tuple[int, int]:
    """(rank, world_size) under torch.distributed (torchrun), else (0, 1)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _broadcast_buffers(net, src: int = 0) -> None:
    """Give every rank the buffers (BatchNorm running statistics) of rank ``src``.

    DDP broadcasts buffers before each forward pass, so after an epoch's last step each rank holds
    statistics updated with its own batch only.
    """
    import torch.distributed as dist
    for b in net.buffers():
        dist.broadcast(b.data, src)


def _all_reduce(values, op="sum"):
    """Reduce a list of floats across ranks (no-op in a single process)."""
    import torch
    import torch.distributed as dist
    if _dist_info()[1] == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t.cpu().tolist()


def _seed_everything(seed: int, device: str):
    import random
    import torch
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    if device == "cpu":
        # Deterministic kernels so the same seed gives the same weights on a CPU.
        torch.use_deterministic_algorithms(True, warn_only=True)


def _make_optimizer(net, cfg, params_groups):
    import torch
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params_groups, lr=cfg.learning_rate, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params_groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params_groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def _make_scheduler(opt, cfg, steps_per_epoch):
    import torch
    if cfg.scheduler == "one_cycle":
        max_lr = [g["lr"] for g in opt.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=cfg.epochs * steps_per_epoch)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(1, cfg.patience // 3))
    return None


def _class_weight_tensor(cfg, class_names, device):
    import torch
    cw = cfg.class_weights
    if cw is None:
        return None
    if isinstance(cw, dict):
        unknown = sorted(set(cw) - set(class_names))
        if unknown:
            raise ValueError(f"class_weights names unknown class(es) {unknown}; classes are {class_names}")
        w = [float(cw.get(n, 1.0)) for n in class_names]
    else:
        if len(cw) != len(class_names):
            raise ValueError(f"class_weights has {len(cw)} values but there are {len(class_names)} classes "
                             f"{class_names}; give one weight per class")
        w = [float(v) for v in cw]
    return torch.tensor(w, dtype=torch.float32, device=device)


def _pseudo_labels(samples, stats, n_classes, cfg):
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
        lab = (p.argmax(0) + 1).astype(np.uint8)
        lab[conf < cfg.pseudo_threshold] = 0
        s.pseudo = lab


def _default_threads(cfg) -> int:
    """OpenMP threads for CPU training when ``cfg.num_threads`` is not set.

    Standard recipe: leave a core to the batch-preparing thread; on 2 cores, two busy-waiting OpenMP
    threads plus the loader thread (256 px tiles, v2 augmentation) ran 6x fewer steps than one OpenMP
    thread (bench/train_step.py). cpu_quick: its 128 px batches take ~2 ms to prepare, so the loader
    is idle almost all the time; all cores ran 1.8x more steps than cores-1 (112 vs 62 steps in 30 s
    on 2 idle cores, bench/sparse_strokes.py setting).
    """
    n = os.cpu_count() or 2
    return n if cfg.recipe == "cpu_quick" else max(1, n - 1)


def train(samples, cfg=None, class_names: Sequence[str] | None = None, *, colours=None,
          callbacks: Iterable[Callable[[dict], object]] = (), cancel: threading.Event | None = None,
          checkpoint_dir=None, resume=None, init_from=None, progress: bool = True):
    """Train a pixel classifier on sparsely labelled images.

    Parameters
    ----------
    samples : list of (image, labels)
        ``image``: anything :func:`pixlab.open_image` accepts; ``labels``: (Y, X) int array (or a label
        file path) where 0 = unlabelled and k = ``class_names[k-1]``.
    cfg : TrainConfig, optional
        Defaults to ``TrainConfig()``.
    class_names : list of str, optional
        Names of classes 1..K. Default "class 1", ...
    colours : list of [r, g, b], optional
        Display colours per class.
    callbacks : iterable of callables
        Each is called with an event dict (``event`` in "start", "batch", "epoch", "end"). Returning
        ``False`` stops training cooperatively (the best model so far is kept).
    cancel : threading.Event, optional
        Setting it stops training cooperatively.
    checkpoint_dir : path, optional
        Writes ``last/`` (resumable checkpoint) and ``best/`` (model bundle) there, atomically.
    resume : path, optional
        A checkpoint folder (``.../last``) or checkpoint_dir to continue from.
    init_from : path or Model, optional
        Start from a saved model's weights (classes and channels must match).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    pixlab.Model
        The model of the best epoch by ``cfg.monitor``.

    Examples
    --------
    >>> import pixlab
    >>> img, labels, names = pixlab.datasets.sample_ihc()          # doctest: +SKIP
    >>> model = pixlab.train([(img, labels)], pixlab.TrainConfig(epochs=2), class_names=names)  # doctest: +SKIP
    """
    import torch
    from pixlab.training.config import TrainConfig

    cfg = (cfg or TrainConfig())
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg must be a pixlab.TrainConfig, got {type(cfg).__name__}")
    user_cfg = cfg
    cfg = cfg.resolved()
    device = cfg.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"TrainConfig.device={device!r} but no CUDA GPU is available; use device='auto' or 'cpu'")
    _seed_everything(cfg.seed, device)
    t_start = time.monotonic()
    threads_before = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(cfg.num_threads or _default_threads(cfg))
    try:
        return _train(samples, cfg, user_cfg, class_names, colours, callbacks, cancel, checkpoint_dir, resume,
                      init_from, progress, device, t_start)
    finally:
        torch.set_num_threads(threads_before)


def _train(samples, cfg, user_cfg, class_names, colours, callbacks, cancel, checkpoint_dir, resume, init_from,
           progress, device, t_start):
    import torch
    from pixlab.labels.masks import annotation_warnings, default_colours, label_stats
    from pixlab.model.model import Model
    from pixlab.nn.networks import build_network, freeze
    from pixlab.image.normalize import apply, compute_stats

    images, labels, class_names = prepare_samples(samples, cfg, class_names)
    K = len(class_names)
    colours = colours or default_colours(K)
    stats_cls = label_stats(labels, class_names)
    for w in annotation_warnings(stats_cls):
        warnings.warn(w, stacklevel=2)
    train_l, val_l, split_info = split_strokes(labels, K, cfg.validation_split, cfg.seed)
    if not any(v.any() for v in val_l):
        warnings.warn("no stroke could be held out for validation (each class needs 2+ strokes); "
                      "validation uses the training strokes, so it cannot detect overfitting", stacklevel=2)
        val_l = [lab.copy() for lab in labels]

    stats = compute_stats(images, method=cfg.normalization, per_channel=cfg.per_channel,
                          fixed_range=cfg.fixed_range, seed=cfg.seed)
    samples_ = []
    for img, lab, tl, vl in zip(images, labels, train_l, val_l):
        cache = None
        if img.shape[1] * img.shape[2] <= IN_MEMORY_PIXELS:
            cache = apply(img.read(), stats)
            if not np.isfinite(cache).all():
                raise ValueError(f"image '{img.name}' contains NaN or infinite values; replace them "
                                 f"(e.g. numpy.nan_to_num) before training")
        samples_.append(Sample(img, lab, tl, vl, cache))
    if cfg.pseudo_labels:
        _pseudo_labels(samples_, stats, K, cfg)

    channel_names = images[0].channel_names
    net = build_network(cfg.architecture, cfg.encoder, len(channel_names), K, pretrained=False,
                        weights=cfg.encoder_weights)
    weights_source = "random"
    if init_from is not None:
        from pixlab.model.bundle import load_model
        src = init_from if isinstance(init_from, Model) else load_model(init_from)
        if src.class_names != class_names or src.channel_names != channel_names:
            raise ValueError(f"init_from model has classes {src.class_names} and channels {src.channel_names} "
                             f"but this data has {class_names} and {channel_names}; they must match")
        net.load_state_dict(src.network.state_dict())
        weights_source = "init_from"
    elif cfg.pretrained:
        try:
            net = build_network(cfg.architecture, cfg.encoder, len(channel_names), K, pretrained=True,
                                weights_path=cfg.weights_path, weights=cfg.encoder_weights)
            weights_source = "pretrained"
        except FileNotFoundError as e:
            if cfg.weights_path:
                raise
            warnings.warn(f"{e} Training from random initialisation instead.", stacklevel=2)
    freeze_info = freeze(net, cfg.freeze_blocks)
    net.to(device)
    rank, world = _dist_info()
    fwd = net
    if world > 1:
        # PyTorch's own DDP: it broadcasts rank 0's initial weights and all-reduces gradients.
        from torch.nn.parallel import DistributedDataParallel
        # device "cuda" means the current device (torch.cuda.set_device(LOCAL_RANK)), not GPU 0.
        ids = [torch.device(device).index if torch.device(device).index is not None
               else torch.cuda.current_device()] if device.startswith("cuda") else None
        fwd = DistributedDataParallel(net, device_ids=ids)
        callbacks = callbacks if rank == 0 else ()
        progress = progress and rank == 0

    enc_params = set(id(p) for p in getattr(net, "encoder", torch.nn.Module()).parameters())
    groups = [{"params": [p for p in net.parameters() if p.requires_grad and id(p) not in enc_params],
               "lr": cfg.learning_rate}]
    enc_trainable = [p for p in net.parameters() if p.requires_grad and id(p) in enc_params]
    if enc_trainable:
        groups.append({"params": enc_trainable, "lr": cfg.learning_rate * cfg.encoder_lr_scale})
    opt = _make_optimizer(net, cfg, groups)
    ema = None
    if cfg.weight_average == "ema":
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
        # use_buffers: BatchNorm running statistics are averaged with the weights, so the average is
        # usable as is (no extra pass over the data to re-estimate them).
        ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    eval_net = ema.module if ema is not None else net

    tile = cfg.tile_size
    if cfg.patches_per_epoch:
        n_patches = cfg.patches_per_epoch
    else:
        from skimage.measure import regionprops
        area = 0
        for lab in labels:
            props = regionprops((lab > 0).astype(np.uint8))
            if props:
                y0, x0, y1, x1 = props[0].bbox
                area += (y1 - y0 + tile) * (x1 - x0 + tile)
        n_patches = max(4 * cfg.batch_size, int(math.ceil(area / tile ** 2)))
    steps = max(1, int(math.ceil(n_patches / cfg.batch_size)))
    sched = _make_scheduler(opt, cfg, steps)
    cw = _class_weight_tensor(cfg, class_names, device)
    augment = build_augmentation(cfg)
    # Each rank draws its own tiles (a distributed sampler over the random tile stream).
    sampler = TileSampler(samples_, stats, tile, K, cfg.stroke_focus, cfg.seed + 7919 * rank)
    val_tiles = sampler.validation_tiles()[rank::world]
    use_amp = device.startswith("cuda") and cfg.amp
    scaler = torch.amp.GradScaler("cuda") if use_amp else None

    history: list[dict] = []
    best = {"score": None, "epoch": None, "state": None}
    start_epoch = 0
    if resume is not None:
        from pixlab.training.checkpoint import load_checkpoint
        st = load_checkpoint(resume, net, opt, sched, ema)
        start_epoch, history, best = st["epoch"], st["history"], st["best"]
        sampler.rng.bit_generator.state = st["sampler_state"]
        if rank:  # the checkpoint holds rank 0's tile stream; other ranks must not repeat it
            sampler.rng = np.random.default_rng([cfg.seed, rank, start_epoch])
    meta = {
        "split": split_info, "label_stats": stats_cls, "data_fingerprint": _fingerprint(images, labels),
        "freeze": freeze_info, "weights_source": weights_source, "user_config": user_cfg.to_dict(),
        "inference_tile_size": tile if cfg.recipe == "standard" else max(tile, 512),
        "intensity_stats": _intensity_stats(images),
        "train_images": [im.name for im in images], "patches_per_epoch": n_patches, "world_size": world,
    }

    def emit(ev: dict) -> bool:
        ok = True
        for cb in callbacks:
            try:
                if cb(ev) is False:
                    ok = False
            except Exception as e:  # a broken plot must not kill a long training run
                warnings.warn(f"training callback {cb!r} failed: {e}")
        return ok and not (cancel is not None and cancel.is_set())

    def make_model(state=None) -> Model:
        n2 = copy.deepcopy(net).cpu()
        if state is not None:
            n2.load_state_dict(state)
        return Model(n2, class_names, colours, channel_names, stats, cfg, history,
                     {**meta, "best_epoch": best["epoch"], "best_score": best["score"]})

    def validate():
        eval_net.eval()
        cm = np.zeros((K, K), dtype=np.int64)
        loss_sum, loss_n = 0.0, 0
        with torch.inference_mode():
            for j in range(0, len(val_tiles), cfg.batch_size):
                chunk = val_tiles[j:j + cfg.batch_size]
                x = torch.from_numpy(np.stack([c[0] for c in chunk])).to(device)
                y = torch.from_numpy(np.stack([c[1] for c in chunk])).to(device)
                logits = eval_net(x).float()
                if (y >= 0).any():
                    ce = torch.nn.functional.cross_entropy(logits, y.clamp_min(0), reduction="none")[y >= 0]
                    loss_sum, loss_n = loss_sum + float(ce.sum()), loss_n + int(ce.numel())
                cm += _confusion(logits.argmax(1).cpu().numpy().ravel(), y.cpu().numpy().ravel(), K)
        red = _all_reduce([loss_sum, loss_n, *cm.ravel().tolist()])
        loss_sum, loss_n = red[0], red[1]
        cm = np.asarray(red[2:], dtype=np.int64).reshape(K, K)
        miou, iou = miou_from_confusion(cm)
        return (loss_sum / loss_n if loss_n else float("nan")), miou, iou

    emit({"event": "start", "epochs": cfg.epochs, "steps_per_epoch": steps, "config": cfg.to_dict(),
          "class_names": class_names})
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.epochs, initial=start_epoch, desc="training", unit="epoch")
    stop_reason = "epochs"
    since_best = 0 if best["epoch"] is None else len(history) - 1 - best["epoch"]
    epoch = start_epoch
    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        base_seed = cfg.seed * 1_000_003 + epoch * 10_007 + rank * 101

        def make_batch(b, base_seed=base_seed):
            tiles = [sampler.draw() for _ in range(cfg.batch_size)]
            return _collate(tiles, augment, base_seed + b)

        pf = _Prefetcher(make_batch, steps)
        losses, stopped = [], False
        try:
            for b, (x, y, p) in enumerate(pf):
                x, y, p = x.to(device), y.to(device), p.to(device)
                opt.zero_grad(set_to_none=True)
                with torch.autocast(torch.device(device).type, enabled=use_amp):
                    logits = fwd(x)
                loss = sparse_loss(logits.float(), y, p, cfg, cw)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                if ema is not None:
                    ema.update_parameters(net)
                if sched is not None and cfg.scheduler != "plateau":
                    sched.step()
                losses.append(float(loss.item()))
                elapsed = time.monotonic() - t_start
                ok = emit({"event": "batch", "epoch": epoch, "batch": b, "train_loss": losses[-1],
                           "lr": opt.param_groups[0]["lr"], "elapsed_s": elapsed})
                over_time = cfg.time_limit_s is not None and elapsed > cfg.time_limit_s
                if world > 1:  # every rank must stop at the same step, or DDP hangs
                    ok, over_time = _all_reduce([float(not ok), float(over_time)], "max")
                    ok, over_time = not ok, bool(over_time)
                if not ok:
                    stop_reason, stopped = "cancelled", True
                    break
                if over_time:
                    stop_reason, stopped = "time_limit", True
                    break
        finally:
            pf.close()
        if not losses:
            break
        if world > 1:  # one set of BatchNorm statistics for validation and the saved weights
            _broadcast_buffers(net)
            if ema is not None:
                _broadcast_buffers(ema.module)
        val_loss, val_miou, val_iou = validate()
        if sched is not None and cfg.scheduler == "plateau":
            sched.step(val_loss)
        if cfg.monitor == "val_loss":
            score = val_loss
        else:
            # A few held-out strokes saturate mIoU (often 1.0 after a few epochs); among equal mIoU the
            # lower held-out loss wins, instead of the first epoch that reached it. The loss term
            # (< 5e-4) never outweighs a 1e-3 step of the rounded mIoU.
            score = -round(val_miou, 3) + 1e-5 * min(val_loss, 50.0) if not math.isnan(val_miou) else float("nan")
        improved = best["score"] is None or (not math.isnan(score) and score < best["score"])
        if improved:
            best = {"score": float(score), "epoch": epoch,
                    "state": {k: v.detach().cpu().clone() for k, v in eval_net.state_dict().items()}}
            since_best = 0
        else:
            since_best += 1
        rec = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
               "val_miou": val_miou, "val_iou": val_iou, "lr": opt.param_groups[0]["lr"],
               "elapsed_s": time.monotonic() - t_start, "steps": len(losses), "best": improved}
        history.append(rec)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train=f"{rec['train_loss']:.3f}", val=f"{val_loss:.3f}", miou=f"{val_miou:.3f}")
        if checkpoint_dir is not None and rank == 0:  # only rank 0 writes
            from pixlab.training.checkpoint import save_checkpoint
            if (epoch + 1) % cfg.checkpoint_every == 0 or stopped:
                save_checkpoint(Path(checkpoint_dir) / "last", net, opt, sched, epoch + 1, history, best,
                                sampler.rng.bit_generator.state, cfg, ema)
            if improved:
                make_model(best["state"]).save(Path(checkpoint_dir) / "best")
        ok = emit({"event": "epoch", **rec, "best_epoch": best["epoch"]})
        if world > 1:
            ok = not _all_reduce([float(not ok)], "max")[0]
        if stopped:
            break
        if not ok:
            stop_reason = "cancelled"
            break
        if cfg.early_stopping and since_best >= cfg.patience:
            stop_reason = "early_stopping"
            break
        over = cfg.time_limit_s is not None and time.monotonic() - t_start > cfg.time_limit_s
        if world > 1:
            over = bool(_all_reduce([float(over)], "max")[0])
        if over:
            stop_reason = "time_limit"
            break
    if bar is not None:
        bar.close()
    meta["stop_reason"] = stop_reason
    meta["train_time_s"] = time.monotonic() - t_start
    model = make_model(best["state"])
    emit({"event": "end", "stop_reason": stop_reason, "best_epoch": best["epoch"], "epochs_run": len(history)})
    return model
