"""Annotation: labels per image, classes, strokes with undo, autosave, instant preview and guidance.

``from pixlab.annotation import AnnotationSession`` is public API (other tools import it).

Modules, one concern each: :mod:`.session` (the session tying them together), :mod:`.sources`
(images and names), :mod:`.classes`, :mod:`.editing` (brush, shapes, undo), :mod:`.geometry`,
:mod:`.history`, :mod:`.files` (label files and sidecars), :mod:`.saving` (dirty images, save,
flush), :mod:`.autosave`, :mod:`.preview` and :mod:`.guide`.
"""

from pixlab.annotation.editing import Change
from pixlab.annotation.files import labels_path_for
from pixlab.annotation.geometry import MIN_RADIUS
from pixlab.annotation.guide import GUIDE_OVERLAYS, AnnotationGuide
from pixlab.annotation.preview import PreviewResult
from pixlab.annotation.session import AnnotationSession

__all__ = ["AnnotationSession", "AnnotationGuide", "GUIDE_OVERLAYS", "Change", "PreviewResult", "labels_path_for",
           "MIN_RADIUS"]
