"""The one padding rule for tiles at an image's bottom/right edge: reflection.

Used wherever a tile is read from an image smaller than the tile (inference tiling, training
crops, the shift statistics), so that the network sees the same padded pixels in all three.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pad_to"]


def pad_to(data: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad ``(..., h, w)`` at the bottom and right to ``(..., height, width)`` by reflection.

    Reflection keeps the image statistics the network was trained on (zeros would be a dark border
    that normalisation turns into an extreme value). numpy's ``"reflect"``, unlike torch's, accepts
    pads wider than the image and repeats a 1-pixel side, so no size needs a special case.

    Parameters
    ----------
    data : ndarray, shape (..., h, w)
    height, width : int
        At least ``h`` and ``w``.

    Returns
    -------
    ndarray, shape (..., height, width)
        ``data`` itself when no padding is needed.

    Examples
    --------
    >>> pad_to(np.array([[1, 2, 3]]), 2, 6).tolist()
    [[1, 2, 3, 2, 1, 2], [1, 2, 3, 2, 1, 2]]
    """
    h, w = data.shape[-2:]
    if height < h or width < w:
        raise ValueError(f"pad_to: target {height}x{width} is smaller than the data ({h}x{w})")
    if (h, w) == (height, width):
        return data
    return np.pad(data, [(0, 0)] * (data.ndim - 2) + [(0, height - h), (0, width - w)], mode="reflect")
