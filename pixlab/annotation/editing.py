"""Label edits of an :class:`~pixlab.annotation.AnnotationSession`: brush, eraser, filled shapes, undo/redo.

Every edit goes through one primitive, :meth:`EditingMixin.paint_mask`-style writing of a boolean mask
at a full-resolution offset into the image's :class:`~pixlab.labels.store.LabelStore`: it records
only the pixels that change (per chunk-sized piece, see :mod:`pixlab.annotation.history`), so a
stroke costs the same on a 512-px tile and on a 100,000-px slide. The polygon, box and points tools
(:mod:`pixlab.annotation.regions`) write through it too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pixlab.annotation.geometry import check_points, check_radius, segment_box, segment_mask
from pixlab.annotation.history import Stroke, apply_edit

__all__ = ["Change", "EditingMixin"]


@dataclass
class Change:
    """What an edit did, for redrawing: the image, the full-res bounding box and the pixel count.

    Attributes
    ----------
    image : int
        Index of the edited image.
    region : (y0, y1, x0, x1) or None
        Bounding box of changed pixels (None when nothing changed).
    n_changed : int
        Number of pixels whose label changed.
    message : str or None
        Why nothing happened (e.g. a stroke of a drag that left the image).
    """

    image: int
    region: tuple | None = None
    n_changed: int = 0
    message: str | None = None


def _union(box, other):
    return [min(box[0], other[0]), max(box[1], other[1]), min(box[2], other[2]), max(box[3], other[3])]


class EditingMixin:
    """Painting and undo for :class:`~pixlab.annotation.AnnotationSession` (which provides ``lock``,
    ``label_store``, ``index_of``, ``class_id``, ``names``, ``_history`` and ``_touch``)."""

    _stroke: Stroke | None = None

    # ------------------------------------------------------------------------------------------
    # The one write primitive
    # ------------------------------------------------------------------------------------------
    def _write_mask(self, stroke: Stroke, i: int, y0: int, x0: int, mask: np.ndarray, value: int, only=None):
        """Set ``mask`` (at full-res ``(y0, x0)``, inside the image) to ``value``; record the changes in ``stroke``.

        Returns the number of changed pixels. Masks larger than a chunk are handled chunk-sized piece
        by piece, so no image-sized temporary is ever made.
        """
        store = self.label_store(i)
        h, w = mask.shape
        c = store.chunk
        n = 0
        ys_edges = [y0] + list(range((y0 // c + 1) * c, y0 + h, c)) + [y0 + h] if h > c else [y0, y0 + h]
        xs_edges = [x0] + list(range((x0 // c + 1) * c, x0 + w, c)) + [x0 + w] if w > c else [x0, x0 + w]
        for ty0, ty1 in zip(ys_edges[:-1], ys_edges[1:]):
            for tx0, tx1 in zip(xs_edges[:-1], xs_edges[1:]):
                m = mask[ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0]
                if not m.any():
                    continue
                region = (ty0, ty1, tx0, tx1)
                sub = store.read(region)
                change = m & (sub != value)
                if only is not None:
                    change &= sub == only
                ys, xs = np.nonzero(change)
                if ys.size == 0:
                    continue
                # Only pixels that change are recorded, so a pixel swept twice in one stroke is stored once.
                stroke.add(ty0, tx0, ys, xs, sub[ys, xs].copy(), value)
                sub[ys, xs] = value
                store.write(region, sub)
                n += int(ys.size)
        return n

    def _finish(self, stroke: Stroke, own: bool) -> Change:
        if stroke.edits and own:
            self._history.push(stroke)
        if stroke.edits:
            self._touch(stroke.image)
        return Change(stroke.image, stroke.region, stroke.n_changed)

    # ------------------------------------------------------------------------------------------
    # Strokes
    # ------------------------------------------------------------------------------------------
    def begin_stroke(self, image=None) -> None:
        """Start a stroke: the segments painted until :meth:`end_stroke` are undone together."""
        with self.lock:
            if self._stroke is not None:
                self.end_stroke()
            self._stroke = Stroke(self.index_of(image))

    def end_stroke(self) -> Change | None:
        """Finish the current stroke and make it one undo step. Returns its :class:`Change` (or None)."""
        with self.lock:
            stroke, self._stroke = self._stroke, None
            if stroke is None:
                return None
            if stroke.edits:
                self._history.push(stroke)
            return Change(stroke.image, stroke.region, stroke.n_changed)

    def _paint(self, points, value: int, radius: float, image, only=None) -> Change:
        pts, r = check_radius(check_points(points), radius)
        with self.lock:
            stroke = self._stroke
            if stroke is not None and image is not None and self.index_of(image) != stroke.image:
                self.begin_stroke(image)  # a stroke never spans two images
                stroke = self._stroke
            i = stroke.image if stroke is not None else self.index_of(image)
            own = stroke is None  # a call outside begin/end_stroke is a stroke of its own
            part = Stroke(i)
            shape = self.label_store(i).shape
            segments = [(pts[0], pts[0])] if len(pts) == 1 else list(zip(pts[:-1], pts[1:]))
            touched = False
            for a, b in segments:
                box = segment_box(a, b, r, shape)
                if box is None:
                    continue
                mask = segment_mask(a, b, r, *box)
                if not mask.any():
                    continue
                touched = True
                self._write_mask(part, i, box[0], box[2], mask, value, only)
            if not touched:
                message = (f"stroke at {pts.round(1).tolist()[:3]} is outside image '{self.names[i]}' of size "
                           f"(Y={shape[0]}, X={shape[1]}); nothing was painted - give (y, x) full-resolution "
                           "pixel coordinates inside the image")
                if own:  # a call of its own is a mistake in the coordinates; a drag may just leave the image
                    raise ValueError(message)
                return Change(i, None, 0, message)
            if stroke is not None:
                stroke.edits += part.edits
                if part.edits:
                    stroke.bbox = _union(stroke.bbox, part.bbox)
            return self._finish(part, own)

    def paint(self, points, class_id, radius: float = 3.0, image=None) -> Change:
        """Paint a stroke segment: a disk brush swept along the line through ``points``.

        Parameters
        ----------
        points : sequence of (y, x)
            Full-resolution image coordinates (pixel ``(r, c)`` has its centre at ``(r, c)``); one point
            paints a disk, several paint the segments between consecutive points. Parts outside the
            image are clipped.
        class_id : int or str
            Class to paint (``1..K`` or name).
        radius : float
            Brush radius in image pixels. Below :data:`~pixlab.annotation.MIN_RADIUS` the stroke is a
            one-pixel line through the pixels under the points.
        image : int or str, optional
            Image to paint (default: the current one, or the open stroke's).

        Returns
        -------
        Change
            Bounding box and count of changed pixels. Inside :meth:`begin_stroke` / :meth:`end_stroke`
            (a mouse drag) a segment entirely outside the image is skipped with a ``message``.

        Raises
        ------
        ValueError
            A call of its own (no open stroke) entirely outside the image: nothing is painted.
        """
        return self._paint(points, self.class_id(class_id), radius, image)

    def erase(self, points, radius: float = 3.0, image=None, class_id=None) -> Change:
        """Erase (set to 0) along a stroke, like :meth:`paint`; with ``class_id`` only that class is erased."""
        only = None if class_id is None else self.class_id(class_id)
        return self._paint(points, 0, radius, image, only=only)

    def paint_mask(self, mask, class_id, origin=(0, 0), image=None) -> Change:
        """Set the pixels of a boolean ``mask`` placed at full-res ``origin`` ``(y, x)`` to a class (0 erases).

        One undoable step (or part of the open stroke). The parts of the mask outside the image are
        clipped; a mask entirely outside raises ``ValueError``. (The polygon, box and points tools use
        :meth:`~pixlab.annotation.regions.RegionsMixin.fill_shape`, which writes tile by tile.)
        """
        k = 0 if class_id == 0 else self.class_id(class_id)
        mask = np.asarray(mask, bool)
        if mask.ndim != 2:
            raise ValueError(f"mask must be a 2-D (h, w) boolean array, got shape {mask.shape}")
        oy, ox = (int(v) for v in origin)
        with self.lock:
            i = self._stroke.image if self._stroke is not None and image is None else self.index_of(image)
            ny, nx = self.label_store(i).shape
            y0, y1, x0, x1 = max(0, oy), min(ny, oy + mask.shape[0]), max(0, ox), min(nx, ox + mask.shape[1])
            if y1 <= y0 or x1 <= x0:
                raise ValueError(f"mask at {(oy, ox)} of size {mask.shape} is outside image '{self.names[i]}' "
                                 f"of size (Y={ny}, X={nx}); nothing was painted")
            part = Stroke(i)
            self._write_mask(part, i, y0, x0, mask[y0 - oy:y1 - oy, x0 - ox:x1 - ox], k)
            if self._stroke is not None and self._stroke.image == i:
                self._stroke.edits += part.edits
                if part.edits:
                    self._stroke.bbox = _union(self._stroke.bbox, part.bbox)
                return self._finish(part, own=False)
            return self._finish(part, own=True)

    def set_labels(self, labels, image=None) -> Change:
        """Replace an image's labels (e.g. imported from QuPath GeoJSON) as one undoable step.

        Parameters
        ----------
        labels : array_like (Y, X) or LabelStore
            Class ids ``0..K`` for the image: an array for images that fit in memory, a
            :class:`~pixlab.labels.store.LabelStore` of the image's shape for any size.
        image : int or str, optional
            Default the current image.
        """
        from pixlab.labels.masks import validate_labels
        from pixlab.labels.store import LabelStore, is_label_store

        with self.lock:
            i = self.index_of(image)
            store = self.label_store(i)
            if is_label_store(labels):
                if tuple(labels.shape) != store.shape:
                    raise ValueError(f"labels have shape {tuple(labels.shape)} but image '{self.names[i]}' is "
                                     f"{store.shape} (Y, X); draw labels on the same image or resize them")
                new = labels
                top = new.max() if isinstance(new, LabelStore) else max(
                    (int(new.read(r).max()) for r in new.painted_chunks()), default=0)
                if top > self.n_classes:
                    raise ValueError(f"labels contain class id {top} but only {self.n_classes} classes exist "
                                     f"{self.class_names}; add the class name or relabel")
            else:
                new = LabelStore.from_array(validate_labels(labels, store.shape, self.class_names),
                                           None if store.dense else store.chunk)
            stroke = Stroke(i)
            regions = sorted(set(store.painted_chunks()) | set(_chunk_regions(new, store)))
            for region in regions:
                old, want = store.read(region), new.read(region).astype(store.dtype)
                ys, xs = np.nonzero(old != want)
                if ys.size == 0:
                    continue
                stroke.add(region[0], region[2], ys, xs, old[ys, xs], want[ys, xs])
                store.write(region, want)
            if not stroke.edits:
                return Change(i, None, 0)
            change = self._finish(stroke, own=True)
        self._emit("labels", image=i, region=change.region)
        return change

    def clear_class(self, cls, image=None) -> Change:
        """Erase every pixel of a class in one image (undoable)."""
        k = self.class_id(cls)
        with self.lock:
            i = self.index_of(image)
            store = self.label_store(i)
            stroke = Stroke(i)
            for region in store.painted_chunks():
                sub = store.read(region)
                ys, xs = np.nonzero(sub == k)
                if ys.size:
                    stroke.add(region[0], region[2], ys, xs, sub[ys, xs].copy(), 0)
                    sub[ys, xs] = 0
                    store.write(region, sub)
            if not stroke.edits:
                return Change(i, None, 0, f"class '{self.class_names[k - 1]}' has no pixels in '{self.names[i]}'")
            return self._finish(stroke, own=True)

    # ------------------------------------------------------------------------------------------
    # Undo / redo
    # ------------------------------------------------------------------------------------------
    def _revert(self, stroke: Stroke, undo: bool) -> None:
        store = self.label_store(stroke.image)
        for edit in (reversed(stroke.edits) if undo else stroke.edits):
            apply_edit(store, edit, undo)
        self._touch(stroke.image)

    def undo(self, image=None) -> Change:
        """Undo the last stroke of an image (default current)."""
        with self.lock:
            if self._stroke is not None:
                self.end_stroke()
            i = self.index_of(image)
            stroke = self._history.pop_undo(i)
            if stroke is None:
                return Change(i, None, 0, "nothing to undo")
            self._revert(stroke, undo=True)
            return Change(i, stroke.region, stroke.n_changed)

    def redo(self, image=None) -> Change:
        """Redo the last undone stroke of an image (default current)."""
        with self.lock:
            i = self.index_of(image)
            stroke = self._history.pop_redo(i)
            if stroke is None:
                return Change(i, None, 0, "nothing to redo")
            self._revert(stroke, undo=False)
            return Change(i, stroke.region, stroke.n_changed)

    @property
    def can_undo(self) -> bool:
        """Whether the current image has a stroke to undo."""
        return self._history.n_undo(self.index) > 0

    @property
    def can_redo(self) -> bool:
        """Whether the current image has an undone stroke to redo."""
        return self._history.n_redo(self.index) > 0


def _chunk_regions(new, store):
    """Regions of ``store``'s chunk grid that cover the painted chunks of ``new`` (any chunk size)."""
    c = store.chunk
    ny, nx = store.shape
    out = set()
    for y0, y1, x0, x1 in new.painted_chunks():
        for cy in range(y0 // c, -(-y1 // c)):
            for cx in range(x0 // c, -(-x1 // c)):
                out.add((cy * c, min(ny, (cy + 1) * c), cx * c, min(nx, (cx + 1) * c)))
    return out
