"""The files behind a session's labels: where they live, the JSON sidecar, loading and saving one image's labels.

Per image ``<name>`` in ``labels_dir``:

- ``<name>.labels.png`` (``.tif`` beyond 255 classes): the label image of images up to
  :data:`DENSE_FILE_PIXELS`, the format of every pixlab version (any tool reads it);
- ``<name>.labels.zarr``: a chunked zarr array for larger images (whole slides), where only painted
  chunks exist and a save rewrites only the chunks changed since the last one
  (:mod:`pixlab.labels.chunkfile`);
- ``<name>.labels.json``: the sidecar with class names and colours, written first so a label file is
  never on disk without the names that give it meaning.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pixlab._atomic import atomic_write
from pixlab.labels.masks import load_labels, save_labels
from pixlab.labels.store import LabelStore

__all__ = ["labels_path_for", "sidecar_path", "read_sidecar", "write_sidecar", "existing_labels_file",
           "load_store", "save_store", "DENSE_FILE_PIXELS", "SIDECAR_FORMAT"]

SIDECAR_FORMAT = "pixlab-labels"

#: Images up to this many pixels keep their labels in one PNG/TIFF (rewritten whole on each save, a
#: few ms at this size); larger ones in a chunked ``.labels.zarr``.
DENSE_FILE_PIXELS = 4096 * 4096

_SUFFIXES = (".zarr", ".png", ".tif")


def labels_path_for(labels_dir, image_name: str, n_classes: int = 1, shape=None) -> Path:
    """Where the labels of an image are saved.

    Parameters
    ----------
    labels_dir : path
    image_name : str
    n_classes : int
        Beyond 255 classes PNG cannot hold the ids: ``.tif``.
    shape : (Y, X), optional
        Images larger than :data:`DENSE_FILE_PIXELS` get a chunked ``.labels.zarr``.

    Returns
    -------
    pathlib.Path
        ``<labels_dir>/<image name>.labels.png`` (or ``.tif`` / ``.zarr``).
    """
    if shape is not None and int(shape[-2]) * int(shape[-1]) > DENSE_FILE_PIXELS:
        suffix = ".zarr"
    else:
        suffix = ".png" if n_classes <= 255 else ".tif"
    return Path(labels_dir) / f"{image_name}.labels{suffix}"


def sidecar_path(labels_dir, image_name: str) -> Path:
    """``<labels_dir>/<image name>.labels.json``."""
    return Path(labels_dir) / f"{image_name}.labels.json"


def read_sidecar(labels_dir, image_name: str) -> dict | None:
    """The sidecar of an image (None when there is none); a clear error when it is unreadable."""
    if labels_dir is None:
        return None
    path = sidecar_path(labels_dir, image_name)
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"labels sidecar '{path}' is not readable JSON ({e}); delete or fix it") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("class_names"), list):
        raise ValueError(f"labels sidecar '{path}' has no class_names list; delete or fix it")
    return meta


def write_sidecar(labels_dir, image_name: str, meta: dict) -> None:
    """Write the sidecar atomically."""
    with atomic_write(sidecar_path(labels_dir, image_name), "w") as f:
        json.dump(meta, f, indent=1)


def existing_labels_file(labels_dir, image_name: str) -> Path | None:
    """The saved labels of an image (``.zarr``, else ``.png``, else ``.tif``), or None."""
    if labels_dir is None:
        return None
    for suffix in _SUFFIXES:
        p = Path(labels_dir) / f"{image_name}.labels{suffix}"
        if p.exists():
            return p
    return None


def load_store(path: Path, shape, class_names, image_name: str) -> LabelStore:
    """Read an image's saved labels into a :class:`LabelStore`, checked against the image and the classes.

    Raises
    ------
    ValueError
        The file holds labels of another shape (another image's) or class ids beyond ``class_names``.
    """
    shape = tuple(int(s) for s in shape)
    dtype = np.uint8 if len(class_names) <= 255 else np.uint16
    try:
        if path.suffix == ".zarr":
            from pixlab.labels.chunkfile import open_chunks

            store = open_chunks(path)
        else:
            array = load_labels(path)
            store = None
    except (ValueError, OSError) as e:
        raise ValueError(f"cannot reload labels of image '{image_name}': {e}") from None
    found = store.shape if store is not None else array.shape
    if tuple(found) != shape:
        raise ValueError(
            f"labels file '{path}' has shape {tuple(found)} but image '{image_name}' is {shape} (Y, X); "
            "it belongs to another image - move or delete it, or pass another labels_dir"
        )
    if store is None:
        store = LabelStore.from_array(array)
    top = store.max()
    if top > len(class_names):
        raise ValueError(
            f"labels file '{path}' contains class id {top} but the session has {len(class_names)} classes "
            f"{list(class_names)}; pass the class_names it was drawn with"
        )
    store.astype(dtype)
    store.mark_clean()
    return store


def save_store(path: Path, store: LabelStore, dense=None) -> None:
    """Write labels atomically: a dense PNG/TIFF from ``dense`` (a snapshot array), or the chunks changed
    since the last save into a ``.zarr`` (``store`` then gives them up with ``take_dirty``)."""
    if path.suffix == ".zarr":
        from pixlab.labels.chunkfile import write_chunks

        write_chunks(path, store)
    else:
        save_labels(path, dense)


def remove_stale(path: Path) -> None:
    """Delete the other formats' files of the same image (a switch between PNG, TIFF and zarr)."""
    import shutil

    stem = path.name[: -len(path.suffix)]
    for suffix in _SUFFIXES:
        other = path.with_name(stem + suffix)
        if other == path or not other.exists():
            continue
        if other.is_dir():
            shutil.rmtree(other)
        else:
            other.unlink()
