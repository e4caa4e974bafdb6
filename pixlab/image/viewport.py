"""Zoom and pan of a canvas over an image larger than it.

:class:`Viewport` maps canvas pixels to full-resolution image coordinates (painting) and renders only
the part of an array that is visible, so a 50 000 px slide costs no more to show than a 512 px one.
"""

from __future__ import annotations

import math

import numpy as np

from pixlab.image.colours import _as_image
from pixlab.image.composite import _composite_region
from pixlab.image.overlays import label_overlay, probability_overlay

__all__ = ["Viewport"]


class Viewport:
    """Zoom and pan of a canvas over an image.

    The canvas pixel ``(i, j)`` (row, column) shows the full-resolution image pixel
    ``(floor(y0 + (i + 0.5) * scale), floor(x0 + (j + 0.5) * scale))``: ``(y0, x0)`` is the image
    point at the canvas's top-left corner and ``scale`` is image pixels per canvas pixel (> 1 when
    zoomed out). Everything shown is sampled through this one formula, so what is painted is what is seen.

    Parameters
    ----------
    image_shape : (int, int)
        ``(Y, X)`` of the full-resolution image (a longer shape uses its last two entries).
    canvas_shape : (int, int)
        ``(height, width)`` of the canvas in pixels.

    Attributes
    ----------
    y0, x0, scale : float
        Current view; :meth:`fit` sets them so the whole image is visible and centred.
    """

    MIN_SCALE = 1 / 32  # at most 32 canvas pixels per image pixel

    def __init__(self, image_shape, canvas_shape):
        self.image_shape = tuple(int(s) for s in tuple(image_shape)[-2:])
        self.canvas_shape = tuple(int(s) for s in canvas_shape)
        if min(self.image_shape) < 1 or min(self.canvas_shape) < 1:
            raise ValueError(f"image_shape {image_shape} and canvas_shape {canvas_shape} must be positive")
        self.fit()

    def __repr__(self) -> str:
        return f"Viewport(y0={self.y0:.1f}, x0={self.x0:.1f}, scale={self.scale:.4g})"

    @property
    def max_scale(self) -> float:
        """Most zoomed-out scale: the whole image fits twice over."""
        (ny, nx), (h, w) = self.image_shape, self.canvas_shape
        return max(1.0, 2 * max(ny / h, nx / w))

    def fit(self) -> "Viewport":
        """Show the whole image, centred."""
        (ny, nx), (h, w) = self.image_shape, self.canvas_shape
        self.scale = max(ny / h, nx / w)
        self.y0 = (ny - h * self.scale) / 2
        self.x0 = (nx - w * self.scale) / 2
        return self

    def _clamp(self) -> None:
        # Keep the view centre inside the image, so the image can never be panned out of sight.
        (ny, nx), (h, w) = self.image_shape, self.canvas_shape
        cy = min(max(self.y0 + h * self.scale / 2, 0), ny)
        cx = min(max(self.x0 + w * self.scale / 2, 0), nx)
        self.y0, self.x0 = cy - h * self.scale / 2, cx - w * self.scale / 2

    def zoom(self, factor: float, at=None) -> "Viewport":
        """Zoom in (``factor > 1``) or out, keeping the image point under canvas point ``at`` fixed.

        Parameters
        ----------
        factor : float
            Magnification change.
        at : (float, float), optional
            Canvas point ``(row, col)``; default the canvas centre.
        """
        factor = float(factor)
        if not factor > 0:
            raise ValueError(f"zoom factor must be > 0, got {factor!r}; e.g. 2 to zoom in, 0.5 to zoom out")
        h, w = self.canvas_shape
        cy, cx = (h / 2, w / 2) if at is None else (float(at[0]), float(at[1]))
        # Canvas pixel (cy, cx) has its centre at (cy + 0.5, cx + 0.5), as in canvas_to_image.
        uy, ux = self.y0 + (cy + 0.5) * self.scale, self.x0 + (cx + 0.5) * self.scale
        self.scale = min(max(self.scale / factor, self.MIN_SCALE), self.max_scale)
        self.y0, self.x0 = uy - (cy + 0.5) * self.scale, ux - (cx + 0.5) * self.scale
        self._clamp()
        return self

    def pan(self, dy: float, dx: float) -> "Viewport":
        """Move the image by ``(dy, dx)`` canvas pixels (positive = image moves down / right)."""
        self.y0 -= float(dy) * self.scale
        self.x0 -= float(dx) * self.scale
        self._clamp()
        return self

    def center_on(self, y0: float, y1: float, x0: float, x1: float, fill: float = 0.5,
                  max_zoom: float = 8.0) -> "Viewport":
        """Pan and zoom so the full-res box ``[y0, y1) x [x0, x1)`` is centred on the canvas and fully visible.

        Parameters
        ----------
        y0, y1, x0, x1 : float
            The box in full-resolution pixels (as in :meth:`visible_region` and pixlab's tables).
        fill : float
            Fraction of the canvas height or width the box spans afterwards (0-1): the rest is context.
        max_zoom : float
            At most this many canvas pixels per image pixel, so a box of a few pixels is not blown up
            to fill the screen.

        Returns
        -------
        Viewport
            ``self``; the canvas centre now shows the box centre.

        Examples
        --------
        >>> v = Viewport((1000, 1000), (100, 100)).center_on(200, 264, 500, 564)
        >>> v.visible_region()
        (168, 296, 468, 596)
        """
        try:
            y0, y1, x0, x1 = (float(v) for v in (y0, y1, x0, x1))
            fill = float(fill)
        except (TypeError, ValueError):
            raise ValueError(f"center_on needs numbers y0, y1, x0, x1, got {(y0, y1, x0, x1)!r}") from None
        if not (math.isfinite(y0 + y1 + x0 + x1) and y1 > y0 and x1 > x0):
            raise ValueError(f"box (y0={y0}, y1={y1}, x0={x0}, x1={x1}) is empty or not finite; "
                             "give y1 > y0 and x1 > x0 in image pixels")
        if not 0 < fill <= 1:
            raise ValueError(f"fill must be in (0, 1], got {fill!r}; e.g. 0.5")
        h, w = self.canvas_shape
        scale = max((y1 - y0) / (fill * h), (x1 - x0) / (fill * w))
        self.scale = min(max(scale, self.MIN_SCALE, 1.0 / max(float(max_zoom), 1e-9)), self.max_scale)
        # Image point u lies at canvas coordinate (u - y0) / scale: put the box centre at h / 2.
        self.y0 = (y0 + y1) / 2 - h * self.scale / 2
        self.x0 = (x0 + x1) / 2 - w * self.scale / 2
        self._clamp()
        return self

    def canvas_box(self, region) -> tuple[float, float, float, float]:
        """Canvas coordinates ``(top, bottom, left, right)`` of the edges of a full-res box (not clipped).

        For drawing outlines: canvas pixel ``i`` spans ``[i, i + 1)``, like image pixels.
        """
        y0, y1, x0, x1 = (float(v) for v in region)
        s = self.scale
        return (y0 - self.y0) / s, (y1 - self.y0) / s, (x0 - self.x0) / s, (x1 - self.x0) / s

    def canvas_to_image(self, cy: float, cx: float) -> tuple[float, float]:
        """Image coordinates (row, col; pixel centres at whole numbers) of canvas pixel ``(cy, cx)``."""
        return self.y0 + (float(cy) + 0.5) * self.scale - 0.5, self.x0 + (float(cx) + 0.5) * self.scale - 0.5

    def image_to_canvas(self, y: float, x: float) -> tuple[float, float]:
        """Canvas coordinates of image point ``(y, x)`` (inverse of :meth:`canvas_to_image`)."""
        return (float(y) + 0.5 - self.y0) / self.scale - 0.5, (float(x) + 0.5 - self.x0) / self.scale - 0.5

    def canvas_rect(self, region=None):
        """Canvas pixels that show ``region`` (full-res ``(y0, y1, x0, x1)``; default the whole image).

        Returns
        -------
        (i0, i1, j0, j1) or None
            Canvas rows ``i0:i1`` and columns ``j0:j1``; None when nothing of it is visible.
        """
        ny, nx = self.image_shape
        h, w = self.canvas_shape
        ry0, ry1, rx0, rx1 = (0, ny, 0, nx) if region is None else region
        ry0, ry1, rx0, rx1 = max(0, ry0), min(ny, ry1), max(0, rx0), min(nx, rx1)
        s = self.scale
        i0 = max(0, math.ceil((ry0 - self.y0) / s - 0.5))
        i1 = min(h, math.ceil((ry1 - self.y0) / s - 0.5))
        j0 = max(0, math.ceil((rx0 - self.x0) / s - 0.5))
        j1 = min(w, math.ceil((rx1 - self.x0) / s - 0.5))
        if i1 <= i0 or j1 <= j0:
            return None
        return i0, i1, j0, j1

    def _indices(self, rect):
        i0, i1, j0, j1 = rect
        ny, nx = self.image_shape
        rows = np.floor(self.y0 + (np.arange(i0, i1) + 0.5) * self.scale).astype(np.int64)
        cols = np.floor(self.x0 + (np.arange(j0, j1) + 0.5) * self.scale).astype(np.int64)
        return np.clip(rows, 0, ny - 1), np.clip(cols, 0, nx - 1)

    def visible_region(self, rect=None):
        """Full-res ``(y0, y1, x0, x1)`` covered by the visible canvas pixels (or by ``rect``), or None."""
        rect = rect if rect is not None else self.canvas_rect()
        if rect is None:
            return None
        i0, i1, j0, j1 = rect
        ny, nx = self.image_shape
        s = self.scale
        return (max(0, math.floor(self.y0 + i0 * s)), min(ny, math.ceil(self.y0 + i1 * s)),
                max(0, math.floor(self.x0 + j0 * s)), min(nx, math.ceil(self.x0 + j1 * s)))

    def take(self, array, rect, origin=(0, 0), factor=1):
        """Sample ``array`` for the canvas pixels ``rect`` (nearest neighbour).

        Parameters
        ----------
        array : numpy.ndarray, shape (h, w, ...)
            Covers full-res pixels from ``origin`` on, one array pixel per ``factor`` image pixels.
        rect : (i0, i1, j0, j1)
            Canvas rows and columns (from :meth:`canvas_rect`).
        origin : (int, int)
            Full-res ``(y, x)`` of ``array[0, 0]``.
        factor : int
            Downsample factor of ``array``.

        Returns
        -------
        numpy.ndarray, shape (i1 - i0, j1 - j0, ...)
        """
        rows, cols = self._indices(rect)
        a = np.clip((rows - int(origin[0])) // int(factor), 0, array.shape[0] - 1)
        b = np.clip((cols - int(origin[1])) // int(factor), 0, array.shape[1] - 1)
        return array[a[:, None], b[None, :]]

    def render_image(self, image, channels=None, ranges=None, colours=None):
        """The visible part of an image as RGB, read from the pyramid level matching the zoom.

        Returns
        -------
        (rgb, rect) or (None, None)
            ``rgb`` (h, w, 3) uint8 for canvas pixels ``rect`` (see :meth:`canvas_rect`).
        """
        img = _as_image(image)
        rect = self.canvas_rect()
        if rect is None:
            return None, None
        region = self.visible_region(rect)
        rgb, origin, factor = _composite_region(img, channels, ranges, colours, region, max(1.0, self.scale))
        return self.take(rgb, rect, origin, factor), rect

    def render_labels(self, labels, colours, opacity=0.5, region=None):
        """RGBA of the full-res ``labels`` for the canvas pixels showing ``region`` (default: all visible).

        ``labels`` is a ``(Y, X)`` array or a :class:`pixlab.labels.store.LabelStore`.

        Returns
        -------
        (rgba, rect) or (None, None)
        """
        rect = self.canvas_rect(region)
        if rect is None:
            return None, None
        if not isinstance(labels, np.ndarray) and hasattr(labels, "painted_chunks"):
            # A chunked label store (whole slides): sample only its painted chunks, no dense array.
            return label_overlay(labels.take(*self._indices(rect)), colours, opacity), rect
        return label_overlay(self.take(labels, rect), colours, opacity), rect

    def render_probabilities(self, probs, colours, origin=(0, 0), factor=1, opacity=0.5):
        """RGBA of class probabilities ``(K, h, w)`` covering full-res pixels from ``origin`` at ``factor``.

        Returns
        -------
        (rgba, rect) or (None, None)
        """
        probs = np.asarray(probs)
        y, x = int(origin[0]), int(origin[1])
        region = (y, y + probs.shape[1] * int(factor), x, x + probs.shape[2] * int(factor))
        rect = self.canvas_rect(region)
        if rect is None:
            return None, None
        rgba = probability_overlay(probs, colours, opacity)
        return self.take(rgba, rect, origin, factor), rect

    def render_overlay(self, rgba, origin=(0, 0), factor=1):
        """The visible part of a ready-made RGBA layer ``(h, w, 4)`` covering full-res pixels from ``origin``.

        Used for diagnostic maps (:func:`pixlab.analysis.diagnostics.map_overlay`) computed once for an image
        or a region: each redraw only samples them for the canvas.

        Returns
        -------
        (rgba, rect) or (None, None)
        """
        rgba = np.asarray(rgba)
        if rgba.ndim != 3 or rgba.shape[2] != 4:
            raise ValueError(f"rgba must be an (h, w, 4) array, got shape {rgba.shape}")
        y, x = int(origin[0]), int(origin[1])
        region = (y, y + rgba.shape[0] * int(factor), x, x + rgba.shape[1] * int(factor))
        rect = self.canvas_rect(region)
        if rect is None:
            return None, None
        return self.take(rgba, rect, origin, factor), rect
