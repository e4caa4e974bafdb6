"""Undo and redo of label edits, stored as differences (never copies of the image's labels).

A stroke is a list of *edits*: a box origin, the changed pixels inside it (local ``int32`` rows and
columns), their old values and their new value. Edits are cut per segment or per label-store chunk,
so applying one reads and writes one small region of a :class:`pixlab.labels.store.LabelStore`
whatever the image size: a stroke of 2,000 pixels costs ~20 kB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Stroke", "History", "apply_edit"]


@dataclass
class Stroke:
    """One undo step: the edits made to one image between ``begin_stroke`` and ``end_stroke``."""

    image: int
    edits: list = field(default_factory=list)  # (y0, x0, ys, xs, old values, new value(s))
    bbox: list = field(default_factory=lambda: [math.inf, -math.inf, math.inf, -math.inf])

    def add(self, y0: int, x0: int, ys, xs, old, new) -> None:
        """Record that pixels ``(y0 + ys, x0 + xs)`` changed from ``old`` to ``new``."""
        ys, xs = np.asarray(ys, np.int32), np.asarray(xs, np.int32)
        self.edits.append((int(y0), int(x0), ys, xs, np.asarray(old), new))
        b = self.bbox
        self.bbox = [min(b[0], y0 + int(ys.min())), max(b[1], y0 + int(ys.max()) + 1),
                     min(b[2], x0 + int(xs.min())), max(b[3], x0 + int(xs.max()) + 1)]

    @property
    def n_changed(self) -> int:
        """Pixels changed (a pixel swept twice in one stroke is stored, and counted, once)."""
        return sum(int(e[2].size) for e in self.edits)

    @property
    def region(self):
        """Full-resolution bounding box ``(y0, y1, x0, x1)`` of the changes, or None."""
        return None if not self.edits else tuple(int(v) for v in self.bbox)


def apply_edit(store, edit, undo: bool) -> None:
    """Write one edit's old (``undo=True``) or new values into a label store."""
    y0, x0, ys, xs, old, new = edit
    region = (y0, y0 + int(ys.max()) + 1, x0, x0 + int(xs.max()) + 1)
    sub = store.read(region)
    sub[ys, xs] = old if undo else new
    store.write(region, sub)


class History:
    """Per-image undo and redo stacks of :class:`Stroke` (at most ``max_undo`` strokes per image)."""

    def __init__(self, max_undo: int = 200):
        self.max_undo = int(max_undo)
        self._undo: dict[int, list[Stroke]] = {}
        self._redo: dict[int, list[Stroke]] = {}

    def push(self, stroke: Stroke) -> None:
        """A new stroke: it becomes the next undo step and clears the redo stack."""
        stack = self._undo.setdefault(stroke.image, [])
        stack.append(stroke)
        del stack[:-self.max_undo]
        self._redo[stroke.image] = []

    def pop_undo(self, image: int) -> Stroke | None:
        """The stroke to undo (moved to the redo stack), or None."""
        stack = self._undo.get(image, [])
        if not stack:
            return None
        stroke = stack.pop()
        self._redo.setdefault(image, []).append(stroke)
        return stroke

    def pop_redo(self, image: int) -> Stroke | None:
        """The stroke to redo (moved back to the undo stack), or None."""
        stack = self._redo.get(image, [])
        if not stack:
            return None
        stroke = stack.pop()
        self._undo.setdefault(image, []).append(stroke)
        return stroke

    def clear(self, image: int | None = None) -> None:
        """Forget the history of one image (or of all)."""
        if image is None:
            self._undo.clear()
            self._redo.clear()
        else:
            self._undo[image], self._redo[image] = [], []

    def n_undo(self, image: int) -> int:
        """Strokes that can be undone in an image."""
        return len(self._undo.get(image, []))

    def n_redo(self, image: int) -> int:
        """Strokes that can be redone in an image."""
        return len(self._redo.get(image, []))

    def last(self, image: int) -> Stroke | None:
        """The most recent undoable stroke of an image (for inspection), or None."""
        stack = self._undo.get(image, [])
        return stack[-1] if stack else None
