"""Chunked label files (``.labels.zarr``): only painted chunks on disk, saves that rewrite only changed chunks.

The file is a plain zarr v3 array (``uint8``/``uint16``, square chunks, fill value 0; zarr stores no
file for a chunk of zeros), so zarr, napari or dask open it directly. A save must leave either the
previous state or the new one, never a mix, even when the process is killed halfway through. zarr
writes each chunk atomically but a save touches several chunks, so a save is journalled:

1. the changed chunks are written to ``<file>/pixlab-journal.npz`` (atomically: temporary name + rename);
2. they are written into the zarr array;
3. the journal is deleted.

Opening a file whose journal exists (killed during step 2) finishes step 2 first (roll forward); a
kill during step 1 leaves no journal and the previous state intact.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixlab._atomic import atomic_dir, atomic_path

__all__ = ["Snapshot", "snapshot", "write_snapshot", "write_chunks", "open_chunks", "JOURNAL"]

JOURNAL = "pixlab-journal.npz"


@dataclass
class Snapshot:
    """Chunks to write, copied under the session's lock so the write can happen outside it."""

    shape: tuple
    dtype: np.dtype
    chunk: int
    chunks: dict = field(default_factory=dict)  # (cy, cx) -> array, or None for a now-empty chunk
    full: bool = False  # a new file: every painted chunk is in ``chunks``

    @property
    def keys(self) -> list:
        return list(self.chunks)


def snapshot(store, full: bool = False) -> Snapshot:
    """What a save of ``store`` writes: every painted chunk (``full``) or the ones changed since the last save."""
    if full:
        chunks = {k: store.chunk_data(k) for k in store.painted_keys()}
        store.mark_clean()
    else:
        chunks = store.take_dirty()
    return Snapshot(store.shape, store.dtype, store.chunk, chunks, full)


def _box(snap: Snapshot, key):
    c = snap.chunk
    cy, cx = key
    return slice(cy * c, min((cy + 1) * c, snap.shape[0])), slice(cx * c, min((cx + 1) * c, snap.shape[1]))


def _write_into(array, snap: Snapshot) -> None:
    for key, data in snap.chunks.items():
        ys, xs = _box(snap, key)
        array[ys, xs] = 0 if data is None else data


def _create(folder: Path, snap: Snapshot):
    import zarr

    return zarr.create_array(store=str(folder), shape=snap.shape, chunks=(snap.chunk, snap.chunk),
                             dtype=snap.dtype, fill_value=0, zarr_format=3,
                             chunk_key_encoding={"name": "default", "separator": "/"},
                             config={"write_empty_chunks": False}, overwrite=True)


def write_snapshot(path, snap: Snapshot) -> None:
    """Write a :class:`Snapshot` into the ``.labels.zarr`` at ``path`` (created when new), journalled."""
    import zarr

    path = Path(path)
    if snap.full or not path.exists():
        with atomic_dir(path) as tmp:
            _write_into(_create(tmp, snap), snap)
        return
    if not snap.chunks:
        return
    arrays = {f"k_{cy}_{cx}": (np.zeros(0, snap.dtype) if d is None else d) for (cy, cx), d in snap.chunks.items()}
    with atomic_path(path / JOURNAL) as tmp:
        np.savez_compressed(tmp, **arrays)
    _write_into(zarr.open_array(str(path), mode="r+", config={"write_empty_chunks": False}), snap)
    os.remove(path / JOURNAL)


def write_chunks(path, store, full: bool = False) -> None:
    """Save ``store`` to ``path``: its changed chunks (all of them for a new file)."""
    write_snapshot(path, snapshot(store, full=full or not Path(path).exists()))


def _replay(path: Path, array) -> None:
    with np.load(path / JOURNAL, allow_pickle=False) as journal:
        chunks = {}
        for name in journal.files:
            _, cy, cx = name.split("_")
            data = journal[name]
            chunks[(int(cy), int(cx))] = None if data.size == 0 else data
    snap = Snapshot(array.shape, array.dtype, array.chunks[0], chunks)
    _write_into(array, snap)
    os.remove(path / JOURNAL)


def _painted_keys(path: Path) -> list[tuple[int, int]]:
    root = path / "c"
    keys = []
    if root.is_dir():
        for cy in os.listdir(root):
            sub = root / cy
            if sub.is_dir() and cy.isdigit():
                keys += [(int(cy), int(cx)) for cx in os.listdir(sub) if cx.isdigit()]
    return sorted(keys)


def open_chunks(path):
    """Open a ``.labels.zarr`` as a :class:`~pixlab.labels.store.LabelStore` whose chunks load on demand.

    Raises
    ------
    ValueError
        The folder is not a 2-D ``uint8``/``uint16`` zarr array with square chunks.
    """
    import zarr

    from pixlab.labels.store import LabelStore

    path = Path(path)
    try:
        array = zarr.open_array(str(path), mode="r+" if (path / JOURNAL).exists() else "r")
    except Exception as e:  # zarr raises several types for a folder that is not an array
        raise ValueError(f"'{path}' is not a readable zarr label array ({e}); delete it or restore a backup") from None
    if (array.ndim != 2 or np.dtype(array.dtype) not in (np.dtype(np.uint8), np.dtype(np.uint16))
            or array.chunks[0] != array.chunks[1]):
        raise ValueError(f"'{path}' holds a {array.ndim}-D {array.dtype} array with chunks {array.chunks}; label "
                         "files are 2-D uint8/uint16 arrays with square chunks - delete or convert it")
    if (path / JOURNAL).exists():  # a save was interrupted after its journal was complete: finish it
        _replay(path, array)
    for stale in path.glob(f".{JOURNAL}.*"):  # a journal whose writing was interrupted: never valid
        stale.unlink(missing_ok=True)
    store = LabelStore(array.shape, array.dtype, array.chunks[0])

    def read(key):
        c = store.chunk
        cy, cx = key
        return array[cy * c:(cy + 1) * c, cx * c:(cx + 1) * c]

    store.attach(read, _painted_keys(path))
    return store
