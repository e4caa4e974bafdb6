"""Many images at once: listing inputs, naming outputs, predicting a folder with resume."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["list_images", "output_paths", "predict_folder"]


def list_images(inputs) -> list[Path]:
    """Image files named by ``inputs``: files as given, folders expanded (non-recursive, sorted).

    Parameters
    ----------
    inputs : str, PathLike or list of them

    Returns
    -------
    list of Path
        Without duplicates, in the order given.
    """
    from pixlab.image.formats import IMAGE_SUFFIXES, is_image_path, list_image_folder

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir() and not is_image_path(p):  # an OME-Zarr folder is one image, not a folder of them
            files = list_image_folder(p)
            if not files:
                raise ValueError(f"folder '{p}' holds no image files ({', '.join(IMAGE_SUFFIXES)}); "
                                 "check the folder or give image files")
            found.extend(files)
        elif p.exists():
            found.append(p)
        else:
            raise FileNotFoundError(f"input '{p}' does not exist; check the path and spelling")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise ValueError("no input images given; pass image files or folders")
    return unique


def output_paths(image_path, out_dir, formats) -> dict:
    """Where :func:`predict_folder` writes each format for one input: ``out_dir/<name><suffix>``."""
    from pixlab.image.io import _stem
    from pixlab.inference.outputs import FORMATS

    name = _stem(image_path)
    return {fmt: Path(out_dir) / (name + FORMATS[fmt]) for fmt in formats}


def _check_formats(formats) -> list[str]:
    from pixlab.inference.outputs import FORMATS

    formats = [formats] if isinstance(formats, str) else list(formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"unknown output format(s) {bad or formats}; choose from {list(FORMATS)}")
    if "ome-tiff" in formats and "ome-zarr" in formats:
        raise ValueError("choose one raster format: 'ome-tiff' or 'ome-zarr', not both")
    return list(dict.fromkeys(formats))


def predict_folder(model, inputs, out_dir, *, formats=("ome-tiff",), overwrite: bool = False,
                   progress: bool = True, **kwargs) -> list[dict]:
    """Predict many images into one folder, resuming and surviving individual failures.

    Parameters
    ----------
    model : pixlab.Model or path
    inputs : path or list of paths
        Image files and folders of images (see :func:`list_images`).
    out_dir : str or PathLike
        Output folder (created if needed). Image ``a.tif`` gives ``a.ome.tif``,
        ``a.measurements.csv``, ``a.geojson``, ``a.overlay.png`` as asked by ``formats``; with
        ``"csv"``, ``measurements.csv`` also gathers every image's table.
    formats : list of str
        Any of :data:`pixlab.inference.outputs.FORMATS`: ``"ome-tiff"`` or ``"ome-zarr"``, ``"csv"``,
        ``"geojson"``, ``"png"``, ``"objects"`` (the objects table, ``a.objects.csv``).
    overwrite : bool
        Redo every image. Otherwise images whose outputs all exist are skipped (resume) and only
        missing outputs are written.
    progress : bool
        tqdm bars: images overall, and tiles of the current image.
    **kwargs
        Passed to :func:`predict_file` (``output``, ``dtype``, ``backend``, ``tile_size``, ...).

    Returns
    -------
    list of dict
        Per image: ``input``, ``status`` ("done", "skipped" or "failed"), ``outputs``, ``error``
        (message or None), ``seconds``.
    """
    from tqdm.auto import tqdm

    from pixlab.inference.stream import _as_model, predict_file

    formats = _check_formats(formats)
    images = list_images(inputs)
    names = {}
    for p in images:
        other = names.setdefault(output_paths(p, ".", ["csv"])["csv"].name, p)
        if other != p:
            raise ValueError(f"inputs '{other}' and '{p}' would write the same output names in '{out_dir}'; "
                             "rename one or predict them into different folders")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"output '{out_dir}' is a file but several images need an output folder; "
                                 "give a folder name")
    out_dir.mkdir(parents=True, exist_ok=True)
    model = _as_model(model)

    results = []
    overall = tqdm(images, unit="image", desc="images", disable=not progress, file=sys.stderr)
    for path in overall:
        targets = output_paths(path, out_dir, formats)
        todo = targets if overwrite else {f: p for f, p in targets.items() if not p.exists()}
        row = {"input": os.fspath(path), "outputs": {f: os.fspath(p) for f, p in targets.items()},
               "status": "skipped", "error": None, "seconds": 0.0}
        if todo:
            raster = next((todo[f] for f in ("ome-tiff", "ome-zarr") if f in todo), None)
            try:
                res = predict_file(model, path, raster, measurements=todo.get("csv", False),
                                   geojson=todo.get("geojson", False), overlay=todo.get("png", False),
                                   objects_csv=todo.get("objects", False), overwrite=overwrite, progress=progress, **kwargs)
                row.update(status="done", seconds=res["seconds"], backend=res["backend"])
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:  # one bad image must not stop the batch; it is reported
                message = str(e) if isinstance(e, (ValueError, OSError)) else f"{type(e).__name__}: {e}"
                row.update(status="failed", error=message)
                tqdm.write(f"pixlab: failed: {path}: {message}", file=sys.stderr)
        results.append(row)

    if "csv" in formats:
        _gather_measurements(out_dir, [output_paths(r["input"], out_dir, ["csv"])["csv"] for r in results])
    return results


def _gather_measurements(out_dir: Path, csv_paths) -> None:
    import pandas as pd

    from pixlab.inference.outputs import write_measurements

    tables = [pd.read_csv(p) for p in csv_paths if p.exists()]
    if tables:
        write_measurements(out_dir / "measurements.csv", pd.concat(tables, ignore_index=True))
