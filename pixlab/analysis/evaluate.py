"""Measuring a model against labelled images: :func:`evaluate` -> :class:`Report`.

Per-class metrics and confusion matrices on labelled pixels, separately for the training and
validation strokes when the data are the model's training data (the trainer's stroke split is
reproduced exactly), a per-tile review table (loss, disagreement, mIoU, thumbnails) and the
loss-curve diagnosis. Only the labelled windows of an image are predicted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from pixlab.analysis.history import Diagnosis, diagnose_history
from pixlab.analysis.metrics import EPS as _EPS, confusion_matrix, mean_iou, metrics_from_confusion
from pixlab.analysis.plots import plot_confusion, plot_tiles
from pixlab.inference.backends import inference_batch_size
from pixlab.labels.classids import argmax_labels
from pixlab.training.samples import downsample_labels
from pixlab.training.strokes import is_store, read_labels

__all__ = ["Report", "evaluate", "tiles_with_confusion", "SPLITS"]

SPLITS = ("all", "train", "validation")


@dataclass
class Report:
    """Result of :func:`evaluate`.

    Attributes
    ----------
    class_names : list of str
    confusion : dict of str -> ndarray (K, K)
        Pixel counts per split ("all", and "train" / "validation" when the split is known); rows are
        the labelled class, columns the predicted class.
    tiles : pandas.DataFrame
        Per-tile review, worst (highest loss) first; see :func:`evaluate`.
    notes : list of str
        Caveats: classes without labels, unknown split, ...
    training : Diagnosis or None
        Loss-curve diagnosis of the model's history.
    """

    class_names: list[str]
    confusion: dict
    tiles: object = None
    notes: list[str] = field(default_factory=list)
    training: Diagnosis | None = None

    @property
    def splits(self) -> list[str]:
        """Splits with metrics, in the order all, train, validation."""
        return [s for s in SPLITS if s in self.confusion]

    @property
    def mean_iou(self) -> dict:
        """Mean IoU per split over the classes that have labelled pixels."""
        return {s: mean_iou(self.confusion[s]) for s in self.splits}

    def metrics(self, split: str = "all"):
        """Per-class metrics of one split (see :func:`metrics_from_confusion`)."""
        return metrics_from_confusion(self.confusion[self._split(split)], self.class_names)

    def confusion_normalized(self, split: str = "all") -> np.ndarray:
        """Row-normalized confusion matrix (each labelled class sums to 1; NaN rows for unlabelled classes)."""
        cm = self.confusion[self._split(split)].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return cm / cm.sum(1, keepdims=True)

    def _split(self, split: str) -> str:
        if split not in self.confusion:
            raise ValueError(f"split {split!r} is not in this report; it has {self.splits}"
                             + ("" if "train" in self.confusion else
                                " (train/validation need the model's own training data, see Report.notes)"))
        return split

    def to_frame(self):
        """All splits' per-class metrics in one table, indexed by (split, class)."""
        import pandas as pd
        frames = [self.metrics(s).assign(split=s) for s in self.splits]
        return pd.concat(frames).set_index(["split", "class"])

    def summary(self):
        """One row per split: mean IoU, labelled pixels, pixel accuracy."""
        import pandas as pd
        rows = []
        for s in self.splits:
            cm = self.confusion[s]
            total = int(cm.sum())
            rows.append({"split": s, "mean_iou": self.mean_iou[s], "labelled_pixels": total,
                         "accuracy": float(np.trace(cm) / total) if total else float("nan")})
        return pd.DataFrame(rows).set_index("split")

    def to_markdown(self, floatfmt: str = ".3f") -> str:
        """Summary, per-class metrics, notes and the loss-curve diagnosis as markdown."""
        # One format per column: tabulate would otherwise print pixel counts as floats.
        summary = self.summary().to_markdown(floatfmt=("", floatfmt, ".0f", floatfmt))
        per_class = self.to_frame().reset_index().to_markdown(index=False, floatfmt=floatfmt)
        parts = ["### Summary", summary, "", "### Per class", per_class]
        if self.notes:
            parts += ["", "### Notes"] + [f"- {n}" for n in self.notes]
        if self.training is not None:
            parts += ["", self.training.to_markdown()]
        return "\n".join(parts)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def top_confusions(self, split: str = "all", n: int = 5):
        """The largest off-diagonal cells: which labelled class is mistaken for which.

        Returns
        -------
        pandas.DataFrame
            ``true``, ``predicted``, ``pixels``, ``fraction`` (of the true class's labelled pixels),
            most pixels first; only cells with at least one pixel.
        """
        import pandas as pd
        cm = self.confusion[self._split(split)]
        rows = [{"true": self.class_names[k], "predicted": self.class_names[j], "pixels": int(cm[k, j]),
                 "fraction": float(cm[k, j] / cm[k].sum())}
                for k in range(len(cm)) for j in range(len(cm)) if k != j and cm[k, j] > 0]
        df = pd.DataFrame(rows, columns=["true", "predicted", "pixels", "fraction"])
        return df.sort_values("pixels", ascending=False, kind="stable").head(int(n)).reset_index(drop=True)

    def plot_confusion(self, split: str = "all", normalize: bool = True):
        """Confusion matrix figure of one split (see :func:`plot_confusion`)."""
        return plot_confusion(self.confusion[self._split(split)], self.class_names, normalize=normalize,
                              title=f"{split} labels")

    def tiles_with_confusion(self, true_class, predicted_class, split: str | None = None):
        """Tiles holding labelled pixels of ``true_class`` predicted as ``predicted_class`` (a matrix cell)."""
        return tiles_with_confusion(self.tiles, true_class, predicted_class, self.class_names, split=split)

    def plot_tiles(self, rows=None, max_rows: int = 6):
        """Image / labels / prediction thumbnails of some tile rows (default: the worst)."""
        rows = self.tiles if rows is None else rows
        return plot_tiles(rows, max_rows=max_rows)


