"""Streaming 2-D sliding-window inference with blended overlapping tiles.

The math is MONAI's ``sliding_window_inference`` (step = tile * (1 - overlap), a separable
Gaussian importance map, the weighted mean of the tiles covering each pixel, small images padded
and cropped back), restricted to 2-D and made streaming: tiles are processed one row ("band") at a
time and rows are finished as soon as no later tile can touch them, so memory is
O(n_out * tile * width) instead of O(n_out * height * width). Whole-slide images therefore never
need to fit in memory. The weighted mean is computed incrementally in float32 (the rule and why
it is exact for a constant network: :mod:`pixlab.inference.blend`, whose device twin of this
function ``predict_file`` uses).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["tile_starts", "blend_window", "predict_tiled", "WINDOWS"]

#: Window kinds accepted by :func:`blend_window`.
WINDOWS = ("gaussian", "cosine")

# Weights never reach zero, so every pixel of a tile counts a little and the division is always
# defined (MONAI clamps its importance map to the same minimum).
_MIN_WEIGHT = 1e-3


def tile_starts(length: int, tile: int, step: int) -> list[int]:
    """Start offsets of tiles covering ``[0, length)`` along one axis.

    Parameters
    ----------
    length : int
        Size of the axis in pixels (>= 1).
    tile : int
        Tile size in pixels (>= 1).
    step : int
        Distance between consecutive tile starts (>= 1).

    Returns
    -------
    list of int
        Increasing start offsets. The last tile is flush with the end of the axis so that no tile
        needs padding when ``length >= tile``; when ``length < tile`` the only start is 0.

    Examples
    --------
    >>> tile_starts(10, 4, 3)
    [0, 3, 6]
    >>> tile_starts(11, 4, 3)
    [0, 3, 6, 7]
    >>> tile_starts(3, 4, 2)
    [0]
    """
    for name, value in (("length", length), ("tile", tile), ("step", step)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}; pass >= 1.")
    last = max(length - tile, 0)
    starts = list(range(0, last, step))
    starts.append(last)
    return starts


def blend_window(tile: int, kind: str = "gaussian") -> np.ndarray:
    """Weights used to blend overlapping tile predictions.

    Parameters
    ----------
    tile : int
        Tile size in pixels; the window is square.
    kind : {"gaussian", "cosine"}
        ``"gaussian"``: separable Gaussian centred on the tile with sigma = tile / 8 (MONAI's
        importance map). ``"cosine"``: separable Hann window, flatter in the middle.

    Returns
    -------
    np.ndarray
        ``(tile, tile)`` float32, maximum 1, strictly positive (floored at 1e-3) so that every
        pixel keeps a defined weighted average.

    Examples
    --------
    >>> w = blend_window(8)
    >>> w.shape, w.dtype, bool(w.min() > 0), float(w.max()) <= 1.0
    ((8, 8), dtype('float32'), True, True)
    """
    if int(tile) != tile or tile < 1:
        raise ValueError(f"tile must be a positive integer, got {tile!r}; pass e.g. tile=256.")
    kind_key = str(kind).lower()
    # Pixel centres in [0, tile), so the window is symmetric for odd and even sizes.
    centre_offset = np.arange(tile, dtype=np.float64) + 0.5 - tile / 2
    if kind_key == "gaussian":
        sigma = tile / 8
        line = np.exp(-0.5 * (centre_offset / sigma) ** 2)
    elif kind_key == "cosine":
        line = 0.5 + 0.5 * np.cos(2 * np.pi * centre_offset / tile)
    else:
        raise ValueError(f"window must be one of {list(WINDOWS)}, got {kind!r}.")
    window = np.outer(line, line)
    window /= window.max()
    return np.maximum(window, _MIN_WEIGHT).astype(np.float32)


def _check_overlap(overlap: float) -> float:
    try:
        value = float(overlap)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 0.5:  # also rejects NaN
        raise ValueError(
            f"overlap must be a fraction of the tile in [0, 0.5], got {overlap!r}; "
            "pass e.g. overlap=0.25 (a quarter of the tile shared with each neighbour)."
        )
    return value


def _padded_tile(read_tile: Callable, y0: int, y1: int, x0: int, x1: int, tile: int) -> np.ndarray:
    """Read a tile; pad it at the bottom/right up to ``tile`` (only images smaller than it)."""
    data = np.asarray(read_tile(y0, y1, x0, x1), dtype=np.float32)
    if data.ndim != 3 or data.shape[1:] != (y1 - y0, x1 - x0):
        raise ValueError(
            f"read_tile({y0}, {y1}, {x0}, {x1}) returned shape {data.shape}; "
            f"it must return (C, {y1 - y0}, {x1 - x0})."
        )
    from pixlab.image.padding import pad_to
    return pad_to(data, tile, tile)


def predict_tiled(
    read_tile: Callable[[int, int, int, int], np.ndarray],
    shape_yx: tuple[int, int],
    n_out: int,
    infer: Callable[[np.ndarray], np.ndarray],
    tile: int,
    overlap: float,
    batch_size: int,
    window: str = "gaussian",
    sink: Callable[[int, int, np.ndarray], None] | None = None,
    prefetch: bool = True,
) -> np.ndarray | None:
    """Run ``infer`` on overlapping tiles of an image and blend the results seamlessly.

    Parameters
    ----------
    read_tile : callable
        ``read_tile(y0, y1, x0, x1) -> (C, y1 - y0, x1 - x0)`` normalised image data (converted to
        float32). Regions are smaller than ``tile`` only when the image itself is; those tiles are
        padded by reflection at the bottom/right and the prediction is cropped back.
    shape_yx : tuple of int
        ``(Y, X)`` size of the image.
    n_out : int
        Number of output channels K produced by ``infer``.
    infer : callable
        ``infer(batch (B, C, tile, tile) float32) -> (B, K, tile, tile)`` array-like.
    tile : int
        Tile size in pixels.
    overlap : float
        Fraction of the tile shared with each neighbour, in [0, 0.5];
        step = round(tile * (1 - overlap)).
    batch_size : int
        Number of tiles sent to ``infer`` at once.
    window : {"gaussian", "cosine"}
        Blending window, see :func:`blend_window`.
    sink : callable, optional
        ``sink(y0, y1, block (K, y1 - y0, X) float32)`` receives finished rows in order, each row
        exactly once. When None the full result is returned instead.
    prefetch : bool
        Read the next batch of tiles in a background thread while ``infer`` runs, so that I/O
        overlaps compute.

    Returns
    -------
    np.ndarray or None
        ``(K, Y, X)`` float32 when ``sink`` is None, else None.

    Examples
    --------
    >>> image = np.random.default_rng(0).random((2, 50, 70), dtype=np.float32)
    >>> out = predict_tiled(lambda y0, y1, x0, x1: image[:, y0:y1, x0:x1], (50, 70), 2,
    ...                     lambda batch: batch, tile=32, overlap=0.25, batch_size=4)
    >>> bool(np.allclose(out, image, atol=1e-5))
    True
    """
    height, width = (int(v) for v in shape_yx)
    if height < 1 or width < 1:
        raise ValueError(f"shape_yx must be two positive sizes, got {shape_yx!r}.")
    if int(tile) != tile or tile < 1:
        raise ValueError(f"tile must be a positive integer, got {tile!r}; pass e.g. tile=256.")
    if int(n_out) != n_out or n_out < 1:
        raise ValueError(f"n_out must be a positive integer, got {n_out!r}.")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    step = max(1, round(tile * (1 - _check_overlap(overlap))))
    weights = blend_window(tile, window)

    # Tiles in raster order; a new y start means every tile of the previous band is done.
    tile_h, tile_w = min(tile, height), min(tile, width)
    boxes = [
        (y0, y0 + tile_h, x0, x0 + tile_w)
        for y0 in tile_starts(height, tile, step)
        for x0 in tile_starts(width, tile, step)
    ]
    batches = [boxes[i : i + batch_size] for i in range(0, len(boxes), batch_size)]

    # float32 running weighted means (W += w; M += w / W * (p - M)): a constant network gives an
    # exactly constant output (no seams at all) without float64 accumulators.
    acc = np.zeros((n_out, tile_h, width), dtype=np.float32)
    wsum = np.zeros((tile_h, width), dtype=np.float32)
    top = 0  # image row held in acc[:, 0]
    result = None if sink is not None else np.empty((n_out, height, width), dtype=np.float32)

    def emit(y_end: int) -> None:
        nonlocal top
        done = y_end - top
        if done <= 0:
            return
        block = acc[:, :done].copy()
        if result is None:
            sink(top, y_end, block)
        else:
            result[:, top:y_end] = block
        # Slide the buffer up: rows not finished move to the top, freed rows start empty.
        acc[:, : tile_h - done] = acc[:, done:]
        acc[:, tile_h - done :] = 0
        wsum[: tile_h - done] = wsum[done:]
        wsum[tile_h - done :] = 0
        top = y_end

    def load(batch_boxes):
        return np.stack([_padded_tile(read_tile, *box, tile) for box in batch_boxes])

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, batches[0]) if prefetch else None
        for index, batch_boxes in enumerate(batches):
            data = pending.result() if prefetch else load(batch_boxes)
            if prefetch and index + 1 < len(batches):
                pending = pool.submit(load, batches[index + 1])
            pred = np.asarray(infer(data))
            if pred.shape != (len(batch_boxes), n_out, tile, tile):
                raise ValueError(
                    f"infer returned shape {pred.shape} for a batch of shape {data.shape}; "
                    f"it must return ({len(batch_boxes)}, {n_out}, {tile}, {tile}) (n_out={n_out})."
                )
            for (y0, y1, x0, x1), tile_pred in zip(batch_boxes, pred):
                # No later tile reaches above this band's start: those rows are final. After this
                # the buffer starts at row y0, so the tile lands in its first rows.
                emit(y0)
                h, w = y1 - y0, x1 - x0
                ws = wsum[:h, x0:x1]
                ws += weights[:h, :w]
                mean = acc[:, :h, x0:x1]
                mean += (np.asarray(tile_pred[:, :h, :w], np.float32) - mean) * (weights[:h, :w] / ws)
    emit(height)
    return result
