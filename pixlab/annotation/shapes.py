"""Region annotation shapes: polygons, boxes and point discs, rasterised at full resolution.

Core module (no Jupyter imports). The annotator's polygon, box and points tools turn clicks into
full-resolution image coordinates (whatever the zoom or pyramid level shown) and hand them here;
:class:`Shape` then says which pixels the shape covers, one tile at a time, so a polygon around a
whole slide never needs a full-image (or even a full-bounding-box) array.

Coordinates are ``(y, x)`` in full-resolution image pixels with pixel ``(r, c)`` centred at
``(r, c)`` (as :meth:`pixlab.image.display.Viewport.canvas_to_image` returns them). A pixel belongs to a
shape when its centre is inside it.

Bad input raises one :class:`ValueError` that names the problem and the fix: a polygon with fewer
than three distinct corners or with crossing edges, a box of zero area, a point outside the image,
a shape that lies entirely outside the image or covers no pixel centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

__all__ = ["Shape", "polygon", "box", "disc", "TILE"]

#: Largest side (pixels) of one rasterised tile: 4096^2 booleans = 16 MiB at most per step.
TILE = 4096
_EDGE = 1e-6  # pixels: pixel centres on a polygon's edge count as inside


def _image_shape(image_shape) -> tuple[int, int]:
    try:
        ny, nx = (int(v) for v in tuple(image_shape)[-2:])
    except (TypeError, ValueError):
        raise ValueError(f"image_shape must be (Y, X), got {image_shape!r}") from None
    if ny < 1 or nx < 1:
        raise ValueError(f"image_shape must be positive, got {image_shape!r}")
    return ny, nx


def _points(points, what: str) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 2:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(f"{what} must be a list of (y, x) pairs in image pixels, got an array of shape "
                         f"{arr.shape}; e.g. [(10, 12), (30, 12), (30, 40)]")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contain NaN or infinite coordinates; pass finite (y, x) image coordinates")
    return arr


def _fmt(p) -> str:
    return f"(y={float(p[0]):.1f}, x={float(p[1]):.1f})"


@dataclass(frozen=True)
class Shape:
    """A validated shape on one image: what it covers, tile by tile.

    Attributes
    ----------
    kind : {"polygon", "box", "disc"}
    region : (y0, y1, x0, x1)
        Bounding box of the covered pixels, clipped to the image (full-resolution pixels, ends
        exclusive). It may hold no pixel centre inside a very thin polygon; :meth:`tiles` then
        yields nothing.
    image_shape : (Y, X)
    vertices : numpy.ndarray
        ``(n, 2)`` ``(y, x)`` corners (polygon: as drawn, without a repeated closing corner; box: the
        two corners; disc: the centre).
    radius : float
        Disc radius in image pixels (0 for the other kinds).
    """

    kind: str
    region: tuple
    image_shape: tuple
    vertices: np.ndarray = field(repr=False)
    radius: float = 0.0

    @property
    def area_bbox(self) -> int:
        """Pixels in :attr:`region` (an upper bound of the pixels covered)."""
        y0, y1, x0, x1 = self.region
        return (y1 - y0) * (x1 - x0)

    def mask(self, region=None) -> np.ndarray:
        """Boolean mask of the covered pixels of ``region`` (default :attr:`region`; clipped to it).

        For large shapes use :meth:`tiles`: this allocates the whole of ``region``.
        """
        y0, y1, x0, x1 = self.region if region is None else (int(v) for v in region)
        ry0, ry1, rx0, rx1 = self.region
        out = np.zeros((max(0, y1 - y0), max(0, x1 - x0)), bool)
        cy0, cy1, cx0, cx1 = max(y0, ry0), min(y1, ry1), max(x0, rx0), min(x1, rx1)
        if cy1 > cy0 and cx1 > cx0:
            out[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = self._mask((cy0, cy1, cx0, cx1))
        return out

    def _mask(self, sub) -> np.ndarray:
        y0, y1, x0, x1 = sub
        if self.kind == "box":
            return np.ones((y1 - y0, x1 - x0), bool)
        if self.kind == "disc":
            (cy, cx), r = self.vertices[0], self.radius
            yy = np.arange(y0, y1, dtype=np.float64)[:, None] - cy
            xx = np.arange(x0, x1, dtype=np.float64)[None, :] - cx
            inside = yy * yy + xx * xx <= r * r
            # The pixel under the click is always part of its disc, however small the radius.
            py, px = int(math.floor(cy + 0.5)), int(math.floor(cx + 0.5))
            if y0 <= py < y1 and x0 <= px < x1:
                inside[py - y0, px - x0] = True
            return inside
        return _rasterise_polygon(self.vertices, sub)

    def tiles(self, tile: int = TILE) -> Iterator[tuple[tuple, np.ndarray]]:
        """``(region, mask)`` pieces of at most ``tile`` x ``tile`` pixels that together cover the shape.

        Pieces without a covered pixel are skipped; ``mask`` is boolean, shaped like ``region``.
        """
        tile = max(1, int(tile))
        y0, y1, x0, x1 = self.region
        for ty in range(y0, y1, tile):
            for tx in range(x0, x1, tile):
                sub = (ty, min(y1, ty + tile), tx, min(x1, tx + tile))
                m = self._mask(sub)
                if m.any():
                    yield sub, m


def _rasterise_polygon(vertices: np.ndarray, sub) -> np.ndarray:
    """Pixels of ``sub`` whose centre is inside the polygon (GDAL's scanline fill via rasterio).

    rasterio rather than ``skimage.draw.polygon``: skimage tests every pixel of the box against every
    edge, GDAL fills scanlines; bench/region_tools.py measured 150x (16 corners) to 700x (256 corners)
    faster on 1-16 Mpx boxes, with the same pixels. rasterio pixel ``(r, c)`` spans ``[r, r + 1)``, so our pixel-centre
    coordinates shift by +0.5.
    """
    from rasterio import features
    from rasterio.transform import Affine
    from shapely.geometry import Polygon

    y0, y1, x0, x1 = sub
    ring = [(float(x) - x0 + 0.5, float(y) - y0 + 0.5) for y, x in vertices]
    # GDAL decides pixel centres exactly on an edge one way on the left/top and the other way on the
    # right/bottom; a hair of buffer includes them on every side, the same rule as boxes (edges included).
    geometry = Polygon(ring).buffer(_EDGE, join_style="mitre")
    out = features.rasterize([(geometry, 1)], out_shape=(y1 - y0, x1 - x0), fill=0, dtype="uint8",
                             transform=Affine.identity(), all_touched=False)
    return out.astype(bool)


def polygon(vertices, image_shape) -> Shape:
    """A validated polygon: the pixels whose centres lie inside the outline through ``vertices``.

    Parameters
    ----------
    vertices : sequence of (y, x)
        Corners in full-resolution image pixels, in drawing order; the outline closes by itself (a
        last corner equal to the first is dropped, as are repeated clicks on one spot). Corners may
        lie outside the image: the polygon is clipped to it.
    image_shape : (Y, X)
        Full-resolution size of the image.

    Returns
    -------
    Shape

    Raises
    ------
    ValueError
        Fewer than 3 distinct corners, edges that cross each other, no area (all corners on a line),
        or a polygon entirely outside the image.

    Examples
    --------
    >>> p = polygon([(2, 2), (2, 6), (5, 6), (5, 2)], (10, 10))
    >>> p.region, int(p.mask().sum())
    ((2, 6, 2, 7), 20)
    """
    import shapely
    from shapely.geometry import Polygon

    ny, nx = _image_shape(image_shape)
    pts = _points(vertices, "polygon corners")
    keep = np.ones(len(pts), bool)
    keep[1:] = np.any(pts[1:] != pts[:-1], axis=1)   # a double click adds the same corner twice
    pts = pts[keep]
    if len(pts) > 1 and np.array_equal(pts[0], pts[-1]):
        pts = pts[:-1]                                 # closed by clicking the first corner again
    if len(np.unique(pts, axis=0)) < 3:
        raise ValueError(f"a polygon needs at least 3 distinct corners, got {len(np.unique(pts, axis=0))} "
                         f"({', '.join(_fmt(p) for p in pts[:3])}); click three or more corners, then close it")
    if np.linalg.matrix_rank(pts - pts[0], tol=1e-9) < 2:
        raise ValueError("the polygon has no area (its corners lie on one line); click corners around the region")
    poly = Polygon([(x, y) for y, x in pts])
    if not poly.is_valid:
        reason = shapely.is_valid_reason(poly)
        where = ""
        if "[" in reason:  # e.g. "Self-intersection[12.5 30]": shapely gives x y
            try:
                x, y = (float(v) for v in reason[reason.index("[") + 1:reason.index("]")].split())
                where = f" at {_fmt((y, x))}"
            except ValueError:
                pass
        raise ValueError(f"the polygon's edges cross each other{where}; draw the outline without crossing "
                         f"it (or draw two polygons)")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    y0, y1 = max(0, math.ceil(lo[0] - 0.5)), min(ny, math.floor(hi[0] + 0.5) + 1)
    x0, x1 = max(0, math.ceil(lo[1] - 0.5)), min(nx, math.floor(hi[1] + 0.5) + 1)
    if y1 <= y0 or x1 <= x0:
        raise ValueError(f"the polygon {_fmt(lo)}-{_fmt(hi)} lies outside the image of size (Y={ny}, X={nx}); "
                         f"draw it on the image")
    return Shape("polygon", (y0, y1, x0, x1), (ny, nx), pts)


def box(corner_a, corner_b, image_shape) -> Shape:
    """A validated box between two opposite corners: the pixels whose centres lie inside it (edges included).

    Parameters
    ----------
    corner_a, corner_b : (y, x)
        Opposite corners in full-resolution image pixels (where the mouse was pressed and released);
        a box reaching beyond the image is clipped to it.
    image_shape : (Y, X)

    Raises
    ------
    ValueError
        A box of zero area (both corners on one row or column), one entirely outside the image, or
        one between pixel centres.

    Examples
    --------
    >>> box((2, 3), (4, 7), (10, 10)).region
    (2, 5, 3, 8)
    """
    ny, nx = _image_shape(image_shape)
    pts = _points([corner_a, corner_b], "box corners")
    if pts.shape[0] != 2:
        raise ValueError(f"a box needs two corners, got {pts.shape[0]}")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    if hi[0] - lo[0] <= 0 or hi[1] - lo[1] <= 0:
        raise ValueError(f"the box from {_fmt(pts[0])} to {_fmt(pts[1])} has zero area; press the mouse on one "
                         f"corner and drag to the opposite one")
    y0, y1 = max(0, math.ceil(lo[0])), min(ny, math.floor(hi[0]) + 1)
    x0, x1 = max(0, math.ceil(lo[1])), min(nx, math.floor(hi[1]) + 1)
    if y1 <= y0 or x1 <= x0:
        inside = 0 <= hi[0] and lo[0] < ny and 0 <= hi[1] and lo[1] < nx
        raise ValueError(
            f"the box from {_fmt(pts[0])} to {_fmt(pts[1])} "
            + ("covers no pixel centre; zoom out or drag a larger box" if inside
               else f"lies outside the image of size (Y={ny}, X={nx}); draw it on the image"))
    return Shape("box", (y0, y1, x0, x1), (ny, nx), pts)


def disc(centre, radius: float, image_shape) -> Shape:
    """A validated disc around a click: pixels whose centre is within ``radius`` (and the pixel clicked).

    Parameters
    ----------
    centre : (y, x)
        Full-resolution image coordinates of the click; must be on the image.
    radius : float
        Image pixels (>= 0).
    image_shape : (Y, X)

    Raises
    ------
    ValueError
        A click outside the image, or a negative or non-finite radius.

    Examples
    --------
    >>> int(disc((5, 5), 1, (10, 10)).mask().sum())
    5
    """
    ny, nx = _image_shape(image_shape)
    c = _points(centre, "the point")
    if c.shape[0] != 1:
        raise ValueError(f"a disc needs one centre, got {c.shape[0]}")
    y, x = c[0]
    try:
        r = float(radius)
    except (TypeError, ValueError):
        raise ValueError(f"radius must be a number of image pixels, got {radius!r}; e.g. 3") from None
    if not math.isfinite(r) or r < 0:
        raise ValueError(f"radius must be a finite number >= 0 of image pixels, got {radius!r}; e.g. 3")
    if not (-0.5 <= y < ny - 0.5 and -0.5 <= x < nx - 0.5):
        raise ValueError(f"the click at {_fmt((y, x))} is outside the image of size (Y={ny}, X={nx}); "
                         f"click on the image")
    y0, y1 = max(0, math.floor(y - r)), min(ny, math.floor(y + r + 0.5) + 1)
    x0, x1 = max(0, math.floor(x - r)), min(nx, math.floor(x + r + 0.5) + 1)
    return Shape("disc", (y0, y1, x0, x1), (ny, nx), c, r)
