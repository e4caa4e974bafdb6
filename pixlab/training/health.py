"""After training: is the network usable, and is it better than the instant preview?

A run can end with a network that predicts one class everywhere (too few optimizer steps for a big
encoder on a CPU, a learning rate that is too high) or that is clearly worse than the random forest
the brush annotator shows as its instant preview. Both used to be returned as if they were fine. This
module compares the two on the user's own strokes, with no ground truth:

* **collapsed**: the network gives a class to less than half of that class's own training-stroke
  pixels (a healthy network fits its training strokes almost perfectly; one that paints everything
  with one class scores 0 on every other class);
* **worse than the forest**: on the held-out strokes, the network's balanced accuracy is more than
  0.05 below that of a random forest fitted on the same training strokes (the preview).
* **too few steps**: the time limit stopped training after fewer than :data:`MIN_STEPS` optimizer
  steps. The held-out strokes cannot tell such a network from a good one: lying away from boundaries,
  they are easy, while on the rest of the image runs of 80 steps scored from 0.26 below to 0.08 above
  the preview over three stroke draws (bench/quality/steps.py, docs/quality.md).

What happens then (decided here, documented in docs/ARCHITECTURE.md): the network is still returned
(``Model.network`` must be the module that predict and every export run), but one clear warning says
what is wrong and what to try, and ``model.metadata["quality_check"]`` records it, with
``"recommend": "preview"`` so that the annotator/notebooks can offer the forest preview instead.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["quality_check", "TrainingQualityWarning"]

#: Pixels of the training images that the check predicts at most (windows around the strokes).
MAX_CHECK_PIXELS = 4_000_000  # whole images up to this (and 256 MB of forest features); larger ones:
# 512 px windows on the strokes, one at a time


#: Fewer optimizer steps than this, stopped by the time limit: "few_steps". Over six cases x 3 stroke draws,
#: 480 steps of batch 8 stayed within 0.01 of the preview or above; 144 ranged from 0.28 below to 0.24 above it,
#: and the held-out-stroke check said "ok" every time (docs/quality.md).
MIN_STEPS = 200


class TrainingQualityWarning(UserWarning):
    """The trained network collapsed, is clearly worse than the random-forest preview, or the time limit
    allowed too few optimizer steps to tell."""


def _windows(sample, max_pixels: int, size: int = 512):
    """Regions of one training image that hold its strokes: the whole image when small enough (its
    pixels and its forest's features, :data:`~pixlab.training.pseudo.PSEUDO_FEATURE_BYTES`)."""
    from pixlab.training.features import n_features
    from pixlab.training.pseudo import PSEUDO_FEATURE_BYTES
    from pixlab.training.strokes import stroke_windows
    C, Y, X = sample.image.shape
    if Y * X <= max_pixels and 4 * n_features(C) * Y * X <= PSEUDO_FEATURE_BYTES:
        return [(0, Y, 0, X)]
    return stroke_windows(sample.labels, size)[: max(1, max_pixels // size ** 2)]


def _balanced_accuracy(pred: np.ndarray, truth: np.ndarray, K: int) -> float:
    """Mean over classes present in ``truth`` (> 0) of the fraction predicted right."""
    accs = [float((pred[truth == k] == k).mean()) for k in range(1, K + 1) if (truth == k).any()]
    return float(np.mean(accs)) if accs else float("nan")


def quality_check(model, samples, class_names, *, seed: int = 0, max_pixels: int = MAX_CHECK_PIXELS,
                  warn: bool = True, steps: int | None = None, stopped_by_time: bool = False) -> dict:
    """Compare a trained network with the random-forest preview on the training strokes.

    Parameters
    ----------
    model : pixlab.Model
        The trained model.
    samples : list of pixlab.training.samples.Sample
        The training images with their training and held-out strokes.
    class_names : list of str
    seed : int
        Seed of the forest.
    max_pixels : int
        At most this many pixels are predicted (windows around strokes on large images).
    warn : bool
        Issue a :class:`TrainingQualityWarning` when the status is not "ok".
    steps : int, optional
        Optimizer steps the run made (``None``: not known, not checked).
    stopped_by_time : bool
        The time limit ended the run; with fewer than :data:`MIN_STEPS` steps the status is "few_steps".

    Returns
    -------
    dict
        ``status`` ("ok", "collapsed", "worse_than_preview", "few_steps" or "not_checked"), ``message``,
        ``recommend`` ("network" or "preview"), ``stroke_recall`` (per class, network on training
        strokes), ``heldout_accuracy`` and ``preview_heldout_accuracy`` (balanced accuracy on the
        held-out strokes), ``agreement`` (fraction of checked pixels where network and preview agree),
        ``predicted_fractions`` (per class, network), ``pixels_checked``.
    """
    from pixlab.image.image import Image
    from pixlab.inference.in_memory import predict_at_model_resolution
    from pixlab.labels.classids import argmax_labels
    from pixlab.training.forest import FeatureClassifier
    from pixlab.training.strokes import read_labels

    from pixlab.training.memory import release_memory
    release_memory()  # what training freed, before the check's own features and predictions
    K = len(class_names)
    pred_tr, lab_tr, pred_val, lab_val, rf_val = [], [], [], [], []
    agree = counted = 0
    fractions = np.zeros(K)
    budget = max_pixels
    for s in samples:
        for (y0, y1, x0, x1) in _windows(s, budget):
            if budget <= 0:
                break
            budget -= (y1 - y0) * (x1 - x0)
            tr, va = read_labels(s.train_labels, y0, y1, x0, x1), read_labels(s.val_labels, y0, y1, x0, x1)
            if not tr.any():  # only held-out strokes here: no preview can be fitted in this window
                continue
            raw = s.image.read((y0, y1, x0, x1))
            crop = Image(raw, channel_names=list(s.image.channel_names), name=s.image.name)
            # The sample is at the training resolution already: predicted as is (model.predict would
            # bring it to the model's pixel size, i.e. downsample it once more).
            net = argmax_labels(predict_at_model_resolution(model, crop))
            norm = s.read(y0, y1, x0, x1, model.norm_stats)
            rf = FeatureClassifier(seed=seed, n_jobs=1).fit(norm, tr, n_classes=K).predict(norm)
            pred_tr.append(net[tr > 0]); lab_tr.append(tr[tr > 0])
            pred_val.append(net[va > 0]); lab_val.append(va[va > 0]); rf_val.append(rf[va > 0])
            agree += int((net == rf).sum()); counted += net.size
            fractions += np.bincount(net.ravel(), minlength=K + 1)[1:K + 1]
    if not counted:
        return {"status": "not_checked", "message": "no stroke to check the network on", "recommend": "network"}
    pt, lt = np.concatenate(pred_tr), np.concatenate(lab_tr)
    recall = [float((pt[lt == k] == k).mean()) if (lt == k).any() else None for k in range(1, K + 1)]
    pv, lv, rv = np.concatenate(pred_val), np.concatenate(lab_val), np.concatenate(rf_val)
    net_acc, rf_acc = _balanced_accuracy(pv, lv, K), _balanced_accuracy(rv, lv, K)
    out = {"stroke_recall": dict(zip(class_names, recall)), "heldout_accuracy": net_acc,
           "preview_heldout_accuracy": rf_acc, "agreement": agree / counted,
           "predicted_fractions": dict(zip(class_names, (fractions / counted).tolist())), "pixels_checked": counted}
    missed = [(n, r) for n, r in zip(class_names, recall) if r is not None and r < 0.5]
    if missed:
        name, r = min(missed, key=lambda t: t[1])
        top = max(out["predicted_fractions"].items(), key=lambda t: t[1])
        out.update(status="collapsed", recommend="preview", message=(
            f"the trained network has collapsed: it labels only {r:.0%} of the '{name}' strokes as '{name}' "
            f"and predicts '{top[0]}' on {top[1]:.0%} of the image; do not use it. The instant preview (random "
            f"forest) is right on {rf_acc:.0%} of the held-out strokes. Try: leave architecture, encoder and "
            "tile_size at 'auto' (the CPU recipe makes ~10x more optimizer steps), a longer time_limit_s, or a "
            "lower learning_rate"))
    elif np.isfinite(net_acc) and np.isfinite(rf_acc) and net_acc < rf_acc - 0.05:
        out.update(status="worse_than_preview", recommend="preview", message=(
            f"the trained network is worse than the instant preview (random forest) on the held-out strokes: "
            f"{net_acc:.0%} vs {rf_acc:.0%} right (balanced accuracy); they agree on {out['agreement']:.0%} of "
            "the image. Try a longer time_limit_s, more strokes where they disagree, or use the preview"))
    elif stopped_by_time and steps is not None and steps < MIN_STEPS:
        out.update(status="few_steps", recommend="preview", message=(
            f"the time limit stopped training after only {steps} optimizer steps (fewer than {MIN_STEPS}): "
            "at that length networks trained from strokes ranged from far worse to better than the instant "
            f"preview on the rest of the image, and the held-out strokes ({net_acc:.0%} right, preview "
            f"{rf_acc:.0%}) cannot tell which this one is. Try: a longer time_limit_s, leave architecture, "
            "encoder and tile_size at 'auto' (the CPU recipe makes ~10x more optimizer steps), or use the preview"))
    else:
        out.update(status="ok", recommend="network", message=(
            f"network right on {net_acc:.0%} of the held-out strokes (preview {rf_acc:.0%}); agreement with "
            f"the preview {out['agreement']:.0%}"))
    if warn and out["status"] != "ok":
        warnings.warn(TrainingQualityWarning(out["message"]), stacklevel=4)  # at the user's train() call
    return out
