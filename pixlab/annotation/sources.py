"""Where a session's images come from and what they are called (the names key their label files)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pixlab.image.formats import IMAGE_SUFFIXES, is_label_file, list_image_folder, stem  # one rule each

__all__ = ["IMAGE_SUFFIXES", "collect_sources", "unique_names", "image_stem", "list_folder", "is_label_file"]


def image_stem(path) -> str:
    """File name without its image suffix (``a.ome.tif`` -> ``a``), the key of its labels file."""
    return stem(path)


def list_folder(folder: Path) -> list[Path]:
    """The image files of a folder, sorted by name (labels files and hidden files left out)."""
    files = list_image_folder(folder)
    if not files:
        raise FileNotFoundError(
            f"folder '{folder}' holds no images (.tif/.png/.jpg); check the path or pass a list of files"
        )
    return files


def collect_sources(images) -> list:
    """The images of a session: paths (checked to exist), Images or arrays; a folder lists its images."""
    from pixlab.image.io import Image

    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        if path.is_dir() and path.suffix.lower() != ".zarr":  # a folder of images, not an OME-Zarr image
            return list(list_folder(path))
        if not path.exists():
            raise FileNotFoundError(f"image '{path}' does not exist; check the path or pass a folder of images")
        return [path]
    if isinstance(images, (np.ndarray, Image)) or hasattr(images, "dask"):
        return [images]
    try:
        items = list(images)
    except TypeError:
        raise ValueError(
            f"images must be a path, a folder, an Image, an array or a list of them, got {type(images).__name__}"
        ) from None
    if not items:
        raise ValueError("images is empty; pass at least one image, a list of images or a folder")
    out = []
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            item = Path(item)
            if not item.is_file():
                raise FileNotFoundError(f"image '{item}' does not exist; check the path")
        out.append(item)
    return out

def unique_names(sources) -> list[str]:
    """One name per image (the key of its labels files); two files with the same name are refused."""
    from pixlab.image.io import Image

    names = []
    for i, src in enumerate(sources):
        if isinstance(src, Path):
            names.append(image_stem(src))
        elif isinstance(src, Image):
            names.append(src.name if src.path is None else image_stem(src.path))
        else:
            names.append("image")
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    dupes = {n for n, c in seen.items() if c > 1}
    file_dupes = [n for i, n in enumerate(names) if n in dupes and isinstance(sources[i], Path)]
    if file_dupes:
        raise ValueError(
            f"several images are named '{file_dupes[0]}'; their label files would overwrite each other - "
            "rename the files or annotate them in separate sessions"
        )
    counter: dict[str, int] = {}
    out = []
    for n in names:
        if n in dupes:
            counter[n] = counter.get(n, 0) + 1
            n = f"{n}_{counter[n]}"
        out.append(n)
    return out