def _prepare(model, samples):
    """Open, match channels, validate and downsample like the trainer. Returns [(img, labels)].

    Labels of a whole slide stay a chunked label store, as in training (nothing slide-sized is built).
    """
    from pixlab.image.io import open_image
    from pixlab.inference.predict import match_channels
    from pixlab.training.samples import downsample_sample_labels, open_labels

    if isinstance(samples, tuple) and len(samples) == 2 and not isinstance(samples[0], (list, tuple)):
        samples = [samples]  # one (image, labels) pair
    if not isinstance(samples, (list, tuple)) or not samples:
        raise ValueError("samples must be a non-empty list of (image, labels) pairs, e.g. [(img, labels)]")
    out = []
    ds = float(model.config.downsample)
    for i, pair in enumerate(samples):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise ValueError(f"samples[{i}] must be an (image, labels) pair, got {type(pair).__name__}")
        img, lab = pair
        img = match_channels(model, open_image(img))
        lab = open_labels(lab, img.shape[1:], model.class_names, f"labels of samples[{i}]")
        if not lab.any():
            raise ValueError(f"labels of samples[{i}] (image '{img.name}') have no labelled pixel; brush some "
                             f"strokes or pass the label file saved by the annotator")
        if ds > 1:
            img = img.downsampled(ds)
            lab = downsample_sample_labels(lab, ds, img.shape[1:])
        out.append((img, lab))
    return out


def _training_split(model, prepared, split):
    """Train/validation label lists when ``prepared`` is the model's training data, else (None, note)."""
    from pixlab.training.samples import fingerprint as _fingerprint, split_strokes

    if split is False:
        return None, None
    meta = model.metadata
    cfg = model.config
    images, labels = [p[0] for p in prepared], [p[1] for p in prepared]
    why = None
    if "split" not in meta or "data_fingerprint" not in meta:
        why = "the model's metadata has no split information"
    elif _fingerprint(images, labels) != meta["data_fingerprint"]:
        why = ("these images/labels are not the ones the model was trained on (data fingerprint differs), "
               "so all labels are unseen test data")
    if why is None:
        train_l, val_l, info = split_strokes(labels, model.n_classes, cfg.validation_split, cfg.seed)
        if list(info["val_strokes"]) != list(meta["split"].get("val_strokes", [])):
            why = (f"the reproduced stroke split {info['val_strokes']} does not match the model's "
                   f"{meta['split'].get('val_strokes')}")
        elif not any(v.any() for v in val_l):
            why = "no stroke was held out for validation in training (each class needs 2+ strokes)"
        else:
            return (train_l, val_l), None
    if split is True:
        raise ValueError(f"cannot separate training and validation labels: {why}; pass split=None or False")
    return None, f"Train/validation split not shown: {why}."


def _predict_region(model, img, stats, region, batch_size: int) -> np.ndarray:
    """(K, h, w) probabilities of ``region`` of a (working-resolution) image, tiled and blended."""
    from pixlab.image.image import Image
    from pixlab.inference.predict import tile_reader
    from pixlab.inference.tiling import predict_tiled

    y0, y1, x0, x1 = region
    # A view of the window (lazy for a slide): the reader's row bands span the window, not the slide.
    window = Image(img.data[:, y0:y1, x0:x1], img.channel_names, img.pixel_size, name=img.name)
    return predict_tiled(tile_reader(window, stats), (y1 - y0, x1 - x0),
                         model.n_classes, model.infer_batch, tile=model.inference_tile_size,
                         overlap=model.config.tile_overlap, batch_size=batch_size)


