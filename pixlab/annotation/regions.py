"""Region edits of an :class:`~pixlab.annotation.AnnotationSession`: filled shapes and edits from the prediction.

The polygon, box and points tools hand a validated :class:`pixlab.annotation.shapes.Shape` to
:meth:`RegionsMixin.fill_shape`; "accept the prediction" and "relabel a possible mistake" compute new
labels for one region with :mod:`pixlab.annotation.adjust` and write them with
:meth:`RegionsMixin.edit_region`. Each call is one undo step, written through the session's one write
primitive (``_write_mask``), so only the pixels that change are recorded and a shape on a whole
slide is filled tile by tile.
"""

from __future__ import annotations

import numpy as np

from pixlab.annotation.editing import Change
from pixlab.annotation.history import Stroke

__all__ = ["RegionsMixin"]


def _clip_region(region, shape) -> tuple[int, int, int, int]:
    try:
        y0, y1, x0, x1 = (int(v) for v in region)
    except (TypeError, ValueError):
        raise ValueError(f"region must be (y0, y1, x0, x1) in image pixels, got {region!r}") from None
    y0, y1, x0, x1 = max(0, y0), min(shape[0], y1), max(0, x0), min(shape[1], x1)
    if y1 <= y0 or x1 <= x0:
        raise ValueError(f"region {tuple(region)} is outside the image of size (Y={shape[0]}, X={shape[1]})")
    return y0, y1, x0, x1


