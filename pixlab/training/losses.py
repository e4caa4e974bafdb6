"""Losses on sparse labels and the validation metrics of training."""

from __future__ import annotations

import numpy as np

__all__ = ["sparse_loss", "confusion", "miou_from_confusion", "class_weight_tensor"]


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
            if cfg.stroke_balance:
                # Mean per class, then over classes: a class brushed with a few short strokes (nuclei in
                # H&E) otherwise weighs as little as its pixel count in the loss.
                per = [ce[labelled & (target == k)].mean() for k in range(logits.shape[1])
                       if (labelled & (target == k)).any()]
                total = total + torch.stack(per).mean()
            else:
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


def confusion(pred, target, k):
    """(K, K) counts, rows = labelled class, columns = predicted; 0-based ids, targets < 0 are ignored.

    The training loop's view of :func:`pixlab.analysis.metrics.confusion_matrix` (1-based, 0 = unlabelled).
    """
    from pixlab.analysis.metrics import confusion_matrix
    target = np.asarray(target, np.int64)
    return confusion_matrix(np.where(target >= 0, target + 1, 0), np.asarray(pred, np.int64) + 1, k)


_confusion = confusion


def miou_from_confusion(cm: np.ndarray) -> tuple[float, list[float]]:
    """Mean IoU over classes present in the labels, and per-class IoU (NaN where absent)."""
    from pixlab.analysis.metrics import iou_from_confusion, mean_iou
    return mean_iou(cm), iou_from_confusion(cm).tolist()


def class_weight_tensor(cfg, class_names, device):
    """``cfg.class_weights`` (list or {name: weight}) as a (K,) tensor, or None."""
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