def _label_windows(labels, block: int):
    """Regions to predict: the ``block`` grid cells holding labels, grown by one cell of context.

    Whole slides are usually labelled in a few places; predicting only these windows costs a
    fraction of the slide, while each review tile still gets a full tile of context around it.

    Returns
    -------
    list of ((y0, y1, x0, x1), own)
        ``own`` (bool, one entry per grid cell of the window) marks the labelled cells that belong to
        this window. Bounding boxes of two groups can overlap (an L-shaped group around another), so
        each labelled cell is counted in exactly one window: its own group's.
    """
    from scipy import ndimage as ndi
    from skimage.measure import regionprops
    from skimage.measure import label as cc_label

    H, W = labels.shape
    # Which grid cells hold labels: the block-maximum rule of training (a store reads its painted chunks only).
    has = (labels.read_max((0, H, 0, W), block) if is_store(labels) else downsample_labels(labels, block)) > 0
    groups = cc_label(ndi.binary_dilation(has, np.ones((3, 3), bool)), connectivity=2)
    out = []
    for r in regionprops(groups):
        by0, bx0, by1, bx1 = r.bbox
        own = (groups[by0:by1, bx0:bx1] == r.label) & has[by0:by1, bx0:bx1]
        out.append(((by0 * block, min(by1 * block, H), bx0 * block, min(bx1 * block, W)), own))
    return out


def _thumb_labels(lab: np.ndarray, f: int) -> np.ndarray:
    from pixlab.training.samples import downsample_labels
    return downsample_labels(lab, f) if f > 1 else lab


