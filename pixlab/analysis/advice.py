"""What to try next: the guide's advice, chosen from everything the diagnostics found."""

from __future__ import annotations

import numpy as np

from pixlab.analysis.evaluate import Report

__all__ = ["next_steps"]

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
