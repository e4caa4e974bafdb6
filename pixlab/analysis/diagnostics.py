"""Diagnostics: what a trained model gets wrong, where, and what to try next.

Core module (no Jupyter imports): plain arrays, pandas tables and matplotlib figures, so notebook 03
and the brush annotator only display what is computed here.

- :func:`evaluate` -> :class:`Report`: per-class IoU, Dice, precision, recall and confusion matrices
  on labelled pixels, separately for the training and validation strokes when the data are the
  model's training data (the trainer's stroke split is reproduced exactly), plus a per-tile review
  table (loss, disagreement, mIoU, thumbnails) and the loss-curve diagnosis.
- :func:`pixel_maps` / :func:`plot_maps` / :func:`map_overlay`: per-pixel loss, confidence, entropy,
  margin and disagreement over a whole image.
- :func:`diagnose_history`: names the guide's loss-curve pattern and its suggested actions.
- Guided annotation (:mod:`pixlab.analysis.active`) and distribution shift (:mod:`pixlab.analysis.shift`) are
  re-exported here, so ``import pixlab.analysis.diagnostics as dx`` gives the whole toolbox.

Metrics use the convention of the labels: rows of a confusion matrix are the labelled (true) class,
columns the predicted class, class ``k`` at index ``k - 1``. Only labelled pixels count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from pixlab.analysis.active import _probs, label_refinements, strokes_in_box, suggest_regions
from pixlab.analysis.shift import adabn, intensity_stats, ood_check

__all__ = [
    "MAP_STYLES",
    "Report",
    "Diagnosis",
    "evaluate",
    "confusion_matrix",
    "metrics_from_confusion",
    "tiles_with_confusion",
    "plot_tiles",
    "plot_confusion",
    "pixel_maps",
    "plot_maps",
    "map_overlay",
    "diagnose_history",
    "plot_history",
    "plot_suggestions",
    "next_steps",
    "suggest_regions",
    "label_refinements",
    "strokes_in_box",
    "ood_check",
    "adabn",
    "intensity_stats",
]

SPLITS = ("all", "train", "validation")
_EPS = 1e-7  # probabilities are clamped here before log(): a confident mistake costs ~16, not inf


# ------------------------------------------------------------------------------------------ metrics
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
        iou = np.where(present, tp / (tp + fp + fn), np.nan)
        dice = np.where(present, 2 * tp / (2 * tp + fp + fn), np.nan)
        recall = np.where(present, tp / labelled, np.nan)
        precision = np.where(present & (predicted > 0), tp / predicted, np.nan)
    notes = ["" if p else "no labelled pixels: metrics undefined (NaN)" for p in present]
    for k in np.flatnonzero(present & (predicted == 0)):
        notes[k] = "never predicted: precision undefined (NaN)"
    return pd.DataFrame({"class": names, "iou": iou, "dice": dice, "precision": precision, "recall": recall,
                         "pixels": labelled.astype(np.int64), "predicted": predicted.astype(np.int64),
                         "note": notes})


def _mean_iou(cm) -> float:
    iou = metrics_from_confusion(cm, [str(i) for i in range(len(cm))])["iou"].to_numpy()
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


# ------------------------------------------------------------------------------------------ loss curves
@dataclass
class Diagnosis:
    """A named loss-curve pattern (from the guide's "What to watch in the loss chart").

    Attributes
    ----------
    pattern : str
        "good", "overfitting", "underfitting", "unstable", "too_low_lr", "too_short" or "unclear".
    title : str
        The guide's diagnosis in words.
    explanation : str
        What in the history led to it, with numbers.
    actions : list of str
        The guide's suggested actions.
    evidence : dict
        The measured quantities.
    """

    pattern: str
    title: str
    explanation: str
    actions: list[str]
    evidence: dict = field(default_factory=dict)

    def to_markdown(self) -> str:
        """The diagnosis as a short markdown paragraph with a bullet list of actions."""
        lines = [f"**Loss curve: {self.title}** ({self.pattern}). {self.explanation}", ""]
        lines += [f"- {a}" for a in self.actions]
        return "\n".join(lines)

    def __str__(self) -> str:
        return f"{self.title}: {self.explanation} Try: " + "; ".join(self.actions)


# The guide's "If results are poor" lists, keyed by pattern.
_ACTIONS = {
    "good": ("Good training", ["Continue: the curves look healthy.",
                               "If some classes still score low, add strokes for them at class boundaries."]),
    "overfitting": ("Overfitting (train loss decreases, validation loss increases)",
                    ["Add more training data: more annotations, more images.",
                     "Enable more augmentation (color jitter, elastic deformation).",
                     "Freeze more encoder layers (TrainConfig.freeze_blocks).",
                     "Reduce the learning rate.",
                     "Reduce model capacity (resnet34 instead of resnet50).",
                     "Increase validation_split to detect overfitting earlier."]),
    "underfitting": ("Underfitting (both losses plateau early at a high value)",
                     ["Increase epochs.",
                      "Increase model capacity (resnet50 instead of resnet34).",
                      "Unfreeze more encoder layers.",
                      "Check annotation quality (see the label-refinement suggestions)."]),
    "unstable": ("Unstable training (loss oscillates): learning rate too high",
                 ["Reduce the learning rate (try 1e-4 or 1e-5).",
                  "Switch to the One Cycle scheduler.",
                  "Reduce the batch size.",
                  "Check for annotation errors (mislabelled regions)."]),
    "too_low_lr": ("Loss barely decreases: learning rate too low or a data issue",
                   ["Increase the learning rate.",
                    "Check the annotations: classes swapped, strokes on the wrong image, or too few strokes.",
                    "Check the channels and normalization (a blank or saturated channel teaches nothing)."]),
    "too_short": ("Too few epochs to judge", ["Train for more epochs (early stopping ends it safely)."]),
    "unclear": ("No clear pattern", ["Train longer and compare train and validation curves again.",
                                     "Use the per-class metrics and the tile review to find what fails."]),
}


def _series(history, key) -> np.ndarray:
    return np.array([float(h.get(key, np.nan)) if h.get(key) is not None else np.nan for h in history])


def _roughness(x: np.ndarray) -> tuple[float, float]:
    """(up-step fraction, path length / range) of a curve; a smooth monotone curve gives (0, 1)."""
    x = x[np.isfinite(x)]
    if x.size < 3:
        return 0.0, 1.0
    d = np.diff(x)
    span = float(x.max() - x.min())
    return float(np.mean(d > 0)), (float(np.abs(d).sum()) / span if span > 0 else 1.0)


def diagnose_history(history: Sequence[dict]) -> Diagnosis:
    """Name the loss-curve pattern of a training history, with the guide's suggested actions.

    Parameters
    ----------
    history : list of dict
        ``model.history``: one dict per epoch with ``train_loss`` and (optionally) ``val_loss``,
        ``val_miou``, ``lr``.

    Returns
    -------
    Diagnosis

    Notes
    -----
    The rules, checked in this order (``t`` = train loss, ``v`` = validation loss):

    - *unstable*: a loss is NaN/inf, or a curve goes up in at least 40 % of the epochs while its path
      is at least 3x longer than its range (it zig-zags instead of descending).
    - *overfitting*: ``v`` reached its minimum before the last 20 % of the epochs and ended at least
      10 % above it, while ``t`` kept falling.
    - *too_low_lr*: ``t`` fell by less than 10 % from its first value.
    - *underfitting*: the second half of training improved ``t`` by less than 5 %, and the result is
      poor (validation mIoU < 0.7, or without mIoU ``t`` still above 40 % of its first value).
    - *good*: both losses fell by at least 20 % (``v`` only when present).
    """
    history = list(history or [])
    n = len(history)
    if n < 3:
        title, actions = _ACTIONS["too_short"]
        return Diagnosis("too_short", title, f"Only {n} epoch(s) recorded; at least 3 are needed to read a trend.",
                         list(actions), {"epochs": n})
    t, v, miou = _series(history, "train_loss"), _series(history, "val_loss"), _series(history, "val_miou")
    has_v = np.isfinite(v).sum() >= 3
    ev: dict = {"epochs": n}

    def result(pattern, explanation):
        title, actions = _ACTIONS[pattern]
        return Diagnosis(pattern, title, explanation, list(actions), ev)

    if not np.isfinite(t).all() or (has_v and np.isinf(v).any()):
        ev["non_finite"] = True
        return result("unstable", "The loss became NaN or infinite: the learning rate is far too high "
                                  "(or the data contain NaN).")
    up_t, path_t = _roughness(t)
    up_v, path_v = _roughness(v) if has_v else (0.0, 1.0)
    ev.update(train_up_fraction=up_t, train_path_ratio=path_t, val_up_fraction=up_v, val_path_ratio=path_v)
    for name, up, path in (("train", up_t, path_t), ("validation", up_v, path_v)):
        if up >= 0.4 and path >= 3.0:
            return result("unstable", f"The {name} loss went up in {up:.0%} of the epochs and its path is "
                                      f"{path:.1f}x its range: it oscillates instead of descending.")
    t0 = t[0]
    t_drop = float((t0 - t.min()) / t0) if t0 > 0 else 0.0
    ev["train_drop"] = t_drop
    if has_v:
        vf = v[np.isfinite(v)]
        best = int(np.nanargmin(v))
        rise = float((vf[-1] - vf.min()) / vf.min()) if vf.min() > 0 else 0.0
        ev.update(val_best_epoch=best, val_rise=rise)
        if best < 0.8 * (n - 1) and rise >= 0.10 and t[-1] < t[best]:
            return result("overfitting", f"Validation loss was lowest at epoch {best} ({vf.min():.3f}) and ended "
                                         f"{rise:.0%} higher ({vf[-1]:.3f}) while the training loss kept falling "
                                         f"({t[best]:.3f} -> {t[-1]:.3f}).")
    if t_drop < 0.10:
        return result("too_low_lr", f"The training loss fell only {t_drop:.0%} in {n} epochs "
                                    f"({t0:.3f} -> {t.min():.3f}).")
    half = n // 2
    late_gain = float((t[half] - t[-1]) / t[half]) if t[half] > 0 else 0.0
    final_miou = float(miou[np.isfinite(miou)][-1]) if np.isfinite(miou).any() else None
    poor = final_miou < 0.7 if final_miou is not None else t[-1] > 0.4 * t0
    ev.update(late_gain=late_gain, final_val_miou=final_miou)
    if late_gain < 0.05 and poor:
        what = f"validation mIoU is only {final_miou:.2f}" if final_miou is not None else \
            f"the training loss is still {t[-1] / t0:.0%} of its first value"
        return result("underfitting", f"The training loss stopped improving after epoch {half} "
                                      f"(-{late_gain:.0%} in the second half) and {what}.")
    v_drop = float((v[np.isfinite(v)][0] - np.nanmin(v)) / v[np.isfinite(v)][0]) if has_v else t_drop
    ev["val_drop"] = v_drop
    if t_drop >= 0.2 and v_drop >= 0.2:
        extra = f", validation mIoU {final_miou:.2f}" if final_miou is not None else ""
        return result("good", f"Training loss fell {t_drop:.0%} and validation loss {v_drop:.0%}{extra}.")
    return result("unclear", f"Training loss fell {t_drop:.0%}, validation loss {v_drop:.0%}.")


def plot_history(history: Sequence[dict]):
    """Train/validation loss (and validation mIoU) per epoch as a matplotlib Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2), layout="constrained")
    ax = fig.add_subplot()
    ep = _series(history, "epoch")
    ep = np.arange(len(history)) if not np.isfinite(ep).all() else ep
    ax.plot(ep, _series(history, "train_loss"), label="train loss")
    ax.plot(ep, _series(history, "val_loss"), label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    miou = _series(history, "val_miou")
    if np.isfinite(miou).any():
        ax2 = ax.twinx()
        ax2.plot(ep, miou, color="tab:green", ls="--", label="validation mIoU")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("mIoU")
        ax2.legend(loc="center right")
    ax.legend(loc="upper right")
    return fig


# ------------------------------------------------------------------------------------------ report
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
        return {s: _mean_iou(self.confusion[s]) for s in self.splits}

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


def plot_confusion(cm, class_names: Sequence[str], normalize: bool = True, title: str | None = None):
    """Confusion matrix as a matplotlib Figure (rows: labelled class, columns: predicted class).

    Parameters
    ----------
    cm : array_like, shape (K, K)
        Counts.
    class_names : sequence of str
    normalize : bool
        Show row fractions (each labelled class sums to 1) instead of counts.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    cm = np.asarray(cm, dtype=np.float64)
    if normalize:
        with np.errstate(invalid="ignore", divide="ignore"):
            cm = cm / cm.sum(1, keepdims=True)
    k = len(class_names)
    fig = Figure(figsize=(1.6 + 0.9 * k, 1.2 + 0.9 * k), layout="constrained")
    ax = fig.add_subplot()
    ConfusionMatrixDisplay(cm, display_labels=list(class_names)).plot(
        ax=ax, values_format=".2f" if normalize else ".0f", colorbar=False, cmap="Blues")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("labelled class")
    if title:
        ax.set_title(title + (" (row fractions)" if normalize else " (pixels)"))
    return fig


# ------------------------------------------------------------------------------------------ evaluation
def _prepare(model, samples):
    """Open, match channels, validate and downsample like the trainer. Returns [(img, labels)]."""
    from pixlab.image.io import open_image
    from pixlab.labels.masks import load_labels, validate_labels
    from pixlab.inference.predict import match_channels
    from pixlab.training.samples import downsample_labels

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
        lab = load_labels(lab) if isinstance(lab, (str, bytes)) or hasattr(lab, "__fspath__") else lab
        lab = validate_labels(lab, img.shape[1:], model.class_names)
        if not lab.any():
            raise ValueError(f"labels of samples[{i}] (image '{img.name}') have no labelled pixel; brush some "
                             f"strokes or pass the label file saved by the annotator")
        if ds > 1:
            img = img.downsampled(ds)
            lab = downsample_labels(lab, ds)[: img.shape[1], : img.shape[2]]
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


def _predict_region(model, img, stats, region) -> np.ndarray:
    """(K, h, w) probabilities of ``region`` of a (working-resolution) image, tiled and blended."""
    from pixlab.inference.predict import tile_reader
    from pixlab.inference.tiling import predict_tiled

    y0, y1, x0, x1 = region
    read = tile_reader(img, stats)
    bs = model.config.batch_size if model.device.type == "cuda" else 4
    return predict_tiled(lambda a, b, c, d: read(a + y0, b + y0, c + x0, d + x0), (y1 - y0, x1 - x0),
                         model.n_classes, model.infer_batch, tile=model.inference_tile_size,
                         overlap=model.config.tile_overlap, batch_size=bs)


def _label_windows(labels: np.ndarray, block: int):
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
    from skimage.measure import block_reduce, regionprops
    from skimage.measure import label as cc_label

    H, W = labels.shape
    has = block_reduce(labels > 0, (block, block), np.max)
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
        ranges = None if img.is_rgb else [auto_range(img, c) for c in range(img.n_channels)]
        for win, own in _label_windows(lab, block):
            wy0, wy1, wx0, wx1 = win
            probs = _predict_region(model, img, stats, win)
            pred = (probs.argmax(0) + 1).astype(np.uint8)
            mine = np.repeat(np.repeat(own, block, 0), block, 1)[: wy1 - wy0, : wx1 - wx0]
            for s, labs in split_labels.items():
                confusion[s] += confusion_matrix(np.where(mine, labs[i][wy0:wy1, wx0:wx1], 0), pred, K)
            for by, bx in zip(*np.nonzero(own)):
                ty, tx = wy0 + int(by) * block, wx0 + int(bx) * block
                ty1, tx1 = min(ty + block, wy1), min(tx + block, wx1)
                tl = lab[ty:ty1, tx:tx1]
                sl = (slice(ty - wy0, ty1 - wy0), slice(tx - wx0, tx1 - wx0))
                tp, tpred = probs[(slice(None),) + sl], pred[sl]
                f = max(1, math.ceil(max(tl.shape) / thumb_size))
                thumbs = None
                for s, labs in split_labels.items():
                    if s == "all" and len(split_labels) > 1:
                        continue  # with a known split each labelled pixel is in exactly one row
                    sl_lab = labs[i][ty:ty1, tx:tx1]
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
                        "miou": _mean_iou(cm), "confusion": cm,
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


def plot_tiles(rows, max_rows: int = 6):
    """Thumbnails of review-table rows: image, image + labels, prediction (one row per tile).

    Parameters
    ----------
    rows : pandas.DataFrame
        Rows of ``Report.tiles`` (e.g. ``report.tiles.head()`` or a :func:`tiles_with_confusion` result).
    max_rows : int
        At most this many tiles are drawn.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    rows = rows.head(max_rows)
    n = max(1, len(rows))
    fig = Figure(figsize=(7.5, 2.4 * n), layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, (_, row) in enumerate(rows.iterrows()):
        axes[r, 0].imshow(row["thumb_image"])
        axes[r, 0].set_title(f"{row['image_name']} y{row['y0']} x{row['x0']}", fontsize=8)
        axes[r, 1].imshow(row["thumb_image"])
        axes[r, 1].imshow(row["thumb_labels"])
        axes[r, 1].set_title(f"{row['split']} labels, loss {row['loss']:.2f}", fontsize=8)
        axes[r, 2].imshow(row["thumb_prediction"])
        axes[r, 2].set_title(f"prediction, {row['disagreement']:.0f}% disagree", fontsize=8)
    if not len(rows):
        axes[0, 1].text(0.5, 0.5, "no tiles", ha="center", va="center")
    return fig


# ------------------------------------------------------------------------------------------ maps
def pixel_maps(model, image, labels=None, probs=None) -> dict:
    """Per-pixel diagnostic maps of a whole image (full resolution).

    Parameters
    ----------
    model : pixlab.Model or None
        Used to predict ``image`` unless ``probs`` is given.
    image : Image, array or path
    labels : array_like (Y, X), optional
        Sparse labels; adds the ``loss`` and ``disagreement`` maps.
    probs : array (K, Y, X), optional
        ``model.predict(image)`` when already computed.

    Returns
    -------
    dict of str -> ndarray (Y, X)
        ``prediction`` (uint8 class ids 1..K), ``confidence`` (max probability), ``entropy``
        (normalized to 0..1 by log K), ``margin`` (best minus second-best probability); with labels also
        ``loss`` (cross-entropy, NaN on unlabelled pixels) and ``disagreement`` (1 where the prediction
        differs from the label, 0 where it agrees, NaN on unlabelled pixels).
    """
    p = _probs(model, image, probs)
    K = p.shape[0]
    srt = np.sort(p, axis=0)
    out = {
        "prediction": (p.argmax(0) + 1).astype(np.uint8),
        "confidence": srt[-1],
        "entropy": (-(p * np.log(np.clip(p, _EPS, 1))).sum(0) / math.log(K)).astype(np.float32),
        "margin": (srt[-1] - srt[-2]) if K > 1 else np.ones_like(srt[-1]),
    }
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != p.shape[1:]:
            raise ValueError(f"labels have shape {lab.shape} but the prediction is {p.shape[1:]}; "
                             f"give the labels of this image")
        if lab.max() > K:
            raise ValueError(f"labels contain class id {int(lab.max())} but the model has {K} classes")
        m = lab > 0
        p_true = np.take_along_axis(p, (lab.astype(np.int64) - 1).clip(0)[None], 0)[0]
        out["loss"] = np.where(m, -np.log(np.clip(p_true, _EPS, 1)), np.nan).astype(np.float32)
        out["disagreement"] = np.where(m, (out["prediction"] != lab).astype(np.float32), np.nan).astype(np.float32)
    return out


#: Colour map and value range per pixel map (None = the map's 99th percentile), shared by
#: :func:`plot_maps` and the brush annotator's overlays so both look the same.
MAP_STYLES = {"confidence": ("viridis", 0, 1), "entropy": ("magma", 0, 1), "margin": ("viridis", 0, 1),
              "loss": ("inferno", 0, None), "disagreement": ("coolwarm", 0, 1)}


def map_overlay(values, cmap: str = "magma", vmin: float | None = 0.0, vmax: float | None = None,
                opacity: float = 0.6) -> np.ndarray:
    """Colour a (Y, X) map as an RGBA overlay; NaN pixels are transparent (for the brush annotator).

    Parameters
    ----------
    values : array_like (Y, X)
    cmap : str
        A matplotlib colormap name.
    vmin, vmax : float, optional
        Colour range (default: data min/max of finite values).
    opacity : float
        Alpha of the finite pixels, 0-1.

    Returns
    -------
    numpy.ndarray (Y, X, 4) uint8
    """
    import matplotlib

    v = np.asarray(values, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError(f"values must be a (Y, X) map, got shape {v.shape}")
    if not 0 <= float(opacity) <= 1:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity!r}")
    fin = np.isfinite(v)
    lo = float(np.nanmin(v[fin])) if vmin is None and fin.any() else float(vmin or 0.0)
    hi = float(np.nanmax(v[fin])) if vmax is None and fin.any() else float(vmax if vmax is not None else 1.0)
    scaled = np.clip((np.where(fin, v, lo) - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    rgba = matplotlib.colormaps[cmap](scaled, bytes=True)
    rgba[..., 3] = np.where(fin, round(float(opacity) * 255), 0)
    return rgba


def plot_maps(maps: dict, image=None, keys: Sequence[str] | None = None, colours=None):
    """Show diagnostic maps (from :func:`pixel_maps`) side by side, over the image when given.

    Parameters
    ----------
    maps : dict
        From :func:`pixel_maps`.
    image : Image or array, optional
        Drawn under the maps (composite).
    keys : list of str, optional
        Which maps (default: every map present except "prediction" unless colours are given).
    colours : list of [r, g, b], optional
        Class colours; adds the prediction panel.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    from pixlab.image.display import composite

    if keys is None:
        keys = (["prediction"] if colours is not None else []) + [k for k in MAP_STYLES if k in maps]
    unknown = [k for k in keys if k not in maps]
    if unknown:
        raise ValueError(f"maps {unknown} are not available; choose from {sorted(maps)}")
    base = composite(image) if image is not None else None
    n = len(keys)
    ncol = min(3, n)
    nrow = math.ceil(n / ncol)
    fig = Figure(figsize=(3.6 * ncol, 3.4 * nrow), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, k in zip(axes, keys):
        if base is not None:
            ax.imshow(base)
        if k == "prediction":
            if colours is None:
                raise ValueError("the prediction panel needs colours=model.colours")
            lut = np.asarray(colours, np.uint8)
            ax.imshow(lut[maps[k] - 1], alpha=0.5 if base is not None else 1.0)
        else:
            cmap, lo, hi = MAP_STYLES[k]
            v = maps[k]
            hi = hi if hi is not None else (float(np.nanpercentile(v, 99)) if np.isfinite(v).any() else 1.0)
            im = ax.imshow(np.ma.masked_invalid(v), cmap=cmap, vmin=lo, vmax=max(hi, 1e-6),
                           alpha=0.75 if base is not None else 1.0, interpolation="nearest")
            fig.colorbar(im, ax=ax, shrink=0.8)
        ax.set_title(k)
    return fig


# ------------------------------------------------------------------------------------------ guided annotation views
def plot_suggestions(image, suggestions=None, refinements=None, labels=None, colours=None):
    """The image with "annotate here next" boxes (numbered) and label-refinement boxes.

    Parameters
    ----------
    image : Image or array
    suggestions : pandas.DataFrame, optional
        From :func:`suggest_regions` (drawn in yellow, numbered by rank).
    refinements : pandas.DataFrame, optional
        From :func:`label_refinements` (drawn in red).
    labels : array (Y, X), optional
        Existing strokes, drawn with ``colours``.
    colours : list of [r, g, b], optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from pixlab.image.display import composite, label_overlay

    fig = Figure(figsize=(6, 6), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(composite(image))
    if labels is not None and colours is not None:
        ax.imshow(label_overlay(labels, colours, 0.9))
    for df, colour in ((suggestions, "yellow"), (refinements, "red")):
        if df is None:
            continue
        for i, row in enumerate(df.itertuples(index=False), start=1):
            ax.add_patch(Rectangle((row.x0 - 0.5, row.y0 - 0.5), row.x1 - row.x0, row.y1 - row.y0,
                                   fill=False, edgecolor=colour, linewidth=2))
            if colour == "yellow":
                ax.text(row.x0 + 2, row.y0 + 2, str(i), color="black", fontsize=9, va="top",
                        bbox={"facecolor": "yellow", "pad": 1, "linewidth": 0})
    ax.set_axis_off()
    ax.set_title("yellow: annotate here next" + ("; red: check these strokes" if refinements is not None else ""))
    return fig


# ------------------------------------------------------------------------------------------ what next
_POOR_IOU = 0.6  # a class below this mean IoU gets the guide's "specific classes perform poorly" advice


def next_steps(report: Report, *, model=None, suggestions=None, refinements=None, ood=None) -> list[str]:
    """What to try next, in the guide's words, from everything the diagnostics found.

    Parameters
    ----------
    report : Report
        From :func:`evaluate` (validation split used when present).
    model : pixlab.Model, optional
        Adds the guide's annotation minimums (strokes per class) from its metadata.
    suggestions : pandas.DataFrame, optional
        From :func:`suggest_regions`.
    refinements : pandas.DataFrame, optional
        From :func:`label_refinements`.
    ood : dict or list of dict, optional
        From :func:`ood_check`.

    Returns
    -------
    list of str
        Most specific first; ends with the guide's quick wins when nothing stands out.
    """
    steps: list[str] = []
    split = "validation" if "validation" in report.confusion else "all"
    if refinements is not None and len(refinements):
        worst = refinements.iloc[0]
        steps.append(f"Check {len(refinements)} labelled region(s) the model confidently disagrees with (first: "
                     f"'{worst['class']}' strokes predicted '{worst['predicted']}' at y={worst['y0']}, "
                     f"x={worst['x0']}): inconsistent labelling is a common mistake the guide warns about.")
    if report.training is not None and report.training.pattern not in ("good", "unclear"):
        steps.append(f"{report.training.title}: " + "; ".join(report.training.actions[:3]))
    m = report.metrics(split)
    confusions = report.top_confusions(split, n=len(report.class_names) ** 2)
    for name, iou in zip(m["class"], m["iou"]):
        if np.isnan(iou):
            steps.append(f"Class '{name}' has no {split} labels: brush strokes of it to measure it.")
        elif iou < _POOR_IOU:
            mixed = confusions[confusions["true"] == name]
            with_ = f" (mostly confused with '{mixed.iloc[0]['predicted']}')" if len(mixed) else ""
            steps.append(f"Class '{name}' performs poorly ({split} IoU {iou:.2f}){with_}: add annotations for it, "
                         f"especially at boundaries; increase its weight multiplier (class_weights); check that "
                         f"it has consistent visual features, or consider merging visually similar classes.")
    if model is not None and model.metadata.get("label_stats"):
        from pixlab.labels.masks import annotation_warnings
        warned = annotation_warnings(model.metadata["label_stats"])
        steps += [f"{w} (guide: minimum annotations per class)" for w in warned]
    for res in ([ood] if isinstance(ood, dict) else list(ood or [])):
        if res.get("ood"):
            steps.append(f"{'; '.join(res['reasons'])}: calibrate with adabn(model, image), normalize per image, "
                         f"and train with color jitter augmentation or annotate images like this one "
                         f"(staining variation between slides).")
    if suggestions is not None and len(suggestions):
        steps.append(f"Brush strokes in the {len(suggestions)} suggested region(s) where the model is least "
                     f"certain (\"include hard cases\", \"annotate boundaries carefully\"), then retrain from "
                     f"this model (init_from) to iterate quickly.")
    if not steps:
        steps.append("Nothing stands out. Quick wins from the guide: add annotations at class boundaries, "
                     "train on more images, enable augmentation, and increase epochs with early stopping.")
    return steps
