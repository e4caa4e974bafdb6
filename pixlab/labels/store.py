"""Sparse, chunked label images: only the chunks that hold labels exist, in memory and on disk.

A whole-slide label mask (100,000 x 100,000 px) is 10 GB as a dense uint8 array, but brush strokes
cover a tiny part of it. :class:`LabelStore` keeps a ``(Y, X)`` label image as square chunks
(default 512 px; chunks of zeros are never stored), so memory and files grow with what was painted,
not with the image. Small images use the same class (one or a few chunks) and convert to and from
plain arrays with :meth:`LabelStore.from_array` / :meth:`LabelStore.to_array`.

The protocol every consumer of labels relies on (training's tile sampler, statistics, GeoJSON) is
small: ``shape``, ``dtype``, :meth:`~LabelStore.painted_chunks` and :meth:`~LabelStore.read`.
:func:`is_label_store` tells such an object from an array; :func:`as_label_store` wraps an array.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

import numpy as np

from pixlab.labels.store_summaries import StoreSummaries

__all__ = ["LabelStore", "is_label_store", "as_label_store", "DEFAULT_CHUNK", "DENSE_PIXELS", "MAX_DENSE_PIXELS"]

#: Chunk side in pixels: 512^2 uint8 = 256 kB per painted chunk (a stroke across a slide touches a
#: few dozen), small enough that an edit rewrites little and large enough that listing chunks is cheap.
DEFAULT_CHUNK = 512

#: Images up to this many pixels are held as one dense chunk (16 MB as uint8): the same memory as a
#: plain array, and :meth:`LabelStore.live_array` can hand it out.
DENSE_PIXELS = 4096 * 4096

#: :meth:`LabelStore.to_array` refuses to build larger dense arrays (0.25 GB as uint8): beyond this,
#: use :meth:`LabelStore.read` on regions or :meth:`LabelStore.painted_chunks`.
MAX_DENSE_PIXELS = 256 * 2**20

# Clean chunks that can be re-read from their file are dropped from memory beyond this budget.
_CACHE_BYTES = 256 * 2**20


def is_label_store(obj) -> bool:
    """Whether ``obj`` follows the label-store protocol (``shape``, ``dtype``, ``painted_chunks()``, ``read()``)."""
    return (not isinstance(obj, np.ndarray) and hasattr(obj, "painted_chunks") and hasattr(obj, "read")
            and hasattr(obj, "shape") and hasattr(obj, "dtype"))


def as_label_store(labels, chunk: int | None = None) -> "LabelStore":
    """A :class:`LabelStore` for ``labels`` (returned as is when it already is one)."""
    if isinstance(labels, LabelStore):
        return labels
    if is_label_store(labels):
        out = LabelStore(labels.shape, labels.dtype, chunk)
        for region in labels.painted_chunks():
            out.write(region, labels.read(region))
        out.mark_clean()
        return out
    return LabelStore.from_array(labels, chunk)


def _check_shape(shape) -> tuple[int, int]:
    try:
        ny, nx = (int(s) for s in tuple(shape)[-2:])
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (Y, X), got {shape!r}") from None
    if ny < 1 or nx < 1:
        raise ValueError(f"shape must be (Y, X) with positive sizes, got {tuple(shape)}")
    return ny, nx


class LabelStore(StoreSummaries):
    """A ``(Y, X)`` label image held as sparse square chunks (0 = unlabelled, ``k`` = class ``k``).

    Parameters
    ----------
    shape : (int, int)
        ``(Y, X)`` of the image the labels belong to (a longer shape uses its last two entries).
    dtype : numpy dtype
        ``uint8`` (up to 255 classes) or ``uint16``.
    chunk : int, optional
        Chunk side in pixels. Default: one dense chunk for images up to :data:`DENSE_PIXELS`, else
        :data:`DEFAULT_CHUNK`.

    Attributes
    ----------
    version : int
        Incremented by every write; caches (statistics, previews) compare it.

    Examples
    --------
    >>> s = LabelStore((100_000, 80_000))          # no memory is used for unpainted chunks
    >>> s.write((50_000, 50_010, 7, 9), np.ones((10, 2), np.uint8))
    >>> s.painted_chunks()
    [(49664, 50176, 0, 512)]
    >>> int(s.read((50_000, 50_001, 0, 10)).sum())
    2
    """

    def __init__(self, shape, dtype=np.uint8, chunk: int | None = None):
        self.shape = _check_shape(shape)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
            raise ValueError(f"label stores hold uint8 or uint16 class ids, got dtype {self.dtype}")
        self.dense = chunk is None and self.shape[0] * self.shape[1] <= DENSE_PIXELS
        if chunk is None:
            chunk = max(self.shape) if self.dense else DEFAULT_CHUNK
        self.chunk = int(chunk)
        if self.chunk < 16 and not self.dense:
            raise ValueError(f"chunk={chunk} is too small; use 256-1024 px")
        self._chunks: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._nnz: dict[tuple[int, int], int] = {}  # labelled pixels per loaded chunk
        if self.dense:  # one chunk, always there: the live array of small images
            self._chunks[(0, 0)] = np.zeros(self.shape, self.dtype)
            self._nnz[(0, 0)] = 0
        self._dirty: set[tuple[int, int]] = set()
        self._on_disk: set[tuple[int, int]] = set()  # painted chunks in the backing file, loaded on demand
        self._reader = None  # callable(key) -> chunk array, for chunks in _on_disk
        self.version = 0

    # ------------------------------------------------------------------------------------------
    # Construction
    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_array(cls, array, chunk: int | None = None) -> "LabelStore":
        """A store holding a copy of a dense ``(Y, X)`` integer array (its non-zero chunks only)."""
        array = np.asarray(array)
        if array.ndim != 2:
            raise ValueError(f"labels must be a 2-D (Y, X) array, got shape {array.shape}")
        dtype = np.uint8 if (array.size == 0 or int(array.max()) <= 255) else np.uint16
        out = cls(array.shape, dtype, chunk)
        for key in out._all_keys():
            y0, y1, x0, x1 = out._box(key)
            part = array[y0:y1, x0:x1]
            n = int(np.count_nonzero(part))
            if n or out.dense:
                out._chunks[key] = part.astype(dtype, copy=True)
                out._nnz[key] = n
        return out

    def copy(self) -> "LabelStore":
        """An independent in-memory copy (every painted chunk is loaded)."""
        out = LabelStore(self.shape, self.dtype, None if self.dense else self.chunk)
        for key in self._painted_keys():
            out._chunks[key] = self._get(key).copy()
            out._nnz[key] = self._nnz[key]
        out.version = self.version
        return out

    def empty_like(self) -> "LabelStore":
        """A store of the same shape, dtype and chunking, with no labels."""
        return LabelStore(self.shape, self.dtype, None if self.dense else self.chunk)

    def attach(self, reader, keys) -> None:
        """Back the store by a file: ``keys`` are its painted chunks, ``reader(key)`` reads one (lazily)."""
        self._reader = reader
        self._on_disk = set(keys) - set(self._chunks)

    # ------------------------------------------------------------------------------------------
    # Geometry
    # ------------------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return 2

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def grid(self) -> tuple[int, int]:
        """Number of chunks along Y and X."""
        return -(-self.shape[0] // self.chunk), -(-self.shape[1] // self.chunk)

    def _box(self, key) -> tuple[int, int, int, int]:
        c = self.chunk
        cy, cx = key
        return cy * c, min((cy + 1) * c, self.shape[0]), cx * c, min((cx + 1) * c, self.shape[1])

    def chunk_region(self, key) -> tuple[int, int, int, int]:
        """Full-resolution ``(y0, y1, x0, x1)`` of chunk ``key = (cy, cx)``."""
        return self._box(key)

    def _all_keys(self) -> Iterator[tuple[int, int]]:
        gy, gx = self.grid
        return ((cy, cx) for cy in range(gy) for cx in range(gx))

    def _clip(self, region) -> tuple[int, int, int, int]:
        ny, nx = self.shape
        if region is None:
            return 0, ny, 0, nx
        try:
            y0, y1, x0, x1 = (int(v) for v in region)
        except (TypeError, ValueError):
            raise ValueError(f"region must be (y0, y1, x0, x1) in image pixels, got {region!r}") from None
        return max(0, y0), min(ny, y1), max(0, x0), min(nx, x1)

    def _keys_in(self, y0, y1, x0, x1):
        c = self.chunk
        return [(cy, cx) for cy in range(y0 // c, -(-y1 // c)) for cx in range(x0 // c, -(-x1 // c))]

    # ------------------------------------------------------------------------------------------
    # Chunks
    # ------------------------------------------------------------------------------------------
    def _painted_keys(self) -> list[tuple[int, int]]:
        return sorted({k for k, n in self._nnz.items() if n} | self._on_disk)

    def _get(self, key) -> np.ndarray | None:
        """The chunk array (live) or None when it holds no labels."""
        arr = self._chunks.get(key)
        if arr is not None:
            self._chunks.move_to_end(key)
            return arr
        if key in self._on_disk:
            arr = np.asarray(self._reader(key), dtype=self.dtype)
            y0, y1, x0, x1 = self._box(key)
            arr = np.ascontiguousarray(arr[: y1 - y0, : x1 - x0])
            self._chunks[key] = arr
            self._nnz[key] = int(np.count_nonzero(arr))
            self._on_disk.discard(key)
            self._evict()
            return arr
        return None

    def _evict(self) -> None:
        # Only chunks that can be read back (clean and backed by the file) may leave memory.
        if self._reader is None:
            return
        budget = _CACHE_BYTES // (self.chunk * self.chunk * self.dtype.itemsize)
        if len(self._chunks) <= budget:
            return
        for key in list(self._chunks):
            if len(self._chunks) <= budget:
                break
            if key not in self._dirty:
                del self._chunks[key]
                del self._nnz[key]
                self._on_disk.add(key)

    def painted_chunks(self) -> list[tuple[int, int, int, int]]:
        """Regions ``(y0, y1, x0, x1)`` of the chunks that hold labels, in row-major order."""
        return [self._box(k) for k in self._painted_keys()]

    def painted_keys(self) -> list[tuple[int, int]]:
        """Keys ``(cy, cx)`` of the chunks that hold labels."""
        return self._painted_keys()

    def chunk_data(self, key) -> np.ndarray | None:
        """A copy of chunk ``key`` (None when it holds no labels)."""
        arr = self._get(tuple(key))
        return None if arr is None or not self._nnz.get(tuple(key)) else arr.copy()

    # ------------------------------------------------------------------------------------------
    # Reading and writing
    # ------------------------------------------------------------------------------------------
    def read(self, region=None) -> np.ndarray:
        """A dense copy of ``region`` ``(y0, y1, x0, x1)`` (clipped to the image; default all of it).

        Raises
        ------
        ValueError
            If the region is empty, or the whole of a large store is asked for (see :meth:`to_array`).
        """
        y0, y1, x0, x1 = self._clip(region)
        if y1 <= y0 or x1 <= x0:
            raise ValueError(f"region {region!r} is empty or outside the labels of size {self.shape}")
        if (y1 - y0) * (x1 - x0) > MAX_DENSE_PIXELS:
            raise ValueError(
                f"reading {y1 - y0} x {x1 - x0} labels at once would need "
                f"{(y1 - y0) * (x1 - x0) * self.dtype.itemsize / 2**30:.1f} GB; read smaller regions or "
                "iterate over painted_chunks()")
        out = np.zeros((y1 - y0, x1 - x0), self.dtype)
        for (sy0, sy1, sx0, sx1), part in self._painted_parts(y0, y1, x0, x1):
            out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = part
        return out

    def _painted_parts(self, y0, y1, x0, x1):
        """Yield ``((sy0, sy1, sx0, sx1), labels there)`` for each painted chunk's overlap with the region."""
        for key in self._keys_in(y0, y1, x0, x1):
            arr = self._get(key)
            if arr is None:
                continue
            by0, by1, bx0, bx1 = self._box(key)
            sy0, sy1, sx0, sx1 = max(y0, by0), min(y1, by1), max(x0, bx0), min(x1, bx1)
            yield (sy0, sy1, sx0, sx1), arr[sy0 - by0:sy1 - by0, sx0 - bx0:sx1 - bx0]

    def write(self, region, values) -> None:
        """Set ``region`` ``(y0, y1, x0, x1)`` (inside the image) to ``values`` (same shape).

        Chunks that end up all zero are dropped (erasing frees memory and disk).
        """
        y0, y1, x0, x1 = (int(v) for v in region)
        ny, nx = self.shape
        if not (0 <= y0 <= y1 <= ny and 0 <= x0 <= x1 <= nx):
            raise ValueError(f"region {tuple(region)} is outside the labels of size (Y={ny}, X={nx})")
        values = np.asarray(values)
        if values.shape != (y1 - y0, x1 - x0):
            raise ValueError(f"values of shape {values.shape} do not fit region {tuple(region)}")
        if values.size and int(values.max()) > np.iinfo(self.dtype).max:
            raise ValueError(f"class id {int(values.max())} does not fit {self.dtype}; widen the store first")
        for key in self._keys_in(y0, y1, x0, x1):
            by0, by1, bx0, bx1 = self._box(key)
            sy0, sy1, sx0, sx1 = max(y0, by0), min(y1, by1), max(x0, bx0), min(x1, bx1)
            part = values[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0]
            new_n = int(np.count_nonzero(part))
            arr = self._get(key)
            if arr is None:
                if not new_n:
                    continue
                arr = np.zeros((by1 - by0, bx1 - bx0), self.dtype)
                self._chunks[key] = arr
                self._nnz[key] = 0
            target = arr[sy0 - by0:sy1 - by0, sx0 - bx0:sx1 - bx0]
            # Counting labelled pixels of the written piece keeps "is this chunk painted" exact
            # without scanning the chunk after each brush segment.
            self._nnz[key] += new_n - int(np.count_nonzero(target))
            target[...] = part
            if not self._nnz[key] and not self.dense:
                del self._chunks[key]
                del self._nnz[key]
            self._dirty.add(key)
        self.version += 1

    def map_values(self, lut) -> None:
        """Replace every class id ``v`` by ``lut[v]`` in all painted chunks (e.g. after deleting a class)."""
        lut = np.asarray(lut)
        for key in self._painted_keys():
            arr = self._get(key)
            new = lut[arr].astype(self.dtype)
            if np.array_equal(new, arr):
                continue
            n = int(np.count_nonzero(new))
            if n or self.dense:
                self._chunks[key] = new
                self._nnz[key] = n
            else:
                del self._chunks[key]
                del self._nnz[key]
            self._dirty.add(key)
        self.version += 1

    def astype(self, dtype) -> "LabelStore":
        """Widen (or narrow) the class-id dtype in place; returns ``self``."""
        dtype = np.dtype(dtype)
        if dtype == self.dtype:
            return self
        for key in set(self._painted_keys()) | set(self._chunks):
            self._chunks[key] = self._get(key).astype(dtype)
            self._dirty.add(key)
        self.dtype = dtype
        self.version += 1
        return self

    def live_array(self) -> np.ndarray | None:
        """The dense store's own array (edits show in it), or None for a chunked store."""
        return self._chunks[(0, 0)] if self.dense else None

    def to_array(self) -> np.ndarray:
        """A dense ``(Y, X)`` copy; refused beyond :data:`MAX_DENSE_PIXELS` (a whole slide's labels)."""
        if self.size > MAX_DENSE_PIXELS:
            raise ValueError(
                f"labels of {self.shape[0]} x {self.shape[1]} px are too large for one array "
                f"({self.size * self.dtype.itemsize / 2**30:.1f} GB); read regions with .read(region) or "
                "iterate over .painted_chunks()")
        return self.read()

    def __array__(self, dtype=None, copy=None):
        arr = self.to_array()
        return arr if dtype is None else arr.astype(dtype)

    def __repr__(self) -> str:
        return (f"LabelStore(shape={self.shape}, dtype={self.dtype}, chunk={self.chunk}, "
                f"painted_chunks={len(self._painted_keys())})")

    # ------------------------------------------------------------------------------------------
    # Saving: which chunks changed
    # ------------------------------------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        """Whether chunks changed since :meth:`mark_clean`."""
        return bool(self._dirty)

    def take_dirty(self) -> dict[tuple[int, int], np.ndarray | None]:
        """Copies of the chunks changed since the last call (None: the chunk is now empty); clears the set.

        Give them back with :meth:`restore_dirty` if writing them failed.
        """
        out = {}
        for key in sorted(self._dirty):
            arr = self._chunks.get(key)
            out[key] = None if arr is None or not self._nnz.get(key) else arr.copy()
        self._dirty.clear()
        return out

    def restore_dirty(self, keys) -> None:
        """Mark chunks dirty again (a save that failed)."""
        self._dirty |= set(keys)

    def mark_clean(self) -> None:
        """Forget which chunks changed (after a complete save)."""
        self._dirty.clear()

    @property
    def nbytes(self) -> int:
        """Bytes held in memory by loaded chunks."""
        return sum(a.nbytes for a in self._chunks.values())