class RegionsMixin:
    """Shapes and prediction edits for :class:`~pixlab.annotation.AnnotationSession` (which provides
    ``lock``, ``label_store``, ``index_of``, ``class_id``, ``names``, ``n_classes``, ``class_names``,
    ``end_stroke``, ``_stroke``, ``_write_mask`` and ``_finish``)."""

    def _image_shape(self, i: int) -> tuple:
        return tuple(self.label_store(i).shape)

    def fill_polygon(self, vertices, class_id, image=None) -> Change:
        """Fill a polygon (full-res ``(y, x)`` corners) with a class, as one undo step.

        See :func:`pixlab.annotation.shapes.polygon` for the geometry and its errors (fewer than 3
        distinct corners, crossing edges, entirely outside the image: :class:`ValueError`).
        """
        from pixlab.annotation.shapes import polygon

        i = self.index_of(image)
        return self.fill_shape(polygon(vertices, self._image_shape(i)), class_id, i)

    def fill_box(self, corner_a, corner_b, class_id, image=None) -> Change:
        """Fill the box between two opposite full-res corners with a class (0 erases), as one undo step."""
        from pixlab.annotation.shapes import box

        i = self.index_of(image)
        return self.fill_shape(box(corner_a, corner_b, self._image_shape(i)), class_id, i)

    def paint_point(self, centre, class_id, radius: float = 3.0, image=None) -> Change:
        """Mark one point: a disc of ``radius`` image pixels around ``centre`` ``(y, x)``, one undo step.

        Raises :class:`ValueError` for a point outside the image.
        """
        from pixlab.annotation.shapes import disc

        i = self.index_of(image)
        return self.fill_shape(disc(centre, radius, self._image_shape(i)), class_id, i)

    def fill_shape(self, shape, class_id, image=None) -> Change:
        """Fill a :class:`pixlab.annotation.shapes.Shape` with a class (0 erases), as one undo step.

        The shape is rasterised tile by tile (:meth:`~pixlab.annotation.shapes.Shape.tiles`), so only
        the pixels it covers are read and written.
        """
        k = 0 if isinstance(class_id, (int, np.integer)) and int(class_id) == 0 else self.class_id(class_id)
        with self.lock:
            if self._stroke is not None:
                self.end_stroke()
            i = self.index_of(image)
            if tuple(shape.image_shape) != self._image_shape(i):
                raise ValueError(f"the {shape.kind} was made for an image of size {tuple(shape.image_shape)}, "
                                 f"but image '{self.names[i]}' is {self._image_shape(i)}; draw it on this image")
            stroke, covered = Stroke(i), False
            for (y0, _, x0, _), mask in shape.tiles():
                covered = True
                self._write_mask(stroke, i, y0, x0, mask, k)
            if not covered:
                return Change(i, None, 0, f"the {shape.kind} covers no pixel centre of '{self.names[i]}'; "
                                          f"draw it larger (or zoom out)")
            return self._finish(stroke, own=True)

    def labels_crop(self, region, image=None) -> np.ndarray:
        """A copy of the labels of full-res ``region`` ``(y0, y1, x0, x1)`` (clipped to the image)."""
        with self.lock:
            i = self.index_of(image)
            return np.array(self.label_store(i).read(_clip_region(region, self._image_shape(i))), copy=True)

    def edit_region(self, region, new_labels, image=None) -> Change:
        """Replace the labels of full-res ``region`` with ``new_labels`` (same size), as one undo step.

        Only pixels whose value changes are recorded; class ids must be ``0..K``.
        """
        from pixlab.labels.masks import validate_labels

        with self.lock:
            if self._stroke is not None:
                self.end_stroke()
            i = self.index_of(image)
            y0, y1, x0, x1 = reg = _clip_region(region, self._image_shape(i))
            new = validate_labels(new_labels, (y1 - y0, x1 - x0), self.class_names)
            diff = self.label_store(i).read(reg) != new
            stroke = Stroke(i)
            for value in np.unique(new[diff]):   # one write per new value keeps redo exact
                self._write_mask(stroke, i, y0, x0, diff & (new == value), int(value))
            return self._finish(stroke, own=True)

    def accept_prediction(self, probs, classes=None, threshold: float = 0.9, *, origin=(0, 0), region=None,
                          shape=None, only_unlabelled: bool = True, image=None) -> Change:
        """Turn the model's confident prediction into labels, as one undo step.

        Parameters
        ----------
        probs : array (K, h, w)
            Class probabilities whose pixel ``[:, 0, 0]`` is full-res pixel ``origin``.
        classes : iterable of int or str, optional
            Classes to accept (ids or names; default all).
        threshold : float
            Smallest probability of the predicted class accepted, in (0, 1].
        origin : (y, x)
        region : (y0, y1, x0, x1), optional
            Where (default: the shape's box, else all of ``probs``); cut to what ``probs`` covers.
        shape : pixlab.annotation.shapes.Shape, optional
            Only pixels inside this polygon or box.
        only_unlabelled : bool
            Keep every labelled pixel (default).
        image : int or str, optional

        See :func:`pixlab.annotation.adjust.accept_prediction`.
        """
        from pixlab.annotation.adjust import accept_prediction

        ids = None if classes is None else [self.class_id(c) for c in classes]
        p, reg = _probs_crop(probs, origin, region if region is not None
                             else (shape.region if shape is not None else None))
        if p.shape[0] != self.n_classes:
            raise ValueError(f"the prediction has {p.shape[0]} classes but the session has {self.n_classes} "
                             f"({', '.join(self.class_names)}); use a model trained on these classes")
        inside = None if shape is None else shape.mask(reg)
        new = accept_prediction(p, self.labels_crop(reg, image), ids, threshold, inside=inside,
                                only_unlabelled=only_unlabelled)
        return self.edit_region(reg, new, image)

    def relabel_mistake(self, probs, labelled_class, predicted_class, min_confidence: float = 0.9, *,
                        origin=(0, 0), region=None, image=None) -> Change:
        """Relabel the pixels of ``labelled_class`` the model calls ``predicted_class`` with probability
        ``>= min_confidence`` in ``region`` (one row of the guide's possible label mistakes), one undo step.

        See :func:`pixlab.annotation.adjust.relabel_mistake`; ``probs``/``origin`` as in :meth:`accept_prediction`.
        """
        from pixlab.annotation.adjust import relabel_mistake

        p, reg = _probs_crop(probs, origin, region)
        new = relabel_mistake(p, self.labels_crop(reg, image), self.class_id(labelled_class),
                              self.class_id(predicted_class), min_confidence)
        return self.edit_region(reg, new, image)


def _probs_crop(probs, origin, region):
    """``probs`` cut to ``region`` (full-res; default all of it) and the region itself."""
    p = np.asarray(probs)
    if p.ndim != 3:
        raise ValueError(f"probs must be (K, h, w) class probabilities, got shape {p.shape}")
    oy, ox = (int(v) for v in origin)
    extent = (oy, oy + p.shape[1], ox, ox + p.shape[2])
    y0, y1, x0, x1 = extent if region is None else (int(v) for v in region)
    y0, y1, x0, x1 = max(y0, extent[0]), min(y1, extent[1]), max(x0, extent[2]), min(x1, extent[3])
    if y1 <= y0 or x1 <= x0:
        raise ValueError(f"region {region} is not covered by the prediction of {extent}; predict that region")
    return p[:, y0 - oy:y1 - oy, x0 - ox:x1 - ox], (y0, y1, x0, x1)
