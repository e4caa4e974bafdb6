"""Annotation: labels per image, classes, strokes with undo, autosave, instant preview and guidance.

``from pixlab.annotation import AnnotationSession`` is public API (other tools import it).
"""

from pixlab.annotation.session import (
    GUIDE_OVERLAYS,
    MIN_RADIUS,
    AnnotationGuide,
    AnnotationSession,
    Change,
    PreviewResult,
    labels_path_for,
)

__all__ = ["AnnotationSession", "AnnotationGuide", "GUIDE_OVERLAYS", "Change", "PreviewResult", "labels_path_for",
           "MIN_RADIUS"]
