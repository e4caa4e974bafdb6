"""Matplotlib figures of the diagnostics (core: figures, not widgets; notebooks display them)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from pixlab.analysis.history import _series
from pixlab.analysis.maps import MAP_STYLES

__all__ = ["plot_history", "plot_confusion", "plot_tiles", "plot_maps", "plot_suggestions"]


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
