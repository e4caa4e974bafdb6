"""Losses on sparse labels and the validation metrics of training."""

from __future__ import annotations

import numpy as np

__all__ = ["sparse_loss", "edge_loss", "confusion", "miou_from_confusion", "class_weight_tensor"]


def sparse_loss(logits, target, pseudo, cfg, class_weights):
    """Loss on labelled pixels only (+ weighted pseudo-labelled pixels).

    ``target``/``pseudo`` hold class index 0..K-1 or -1 for "no label".

    Not ``smp.losses``: their losses reduce over the batch, and the class-balanced means here
    (``pseudo_balance``, ``stroke_balance``) need the per-pixel terms; the balanced pseudo-label
    mean was measured to matter (docs/quality.md / stop 11: draw 1 of bench/sparse_strokes.py 0.978 ->
    0.993 IoU, the nuclei no longer shrunk by background-heavy pseudo-labels).
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


def edge_loss(logits, image):
    """Edge-aware smoothness on every pixel: neighbours should share a class unless the image changes there.

    Strokes never touch a boundary, so nothing in the labels says where between a stroke and the
    next class the boundary lies; this term (a relaxed Potts / CRF loss as in scribble-supervised
    segmentation, Tang et al. 2018) makes a class change cheapest where the image changes most.
    ``mean over 4-neighbour pairs of w * (1 - p_i . p_j)``, ``w = exp(-|dx|^2 / (2 <|dx|^2>))`` on the
    3x3-smoothed image, with ``<.>`` the tile's mean (GrabCut's contrast scale).
    """
    import torch
    import torch.nn.functional as F
    p = torch.softmax(logits, 1)
    x = F.avg_pool2d(image.float(), 3, 1, 1, count_include_pad=False)
    total = logits.sum() * 0.0
    for dim in (2, 3):
        n = x.shape[dim] - 1
        d = (x.narrow(dim, 1, n) - x.narrow(dim, 0, n)).pow(2).sum(1)  # (B, H', W')
        w = torch.exp(-d / (2 * d.mean(dim=(1, 2), keepdim=True) + 1e-12))
        agree = (p.narrow(dim, 1, n) * p.narrow(dim, 0, n)).sum(1)
        total = total + (w * (1 - agree)).mean()
    return total / 2


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
