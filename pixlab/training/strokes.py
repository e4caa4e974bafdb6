"""Where the training labels are, found block by block: labelled blocks, stroke pieces, tile cells.

Training draws tiles around strokes. On a whole slide the labels are a
:class:`~pixlab.labels.store.LabelStore` and nothing image-sized may be built: no int64 index of
every labelled pixel, no component map of the slide. :class:`StrokeIndex` keeps, for every labelled
block of :data:`BLOCK` px, the pixel count of each class and the *pieces* of strokes in it
(8-connected components inside the block: a stroke that crosses blocks has one piece in each). A
tile is drawn by choosing a block (by class pixel count, or the next piece of a class in turn) and
re-reading only that block's labels (a small cache keeps the recent ones). The same code serves
plain label arrays of small images, so there is one sampling rule.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

__all__ = ["BLOCK", "StrokeIndex", "read_labels", "labelled_blocks", "context_blocks", "stroke_windows", "is_store"]

#: Block side in pixels: a label store's chunk (512 by default); plain arrays are cut the same way.
BLOCK = 512

# Recently drawn blocks (labels + component map, 5 B/px) kept in memory: 64 MB is ~250 blocks.
_CACHE_BYTES = 64 * 2**20


def is_store(labels) -> bool:
    """Whether ``labels`` is a chunked label store rather than an array."""
    from pixlab.labels.store import is_label_store
    return is_label_store(labels)


def read_labels(labels, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """``labels[y0:y1, x0:x1]`` of an array or a label store (a dense copy of that region only)."""
    if is_store(labels):
        return labels.read((y0, y1, x0, x1))
    return np.asarray(labels[y0:y1, x0:x1])


def labelled_blocks(labels, block: int = BLOCK):
    """Yield ``((y0, y1, x0, x1), labels of that block)`` for every block holding a label.

    A store with chunks of about ``block`` px is walked through its painted chunks only (nothing is
    read where nothing was painted); arrays and one-chunk (small) stores are cut into a grid.
    """
    if is_store(labels) and getattr(labels, "chunk", 0) <= 2 * block:
        for region in labels.painted_chunks():
            arr = labels.read(region)
            if arr.any():
                yield tuple(int(v) for v in region), arr
        return
    H, W = labels.shape
    for y0 in range(0, H, block):
        for x0 in range(0, W, block):
            arr = read_labels(labels, y0, min(y0 + block, H), x0, min(x0 + block, W))
            if arr.any():
                yield (y0, y0 + arr.shape[0], x0, x0 + arr.shape[1]), arr


def context_blocks(labels, tile: int) -> list[tuple[int, int, int, int]]:
    """The labelled blocks of a large image, each grown by half a tile: where its tiles are drawn."""
    H, W = labels.shape
    m = tile // 2
    return [(max(0, y0 - m), min(H, y1 + m), max(0, x0 - m), min(W, x1 + m))
            for (y0, y1, x0, x1), _ in labelled_blocks(labels)]


def stroke_windows(labels, size: int) -> list[tuple[int, int, int, int]]:
    """Windows of ``size`` px centred on the clusters of strokes (one per cluster), in image order.

    Clusters are found on a coarse occupancy grid of ``size // 2`` px cells (never a full-size
    component map), so this works on slides' label stores as on arrays.
    """
    from scipy import ndimage
    Y, X = labels.shape
    g = max(1, size // 2)
    occ = np.zeros((Y // g + 1, X // g + 1), bool)
    for (y0, _, x0, _), lab in labelled_blocks(labels):
        ys, xs = np.nonzero(lab)
        occ[(ys + y0) // g, (xs + x0) // g] = True
    if not occ.any():
        return []
    comp, _ = ndimage.label(occ)
    out = []
    for sl in ndimage.find_objects(comp):
        cy = (sl[0].start + sl[0].stop) * g // 2
        cx = (sl[1].start + sl[1].stop) * g // 2
        y0, x0 = max(0, min(Y - size, cy - size // 2)), max(0, min(X - size, cx - size // 2))
        out.append((y0, min(Y, y0 + size), x0, min(X, x0 + size)))
    return out


def _components(arr: np.ndarray):
    """8-connected components of equal class in a block: (int32 map, count)."""
    from skimage.measure import label
    cc, n = label(arr, background=0, connectivity=2, return_num=True)
    return cc.astype(np.int32, copy=False), int(n)


class StrokeIndex:
    """Labelled blocks and stroke pieces of one or more label images (arrays or label stores).

    Parameters
    ----------
    labels_list : list of (Y, X) arrays or label stores
        0 = unlabelled, ``k`` = class ``k``.
    n_classes : int
        Number of classes ``K``.
    tile : int
        Tile side, for :attr:`n_cells`.
    block : int
        Block side (:data:`BLOCK`).

    Attributes
    ----------
    blocks : list of (image index, y0, y1, x0, x1)
    pieces : numpy.ndarray, shape (P, 6)
        ``(block, component id in the block, class, pixels, centroid y, centroid x)`` per stroke piece.
    n_cells : int
        Tiles of a ``tile`` grid (aligned with each image) that hold a labelled pixel.
    """

    def __init__(self, labels_list, n_classes: int, tile: int, block: int = BLOCK):
        self.labels = list(labels_list)
        self.n_classes, self.block = int(n_classes), int(block)
        self.blocks: list[tuple[int, int, int, int, int]] = []
        counts, pieces, cells = [], [], set()
        t = int(tile)
        for i, lab in enumerate(self.labels):
            for (y0, y1, x0, x1), arr in labelled_blocks(lab, block):
                b = len(self.blocks)
                self.blocks.append((i, y0, y1, x0, x1))
                counts.append(np.bincount(arr.ravel(), minlength=self.n_classes + 1)[: self.n_classes + 1])
                cc, n = _components(arr)
                flat = cc.ravel()
                klass = np.zeros(n + 1, np.int64)
                klass[flat] = arr.ravel()
                npx = np.bincount(flat, minlength=n + 1)
                rows, cols = np.nonzero(cc)
                lab_ids = cc[rows, cols]
                cy = np.bincount(lab_ids, weights=rows, minlength=n + 1) / np.maximum(npx, 1)
                cx = np.bincount(lab_ids, weights=cols, minlength=n + 1) / np.maximum(npx, 1)
                for j in range(1, n + 1):
                    pieces.append((b, j, int(klass[j]), int(npx[j]), y0 + int(cy[j]), x0 + int(cx[j])))
                cells.update(zip([i] * rows.size, ((rows + y0) // t).tolist(), ((cols + x0) // t).tolist()))
        self.counts = np.array(counts, np.int64).reshape(-1, self.n_classes + 1)
        self.pieces = np.array(pieces, np.int64).reshape(-1, 6)
        self.n_cells = len(cells)
        # Per class: cumulative pixel counts over blocks (pixel-weighted draws) and its pieces.
        self._cum = [np.cumsum(self.counts[:, k]) for k in range(self.n_classes + 1)]
        self._pieces_of = [np.flatnonzero(self.pieces[:, 2] == k) for k in range(self.n_classes + 1)]
        self._cycle = [np.zeros(0, np.int64) for _ in range(self.n_classes + 1)]
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cache_bytes = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------
    @property
    def classes(self) -> list[int]:
        """Class ids (1..K) that have a labelled pixel."""
        return [k for k in range(1, self.n_classes + 1) if self._cum[k].size and self._cum[k][-1] > 0]

    def pixels(self, k: int) -> int:
        """Labelled pixels of class ``k``."""
        return int(self._cum[k][-1]) if self._cum[k].size else 0

    def n_pieces(self, k: int | None = None) -> int:
        """Stroke pieces of class ``k`` (all classes when None)."""
        return len(self.pieces) if k is None else int(self._pieces_of[k].size)

    def _block(self, b: int):
        """(labels, component map) of block ``b``, from the cache when it was drawn recently."""
        with self._lock:
            hit = self._cache.get(b)
            if hit is not None:
                self._cache.move_to_end(b)
                return hit
        i, y0, y1, x0, x1 = self.blocks[b]
        arr = read_labels(self.labels[i], y0, y1, x0, x1)
        cc, _ = _components(arr)
        with self._lock:
            self._cache[b] = (arr, cc)
            self._cache_bytes += arr.nbytes + cc.nbytes
            while self._cache_bytes > _CACHE_BYTES and len(self._cache) > 1:
                _, (a, c) = self._cache.popitem(last=False)
                self._cache_bytes -= a.nbytes + c.nbytes
        return arr, cc

    def _pixel_where(self, b: int, mask: np.ndarray, rng):
        i, y0, _, x0, _ = self.blocks[b]
        flat = np.flatnonzero(mask)
        p = int(flat[rng.integers(flat.size)])
        w = mask.shape[1]
        return i, y0 + p // w, x0 + p % w

    def pixel(self, k: int, rng):
        """A labelled pixel of class ``k``, each with the same chance: ``(image index, y, x)``."""
        cum = self._cum[k]
        b = int(np.searchsorted(cum, rng.integers(cum[-1]), side="right"))
        arr, _ = self._block(b)
        return self._pixel_where(b, arr == k, rng)

    def next_piece(self, k: int, rng):
        """A pixel of the next stroke piece of class ``k``: every piece comes in turn (shuffled cycle)."""
        with self._lock:
            if not self._cycle[k].size:
                self._cycle[k] = rng.permutation(self._pieces_of[k])
            p, self._cycle[k] = int(self._cycle[k][0]), self._cycle[k][1:]
        b, j = int(self.pieces[p, 0]), int(self.pieces[p, 1])
        _, cc = self._block(b)
        return self._pixel_where(b, cc == j, rng)

    def pieces_in_turn(self) -> np.ndarray:
        """Piece rows in an order that alternates classes (so a cap keeps every class), then position."""
        order = []
        per = [self._pieces_of[k] for k in range(1, self.n_classes + 1)]
        for r in range(max((p.size for p in per), default=0)):
            order += [int(p[r]) for p in per if r < p.size]
        return np.array(order, np.int64)
