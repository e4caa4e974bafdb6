"""Whole-image summaries of a :class:`~pixlab.labels.store.LabelStore`, walked chunk by chunk.

Counts per class, the largest id, the bounding box of the labels, a block-maximum downsample and
a strided take for display: each visits only the painted chunks, so none builds an image-sized
array (a whole slide's labels are summarised from the few chunks that were painted).
"""

from __future__ import annotations

import numpy as np

__all__ = ["StoreSummaries"]


class StoreSummaries:
    """Mixin of :class:`~pixlab.labels.store.LabelStore`: it provides ``_painted_keys``, ``_painted_parts``, ``_get``,
    ``_box``, ``_clip``, ``_keys_in``, ``read``, ``chunk``, ``shape``, ``size``, ``dtype``, ``_nnz``
    and ``_on_disk``."""

    def any(self) -> bool:
        """Whether any pixel is labelled."""
        return any(self._nnz.values()) or bool(self._on_disk)

    def bincount(self, minlength: int = 0) -> np.ndarray:
        """Pixel count per class id, like ``numpy.bincount(labels.ravel())`` (entry 0: unlabelled pixels)."""
        counts = np.zeros(max(minlength, 1), np.int64)
        for key in self._painted_keys():
            c = np.bincount(self._get(key).ravel())
            if c.size > counts.size:
                counts = np.pad(counts, (0, c.size - counts.size))
            counts[:c.size] += c
        counts[0] = self.size - int(counts[1:].sum())
        return counts

    def max(self) -> int:
        """Largest class id present (0 when nothing is labelled)."""
        return max((int(self._get(k).max()) for k in self._painted_keys()), default=0)

    def bbox(self):
        """``(y0, y1, x0, x1)`` bounding box of labelled pixels, or None."""
        box = None
        for key in self._painted_keys():
            arr = self._get(key)
            rows, cols = np.flatnonzero(arr.any(axis=1)), np.flatnonzero(arr.any(axis=0))
            y0, _, x0, _ = self._box(key)
            b = (y0 + rows[0], y0 + rows[-1] + 1, x0 + cols[0], x0 + cols[-1] + 1)
            box = b if box is None else (min(box[0], b[0]), max(box[1], b[1]), min(box[2], b[2]), max(box[3], b[3]))
        return None if box is None else tuple(int(v) for v in box)

    def read_max(self, region, factor: int) -> np.ndarray:
        """``region`` downsampled by block maximum: thin strokes survive (as in training).

        Equals :func:`pixlab.training.samples.downsample_labels` of ``read(region)`` (partial blocks
        at the bottom/right count as blocks: ``ceil(h / f)`` rows), computed chunk by chunk so a
        whole slide's labels can be read at a coarse level.
        """
        from skimage.measure import block_reduce

        f = int(factor)
        y0, y1, x0, x1 = self._clip(region)
        if y1 <= y0 or x1 <= x0:
            raise ValueError(f"region {region!r} is empty or outside the labels of size {self.shape}")
        if f <= 1:
            return self.read((y0, y1, x0, x1))
        out = np.zeros((-(-(y1 - y0) // f), -(-(x1 - x0) // f)), self.dtype)
        for (sy0, _, sx0, _), part in self._painted_parts(y0, y1, x0, x1):
            # Pad the piece to block boundaries relative to the region's corner, then reduce.
            oy, ox = sy0 - y0, sx0 - x0
            part = np.pad(part, ((oy % f, 0), (ox % f, 0)))
            small = block_reduce(part, (f, f), np.max)
            ty, tx = oy // f, ox // f
            view = out[ty:ty + small.shape[0], tx:tx + small.shape[1]]
            np.maximum(view, small[:view.shape[0], :view.shape[1]], out=view)
        return out

    def take(self, rows, cols) -> np.ndarray:
        """``labels[rows[:, None], cols[None, :]]`` without a dense array (for display at any zoom).

        Parameters
        ----------
        rows, cols : 1-D integer arrays
            Full-resolution row and column indices inside the image, each sorted ascending.
        """
        rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        out = np.zeros((rows.size, cols.size), self.dtype)
        if not rows.size or not cols.size:
            return out
        c = self.chunk
        rk, ck = rows // c, cols // c
        for key in self._painted_keys():
            cy, cx = key
            ri = np.flatnonzero(rk == cy)
            if not ri.size:
                continue
            ci = np.flatnonzero(ck == cx)
            if not ci.size:
                continue
            arr = self._get(key)
            out[ri[0]:ri[-1] + 1, ci[0]:ci[-1] + 1] = arr[(rows[ri] - cy * c)[:, None], (cols[ci] - cx * c)[None, :]]
        return out
