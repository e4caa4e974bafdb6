"""Diagnostics: what a trained model gets wrong, where, and what to try next.

Core module (no Jupyter imports): plain arrays, pandas tables and matplotlib figures, so notebook 03
and the brush annotator only display what is computed here.

- :func:`evaluate` -> :class:`Report`: per-class IoU, Dice, precision, recall and confusion matrices
  on labelled pixels, separately for the training and validation strokes when the data are the
  model's training data (the trainer's stroke split is reproduced exactly), plus a per-tile review
  table (loss, disagreement, mIoU, thumbnails) and the loss-curve diagnosis.
- :func:`pixel_maps` / :func:`plot_maps` / :func:`map_overlay`: per-pixel loss, confidence, entropy,
  margin and disagreement over a whole image.
- :func:`labelled_region`: the part of a whole slide those in-memory diagnostics (maps, suggestions,
  refinements, AdaBN) run on: the window around its densest cluster of strokes.
- :func:`diagnose_history`: names the guide's loss-curve pattern and its suggested actions.
- :func:`next_steps`: the guide's advice from all of the above.
- Guided annotation (:mod:`pixlab.analysis.active`) and distribution shift (:mod:`pixlab.analysis.shift`) are
  re-exported here, so ``import pixlab.analysis.diagnostics as dx`` gives the whole toolbox.

This module only gathers the names; each concern has its module: :mod:`~pixlab.analysis.metrics`
(confusion/IoU, the one copy), :mod:`~pixlab.analysis.evaluate`, :mod:`~pixlab.analysis.maps`,
:mod:`~pixlab.analysis.history`, :mod:`~pixlab.analysis.plots`, :mod:`~pixlab.analysis.advice`.

Metrics use the convention of the labels: rows of a confusion matrix are the labelled (true) class,
columns the predicted class, class ``k`` at index ``k - 1``. Only labelled pixels count.
"""

from pixlab.analysis.active import label_refinements, strokes_in_box, suggest_regions
from pixlab.analysis.advice import next_steps
from pixlab.analysis.evaluate import SPLITS, Report, evaluate, tiles_with_confusion  # noqa: F401
from pixlab.analysis.history import Diagnosis, diagnose_history
from pixlab.analysis.maps import MAP_STYLES, map_overlay, pixel_maps
from pixlab.analysis.metrics import confusion_matrix, iou_from_confusion, mean_iou, metrics_from_confusion  # noqa: F401
from pixlab.analysis.plots import plot_confusion, plot_history, plot_maps, plot_suggestions, plot_tiles
from pixlab.analysis.region import LabelledRegion, labelled_region
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
    "labelled_region",
    "LabelledRegion",
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
