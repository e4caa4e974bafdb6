"""Brush geometry: checked stroke points, the capsule a brush sweeps between two points, the stroke radius.

Core module (no Jupyter imports), shared by the session's brush, eraser and the shape tools.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MIN_RADIUS", "check_points", "check_radius", "segment_mask", "segment_box"]

#: Brushes thinner than this radius (pixels) paint one-pixel lines: their points snap to the nearest
#: pixel centre and the line keeps the pixels within half a pixel of it. From this radius up (a hair
#: more than half a pixel's diagonal) a click always covers the pixel under it wherever it falls.
MIN_RADIUS = 0.71


def check_points(points) -> np.ndarray:
    """``(n, 2)`` float64 ``(y, x)`` points, or a ``ValueError`` naming what is wrong with them."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 2:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(
            f"points must be a list of (y, x) pairs in image pixels, got an array of shape {arr.shape}; "
            "e.g. [(10, 12), (11, 15)]"
        )
    if not np.isfinite(arr).all():
        raise ValueError("points contain NaN or infinite coordinates; pass finite (y, x) image coordinates")
    return arr


def check_radius(points: np.ndarray, radius) -> tuple[np.ndarray, float]:
    """The points and radius actually painted: below :data:`MIN_RADIUS`, snapped one-pixel lines."""
    try:
        r = float(radius)
    except (TypeError, ValueError):
        raise ValueError(f"radius must be a number of pixels, got {radius!r}; e.g. 3") from None
    if not math.isfinite(r):
        raise ValueError(f"radius must be finite, got {radius!r}; e.g. 3")
    if r < MIN_RADIUS:
        return np.floor(points + 0.5), 0.5
    return points, r


def segment_box(a, b, radius: float, shape) -> tuple[int, int, int, int] | None:
    """Pixels ``(y0, y1, x0, x1)`` that a segment's capsule can touch, clipped to ``shape`` (None: outside)."""
    ny, nx = shape
    y0 = max(0, int(math.floor(min(a[0], b[0]) - radius)))
    y1 = min(ny, int(math.ceil(max(a[0], b[0]) + radius)) + 1)
    x0 = max(0, int(math.floor(min(a[1], b[1]) - radius)))
    x1 = min(nx, int(math.ceil(max(a[1], b[1]) + radius)) + 1)
    if y1 <= y0 or x1 <= x0:
        return None
    return y0, y1, x0, x1


def segment_mask(a, b, radius, y0, y1, x0, x1) -> np.ndarray:
    """Pixels of box [y0:y1, x0:x1] whose centre is within ``radius`` of segment a-b (a capsule)."""
    yy = np.arange(y0, y1, dtype=np.float64)[:, None]
    xx = np.arange(x0, x1, dtype=np.float64)[None, :]
    dy, dx = b[0] - a[0], b[1] - a[1]
    length2 = dy * dy + dx * dx
    if length2 == 0:
        d2 = (yy - a[0]) ** 2 + (xx - a[1]) ** 2
    else:
        t = np.clip(((yy - a[0]) * dy + (xx - a[1]) * dx) / length2, 0.0, 1.0)
        d2 = (yy - (a[0] + t * dy)) ** 2 + (xx - (a[1] + t * dx)) ** 2
    return d2 <= radius * radius
