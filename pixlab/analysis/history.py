"""Reading a training history: the guide's loss-curve patterns and what to do about each."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["Diagnosis", "diagnose_history"]


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