def evaluate(model, samples, split: bool | None = None, *, tile_size: int | None = None,
             thumb_size: int = 96, history: bool = True) -> Report:
    """Measure a model against labelled images: per-class metrics, confusion, per-tile review.

    Parameters
    ----------
    model : pixlab.Model
    samples : list of (image, labels)
        As for :func:`pixlab.train`; labels may be file paths. To see training and validation
        metrics separately, pass the model's own training data, in the same order.
    split : bool, optional
        None (default): separate training and validation strokes when ``samples`` are the model's
        training data (checked with the data fingerprint; the trainer's split is reproduced with
        :func:`pixlab.training.trainer.split_strokes` and the same seed). True: require that (ValueError if
        impossible). False: one "all" split only.
    tile_size : int, optional
        Side of the review tiles at the model's working resolution (default: the training tile size).
    thumb_size : int
        Longest side of the thumbnails in the tile table.
    history : bool
        Add the loss-curve diagnosis of ``model.history``.

    Returns
    -------
    Report
        ``report.tiles`` has one row per (tile, split) with labelled pixels: ``image`` (index into
        samples), ``image_name``, ``split``, ``y0, y1, x0, x1`` (full-resolution pixels),
        ``labelled`` (pixels), ``loss`` (mean cross-entropy), ``disagreement`` (% of labelled pixels
        predicted as another class), ``miou``, ``confusion`` ((K, K) counts) and thumbnails
        ``thumb_image`` (RGB), ``thumb_labels`` (RGBA), ``thumb_prediction`` (RGB); sorted worst first.

    Raises
    ------
    ValueError
        Channels of an image do not match the model's (message from
        :func:`pixlab.inference.predict.match_channels`), labels do not fit the image or are empty.
    """
    import pandas as pd

    from pixlab.image.display import auto_range, composite, label_overlay
    from pixlab.inference.predict import image_stats_for

    prepared = _prepare(model, samples)
    K, names = model.n_classes, model.class_names
    lists, note = _training_split(model, prepared, split)
    notes = [note] if note else []
    split_labels = {"all": [p[1] for p in prepared]}
    if lists is not None:
        split_labels["train"], split_labels["validation"] = lists
    block = int(tile_size or model.config.tile_size)
    ds = max(1, int(round(float(model.config.downsample))))
    confusion = {s: np.zeros((K, K), np.int64) for s in split_labels}
    colours = np.asarray(model.colours, np.uint8)
    rows = []
    for i, (img, lab) in enumerate(prepared):
        stats = image_stats_for(model, img)
        bs = inference_batch_size(model, model.inference_tile_size, img.n_channels)  # once per image
        ranges = None if img.is_rgb else [auto_range(img, c) for c in range(img.n_channels)]
        for win, own in _label_windows(lab, block):
            wy0, wy1, wx0, wx1 = win
            probs = _predict_region(model, img, stats, win, bs)
            pred = argmax_labels(probs)
            mine = np.repeat(np.repeat(own, block, 0), block, 1)[: wy1 - wy0, : wx1 - wx0]
            # This window's labels of each split (a slide's label store is read here only).
            win_labs = {s: read_labels(labs[i], *win) for s, labs in split_labels.items()}
            for s, wl in win_labs.items():
                confusion[s] += confusion_matrix(np.where(mine, wl, 0), pred, K)
            for by, bx in zip(*np.nonzero(own)):
                ty, tx = wy0 + int(by) * block, wx0 + int(bx) * block
                ty1, tx1 = min(ty + block, wy1), min(tx + block, wx1)
                sl = (slice(ty - wy0, ty1 - wy0), slice(tx - wx0, tx1 - wx0))
                tp, tpred = probs[(slice(None),) + sl], pred[sl]
                f = max(1, math.ceil(max(ty1 - ty, tx1 - tx) / thumb_size))
                thumbs = None
                for s, wl in win_labs.items():
                    if s == "all" and len(split_labels) > 1:
                        continue  # with a known split each labelled pixel is in exactly one row
                    sl_lab = wl[sl]
                    m = sl_lab > 0
                    if not m.any():
                        continue
                    if thumbs is None:  # shared by the train and validation rows of this tile
                        thumbs = (composite(img, ranges=ranges, region=(ty, ty1, tx, tx1), downsample=f),
                                  colours[tpred[::f, ::f] - 1])
                    p_true = np.take_along_axis(tp, (sl_lab.astype(np.int64) - 1).clip(0)[None], 0)[0][m]
                    cm = confusion_matrix(sl_lab, tpred, K)
                    rows.append({
                        "image": i, "image_name": img.name, "split": s,
                        "y0": ty * ds, "y1": ty1 * ds, "x0": tx * ds, "x1": tx1 * ds,
                        "labelled": int(m.sum()),
                        "loss": float(-np.log(np.clip(p_true, _EPS, 1)).mean()),
                        "disagreement": float(100.0 * (tpred[m] != sl_lab[m]).mean()),
                        "miou": mean_iou(cm), "confusion": cm,
                        "thumb_image": thumbs[0],
                        "thumb_labels": label_overlay(_thumb_labels(sl_lab, f), model.colours, 1.0),
                        "thumb_prediction": thumbs[1],
                    })
    cols = ["image", "image_name", "split", "y0", "y1", "x0", "x1", "labelled", "loss", "disagreement", "miou",
            "confusion", "thumb_image", "thumb_labels", "thumb_prediction"]
    tiles = pd.DataFrame(rows, columns=cols).sort_values("loss", ascending=False, kind="stable")
    tiles = tiles.reset_index(drop=True)
    for s in confusion:
        absent = [names[k] for k in range(K) if confusion[s][k].sum() == 0]
        if absent:
            notes.append(f"{s} labels have no pixel of class(es) {absent}: their metrics are NaN; "
                         f"brush strokes of them to measure them.")
    diag = diagnose_history(model.history) if history and model.history else None
    return Report(list(names), confusion, tiles, notes, diag)


def _class_id(cls, class_names) -> int:
    if isinstance(cls, str):
        if cls not in class_names:
            raise ValueError(f"class {cls!r} is unknown; classes are {list(class_names)}")
        return list(class_names).index(cls) + 1
    if isinstance(cls, bool) or not isinstance(cls, (int, np.integer)) or not 1 <= cls <= len(class_names):
        raise ValueError(f"class {cls!r} must be a name from {list(class_names)} or an id 1..{len(class_names)}")
    return int(cls)


def tiles_with_confusion(tiles, true_class, predicted_class, class_names: Sequence[str], split: str | None = None):
    """Select the review tiles behind one confusion-matrix cell.

    Parameters
    ----------
    tiles : pandas.DataFrame
        ``Report.tiles``.
    true_class, predicted_class : str or int
        Class names or ids (1..K): the matrix row and column.
    class_names : sequence of str
    split : str, optional
        Only rows of this split ("train", "validation" or "all").

    Returns
    -------
    pandas.DataFrame
        The rows with at least one such pixel, most such pixels first, with a ``cell_pixels`` column.
    """
    k = _class_id(true_class, class_names) - 1
    j = _class_id(predicted_class, class_names) - 1
    t = tiles if split is None else tiles[tiles["split"] == split]
    counts = np.array([int(cm[k, j]) for cm in t["confusion"]], dtype=np.int64)
    out = t.assign(cell_pixels=counts)
    return out[out["cell_pixels"] > 0].sort_values("cell_pixels", ascending=False, kind="stable")
