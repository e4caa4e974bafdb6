"""k-fold cross-validation of a training configuration: how well does it generalise?

With several images the folds hold out whole images (the question a user asks: "will it work on
my next image?"). With one image, the image is cut into a grid of spatial blocks and the folds hold
out the labels of whole blocks; neighbouring pixels are strongly correlated, so holding out single
strokes or random pixels would measure memorisation instead.

Every fold trains a new model with :func:`pixlab.train` on the remaining labels and measures the
held-out labelled pixels with :func:`pixlab.analysis.diagnostics.confusion_matrix`; the result is one table
of per-class IoU per fold plus the mean and standard deviation over folds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from pixlab.training.trainer import train

__all__ = ["cross_validate"]


def _prepare(samples, class_names):
    """[(Image, labels (Y, X))] and the class names, checked like the trainer checks them."""
    from pixlab.image.io import open_image
    from pixlab.labels.masks import load_labels, validate_labels

    if not isinstance(samples, (list, tuple)) or not samples:
        raise ValueError("samples must be a non-empty list of (image, labels) pairs, e.g. [(img, labels)]")
    pairs = []
    for i, pair in enumerate(samples):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise ValueError(f"samples[{i}] must be an (image, labels) pair, got {type(pair).__name__}")
        img, lab = pair
        img = open_image(img)
        lab = load_labels(lab) if isinstance(lab, (str, Path)) else np.asarray(lab)
        pairs.append((img, lab))
    if class_names is None:
        top = max(int(lab.max()) if lab.size else 0 for _, lab in pairs)
        class_names = [f"class {k}" for k in range(1, max(top, 2) + 1)]
    class_names = [str(c) for c in class_names]
    pairs = [(img, validate_labels(lab, img.shape[1:], class_names)) for img, lab in pairs]
    return pairs, class_names


def _block_grid(shape_yx, blocks) -> tuple[int, int]:
    if isinstance(blocks, (int, np.integer)) and not isinstance(blocks, bool):
        blocks = (int(blocks), int(blocks))
    if (not isinstance(blocks, (tuple, list)) or len(blocks) != 2
            or not all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) and b >= 1 for b in blocks)):
        raise ValueError(f"blocks={blocks!r} must be a whole number N (an N x N grid) or (rows, columns)")
    ny, nx = (min(int(b), s) for b, s in zip(blocks, shape_yx))
    return ny, nx


def _block_slices(shape_yx, grid):
    """{block index: (y0, y1, x0, x1)} of a regular grid over the image, row by row."""
    (H, W), (ny, nx) = shape_yx, grid
    ys = np.linspace(0, H, ny + 1).round().astype(int)
    xs = np.linspace(0, W, nx + 1).round().astype(int)
    return {r * nx + c: (ys[r], ys[r + 1], xs[c], xs[c + 1]) for r in range(ny) for c in range(nx)}


def _predict_window(model, img, box, margin: int) -> np.ndarray:
    """Predicted labels of ``box`` (y0, y1, x0, x1), computed on the box grown by ``margin`` pixels
    (about the context a whole-image prediction gives), without predicting the whole image."""
    from pixlab.image.io import Image

    y0, y1, x0, x1 = box
    H, W = img.shape[1:]
    wy0, wy1, wx0, wx1 = max(0, y0 - margin), min(H, y1 + margin), max(0, x0 - margin), min(W, x1 + margin)
    crop = Image(img.read((wy0, wy1, wx0, wx1)), channel_names=img.channel_names, name=img.name)
    pred = model.predict_labels(crop)
    return pred[y0 - wy0: y1 - wy0, x0 - wx0: x1 - wx0]


def cross_validate(samples, cfg=None, class_names: Sequence[str] | None = None, folds: int = 5, *,
                   blocks=4, seed: int | None = None, colours=None, progress: bool = False):
    """k-fold cross-validation of a training configuration on labelled images.

    Parameters
    ----------
    samples : list of (image, labels)
        As for :func:`pixlab.train` (labels may be label-file paths). With two or more images,
        folds hold out whole images; with one image, folds hold out spatial blocks of it.
    cfg : TrainConfig, optional
        The configuration every fold trains with (default ``TrainConfig()``).
    class_names : sequence of str, optional
        Names of classes 1..K (default "class 1", ...).
    folds : int
        Number of folds k (>= 2); at most the number of images, or of labelled blocks.
    blocks : int or (int, int)
        One image only: the grid of spatial blocks (N for N x N, or (rows, columns)). Blocks without
        labels are not used; each fold holds out the labels of about 1/k of the labelled blocks.
        The network still sees the held-out block's pixels (not its labels) in neighbouring
        training tiles, so the estimate is somewhat optimistic; larger blocks reduce that.
    seed : int, optional
        Seed of the random assignment of images/blocks to folds (default ``cfg.seed``).
    colours : list of [r, g, b], optional
        Passed to :func:`pixlab.train`.
    progress : bool
        Show each fold's training progress bar.

    Returns
    -------
    pandas.DataFrame
        One row per fold (``"fold 1"``, ...) then ``"mean"`` and ``"sd"`` (sample standard deviation
        over folds; NaN-aware: a fold without held-out labels of a class does not count for that
        class). Columns: ``held_out`` (image names or block ids), ``labelled_pixels`` (held-out
        labelled pixels), one IoU column per class name, and ``mean_iou`` (mean over the classes
        present in the fold's held-out labels). ``df.attrs`` holds ``"mode"`` ("images" or
        "blocks"), ``"folds"`` (per fold: held-out items and, for blocks, their (y0, y1, x0, x1)
        boxes) and ``"summary"`` ({column: "mean ± sd"}).

    Raises
    ------
    ValueError
        ``folds`` < 2 or larger than the number of images / labelled blocks; a fold whose training
        labels lack a class (the message names the fold and the class).

    Examples
    --------
    >>> table = cross_validate([(img1, lab1), (img2, lab2), (img3, lab3)], cfg,
    ...                        ["background", "nuclei"], folds=3)        # doctest: +SKIP
    >>> table.attrs["summary"]["nuclei"]                                  # doctest: +SKIP
    '0.812 ± 0.034'
    """
    import pandas as pd
    from sklearn.model_selection import KFold

    from pixlab.training.config import TrainConfig
    from pixlab.analysis.metrics import confusion_matrix, metrics_from_confusion

    cfg = cfg or TrainConfig()
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg must be a pixlab.TrainConfig, got {type(cfg).__name__}")
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"folds={folds!r} must be a whole number >= 2 (e.g. 5)")
    pairs, class_names = _prepare(samples, class_names)
    K = len(class_names)
    seed = cfg.seed if seed is None else int(seed)

    if len(pairs) > 1:
        mode = "images"
        units = list(range(len(pairs)))
        if folds > len(units):
            raise ValueError(f"folds={folds} but there are only {len(units)} images; use folds <= {len(units)} "
                             "(one image is split into spatial blocks instead)")
    else:
        mode = "blocks"
        img, lab = pairs[0]
        grid = _block_grid(lab.shape, blocks)
        boxes = _block_slices(lab.shape, grid)
        units = [b for b, (y0, y1, x0, x1) in boxes.items() if lab[y0:y1, x0:x1].any()]
        if folds > len(units):
            raise ValueError(
                f"folds={folds} but only {len(units)} of the {grid[0]} x {grid[1]} spatial blocks of the image "
                f"hold labels; use folds <= {len(units)}, a finer grid (blocks=...), or more images")

    # Plan every fold first, so that a fold that cannot be trained is reported before any training.
    splitter = KFold(n_splits=int(folds), shuffle=True, random_state=seed)
    plans = []
    for f, (train_idx, test_idx) in enumerate(splitter.split(units), start=1):
        held = [units[i] for i in test_idx]
        if mode == "images":
            train_samples = [pairs[units[i]] for i in train_idx]
            tests = [(pairs[i][0], pairs[i][1], None) for i in held]
            info = {"fold": f, "held_out": [pairs[i][0].name for i in held], "test_items": held}
        else:
            img, lab = pairs[0]
            train_lab = lab.copy()
            for b in held:
                y0, y1, x0, x1 = boxes[b]
                train_lab[y0:y1, x0:x1] = 0
            train_samples = [(img, train_lab)]
            tests = [(img, lab, boxes[b]) for b in held]
            info = {"fold": f, "held_out": [f"block {b}" for b in held], "test_items": held,
                    "boxes": [tuple(int(v) for v in boxes[b]) for b in held]}
        present = set().union(*(np.unique(lab).tolist() for _, lab in train_samples))
        missing = [class_names[k - 1] for k in range(1, K + 1) if k not in present]
        if missing:
            raise ValueError(
                f"cross-validation fold {f} (holding out {', '.join(map(str, info['held_out']))}) has no training "
                f"labels of class(es) {missing}; use fewer folds, or label each class in more images/places")
        plans.append((info, train_samples, tests))

    rows, fold_info = [], []
    for info, train_samples, tests in plans:
        try:
            model = train(train_samples, cfg, class_names, colours=colours, progress=progress)
        except ValueError as error:
            raise ValueError(f"cross-validation fold {info['fold']} (holding out "
                             f"{', '.join(map(str, info['held_out']))}): {error}") from None
        cm = np.zeros((K, K), np.int64)
        margin = int(model.inference_tile_size)
        for test_img, test_lab, box in tests:
            if box is None:
                cm += confusion_matrix(test_lab, model.predict_labels(test_img), K)
            else:
                y0, y1, x0, x1 = box
                cm += confusion_matrix(test_lab[y0:y1, x0:x1], _predict_window(model, test_img, box, margin), K)
        iou = metrics_from_confusion(cm, class_names)["iou"].to_numpy()
        rows.append({"held_out": ", ".join(map(str, info["held_out"])), "labelled_pixels": int(cm.sum()),
                     **dict(zip(class_names, iou.tolist())),
                     "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else math.nan})
        fold_info.append(info)

    table = pd.DataFrame(rows, index=[f"fold {i}" for i in range(1, len(rows) + 1)])
    numeric = [*class_names, "mean_iou"]
    mean = table[numeric].mean(skipna=True)
    sd = table[numeric].std(ddof=1, skipna=True)
    table.loc["mean", numeric] = mean
    table.loc["sd", numeric] = sd
    table.loc[["mean", "sd"], "held_out"] = ""
    table.loc["mean", "labelled_pixels"] = table["labelled_pixels"].iloc[:-2].mean()
    table.attrs["mode"] = mode
    table.attrs["folds"] = fold_info
    table.attrs["summary"] = {c: f"{mean[c]:.3f} ± {sd[c]:.3f}" for c in numeric}
    return table
