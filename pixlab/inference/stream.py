"""predict_file: one image file of any size in, streamed outputs (raster, measurements, GeoJSON, overlay) out."""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from pixlab.inference.backends import BACKENDS, get_backend, inference_batch_size
from pixlab.inference.prepare import image_stats_for, match_channels, tile_reader, working_image
from pixlab.nn.tile_size import check_tile_size

__all__ = ["predict_file"]


def _tiling(model, tile_size, overlap, batch_size, n_channels):
    tile = model.inference_tile_size if tile_size is None else check_tile_size(tile_size, "tile_size", model.tile_multiple)
    ov = model.config.tile_overlap if overlap is None else overlap
    return tile, ov, inference_batch_size(model, tile, n_channels, batch_size)


def _as_model(model):
    if isinstance(model, (str, os.PathLike)):
        from pixlab.model.bundle import load_model
        return load_model(model)
    if not hasattr(model, "infer_batch") or not hasattr(model, "class_names"):
        raise ValueError(f"model must be a pixlab Model or a model folder, got {type(model).__name__}; "
                         "load one with pixlab.load_model(folder)")
    return model


def _check_targets(targets: dict, overwrite: bool) -> None:
    from pixlab._atomic import check_writable

    for fmt, path in targets.items():
        check_writable(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"output '{path}' already exists; pass overwrite=True (--overwrite) to "
                                  "replace it, or choose another output name")
        if path.is_dir() and fmt != "ome-zarr":
            raise IsADirectoryError(f"output '{path}' is a folder; give a file name for the {fmt} output, "
                                    f"or use predict_folder to write into a folder")


def _side_path(value, out_path, fmt):
    from pixlab.inference.outputs import derived_path

    if value is None or value is False:
        return None
    if value is True:
        if out_path is None:
            raise ValueError(f"{fmt} output requested with True but there is no out_path to name it after; "
                             f"pass a file name instead of True")
        return derived_path(out_path, fmt)
    return Path(value)


def predict_file(model, in_path, out_path=None, *, output: str = "probabilities", dtype: str = "uint8",
                 measurements=False, geojson=False, overlay=False, overwrite: bool = False,
                 backend: str = "eager", tile_size: int | None = None, overlap: float | None = None,
                 batch_size: int | None = None, per_image_norm: bool | None = None, channels=None,
                 window: str = "gaussian", tiff_tile: int = 256, compression: str | None = "zlib",
                 geojson_max_pixels: int = 2**24, overlay_max_side: int = 2048,
                 background="auto", objects: str = "detection", objects_csv=False, object_classes=None,
                 min_object_area: float = 0.0, fill_holes_area: float = 0.0, smooth: float = 0.0,
                 simplify: float = 0.0, progress: bool = False) -> dict:
    """Predict a whole image file, streaming, and write the outputs asked for.

    The input is read lazily tile by tile (plus overlap) at the model's training resolution (a
    matching pyramid level when the file has one), normalised with the model's statistics, run
    through the network in batches, blended (no seams) and written row band by row band, so memory
    stays flat whatever the image size. Reading and decoding, the network and the blending (on the
    model's device), and compression and writing run concurrently (:mod:`pixlab.inference.pipeline`);
    an error or Ctrl-C stops every worker thread and leaves no output file.

    Parameters
    ----------
    model : pixlab.Model or path
        A model, or a model folder written by ``model.save``.
    in_path : str, PathLike or Image
        TIFF / OME-TIFF (read lazily), PNG/JPEG, or an :class:`pixlab.Image`.
    out_path : str or PathLike, optional
        Raster output: ``*.ome.tif`` (tiled, compressed, pyramidal OME-TIFF) or ``*.ome.zarr``
        (OME-Zarr). Channel names are the class names (``["labels"]`` for a label map); the pixel
        size is the input's times the model's downsample. None: side outputs only.
    output : {"probabilities", "labels"}
        Probabilities: one channel per class, ``probs[k-1]`` = class k. Labels: one uint8 channel (uint16 beyond 255 classes),
        argmax class ids 1..K.
    dtype : {"uint8", "float16", "float32"}
        Probability pixel type: uint8 holds ``round(255 p)``; float32 is exactly what
        :meth:`pixlab.Model.predict` returns. Ignored for labels.
    measurements, geojson, overlay : bool or path
        Side outputs: area per class (CSV, one row per class: pixels, area in full-resolution px
        and µm², and with objects their count and density per mm²), objects (QuPath GeoJSON
        FeatureCollection, coordinates in full-resolution pixels; see ``objects``) and an RGB
        overlay PNG. True names them after ``out_path`` (``x.measurements.csv``, ``x.geojson``,
        ``x.overlay.png``).
    overwrite : bool
        Replace existing outputs; otherwise an existing output raises FileExistsError before any
        work is done.
    backend : {"eager", "onnxruntime", "auto"}
        See :func:`pixlab.inference.backends.get_backend`: "auto" measures the candidates this
        machine has (channels-last, AMP and ``torch.compile`` on CUDA, ONNX Runtime) on a few tiles
        and keeps the fastest that agrees with eager float32; it prints what it picked.
    tile_size, overlap, batch_size : optional
        Network tile size, overlap fraction and tiles per batch (default: the model's; on a GPU
        the batch size is chosen from free memory).
    per_image_norm : bool, optional
        Normalise with this image's own statistics (default: the model's setting).
    channels : sequence of int/str, or dict, optional
        Image channels in the model's order, or ``{model channel: image channel}``; see
        :func:`pixlab.image.channels.match_channels`.
    window : {"gaussian", "cosine"}
        Blending window.
    tiff_tile : int
        Tile / chunk size of the raster output.
    compression : {"zlib", "zstd", "lzw", None}
        Raster codec.
    geojson_max_pixels : int
        Polygons are traced on a label map of at most this many pixels: a larger prediction is
        reduced by a power of two first (each preview pixel = the most probable class of its block),
        and the GeoJSON says so through coarser outlines. The overlay uses the same map.
    overlay_max_side : int
        Longest side of the overlay PNG.
    background : {"auto", "none"} or TissueMask
        Skip tiles without tissue (:func:`pixlab.image.tissue.tissue_mask`): they are not read nor
        run, and pixels that no computed tile covers are written as class 1 (the first class,
        normally "background") with probability 1. A TissueMask: yours (made for this image).
        "auto": a mask is made only for a whole slide, an image of more than 4096 x 4096 pixels
        with a pyramid level small enough to find the tissue on cheaply; other images are predicted
        everywhere. "none": every tile is predicted.
    objects : {"detection", "annotation", "none"}
        The GeoJSON holds one feature per connected object (4-connected pixels of one class; objects
        crossing band borders are merged, :mod:`pixlab.inference.objects`) as QuPath detections or
        annotations, with its measurements (area, perimeter, centroid, mean probability, mean
        intensity per channel). "none": one MultiPolygon per class, traced on the reduced map of
        ``geojson_max_pixels``, and no object counts.
    objects_csv : bool or path
        The objects table, one row per object (``x.objects.csv`` with True).
    object_classes : list of str or int, optional
        Classes traced into objects (names or ids 1..K); default every class but the first
        (by pixlab's convention the background).
    min_object_area, fill_holes_area : float
        Objects smaller than this are dropped; holes smaller than this are filled (``math.inf``:
        all). In µm² when the image has a pixel size, else in full-resolution pixels.
    smooth, simplify : float
        Outline smoothing radius and simplification tolerance, in full-resolution pixels (0: the
        exact pixel edges). Areas and centroids are measured before smoothing, perimeters after.
    progress : bool
        Show a tqdm progress bar over tiles.

    Returns
    -------
    dict
        ``outputs`` (format -> path written), ``shape`` (K, Y, X) of the raster, ``backend`` (name
        used), ``tiles`` (in the grid), ``tiles_skipped`` (background), ``seconds``, ``measurements`` (pandas DataFrame or None),
        ``objects`` (``{class name: number of objects}`` or None) and ``preview_downsample``
        (full-resolution pixels per overlay pixel, and per GeoJSON pixel with ``objects="none"``).

    Examples
    --------
    >>> pixlab.predict_file(model, "slide.ome.tif", "out/slide.ome.tif", measurements=True,
    ...                     geojson=True)  # doctest: +SKIP
    """
    from pixlab.image.io import open_image
    from pixlab.inference.outputs import DTYPES, OUTPUT_KINDS, raster_format

    t_start = time.perf_counter()
    model = _as_model(model)
    if output not in OUTPUT_KINDS:
        raise ValueError(f"output must be one of {list(OUTPUT_KINDS)}, got {output!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    targets = {}
    if out_path is not None:
        targets[raster_format(out_path)] = Path(out_path)
    for fmt, value in (("csv", measurements), ("geojson", geojson), ("png", overlay), ("objects", objects_csv)):
        path = _side_path(value, out_path, fmt)
        if path is not None:
            targets[fmt] = path
    if not targets:
        raise ValueError("nothing to write: give out_path and/or measurements=/geojson=/overlay=/objects_csv=")
    from pixlab.inference.objects import object_options
    object_opts = object_options(objects, model.class_names, classes=object_classes, min_area=min_object_area,
                                 fill_holes=fill_holes_area, smooth=smooth, simplify=simplify,
                                 wanted="objects" in targets)
    _check_targets(targets, overwrite)

    opened = open_image(in_path)
    try:
        return _predict_opened(model, opened, targets, output=output, dtype=dtype, backend=backend,
                               tile_size=tile_size, overlap=overlap, batch_size=batch_size,
                               per_image_norm=per_image_norm, channels=channels, window=window, tiff_tile=tiff_tile,
                               compression=compression, geojson_max_pixels=geojson_max_pixels,
                               overlay_max_side=overlay_max_side, background=background, progress=progress,
                               t_start=t_start, object_opts=object_opts)
    finally:
        if opened is not in_path:  # close only what we opened
            opened.close()


_SLIDE_PIXELS = 4096 * 4096  # background="auto" looks for tissue only on images larger than this


def _tissue_for(background, img, work):
    """The TissueMask to skip background with, in ``work``'s pixel coordinates, or None."""
    from pixlab.image.tissue import MASK_MAX_PIXELS, TissueMask, tissue_mask

    if isinstance(background, str) and background in ("auto", "none"):
        if background == "none":
            return None
        y, x = img.shape[1:]
        small = min(int(lv.shape[1]) * int(lv.shape[2]) for lv in img.levels)
        if y * x <= _SLIDE_PIXELS or small > MASK_MAX_PIXELS:
            return None  # not a slide, or no level to find the tissue on without reading it all
        with warnings.catch_warnings():  # no contrast: all tissue, nothing skipped, nothing to say
            warnings.filterwarnings("ignore", message=".*no tissue/background contrast")
            tm = tissue_mask(img)
    elif isinstance(background, TissueMask):
        tm = background
        ty, tx = tm.shape
        y, x = img.shape[1:]
        if abs(ty / tx - y / x) > 0.02 * (y / x):
            raise ValueError(f"background mask is for an image of size {tm.shape} but image '{img.name}' is "
                             f"({y}, {x}); make it with pixlab.image.tissue.tissue_mask(this image)")
    else:
        raise ValueError(f"background must be 'auto', 'none' or a TissueMask, got {background!r}")
    return tm.for_shape(work.shape[1:])


class _Outputs:
    """What becomes of finished rows (in the writer thread): the raster, counts, preview.

    Other per-band outputs (e.g. objects merged across bands) add a callable to :attr:`extra`;
    each gets every :class:`pixlab.inference.blend.FinishedRows` in order (``.labels`` is the
    ``(h, X)`` uint8 label map when ``labels=True`` was asked of the blender).
    """

    def __init__(self, writer, counter, preview, labels_out):
        self.writer, self.counter, self.preview, self.labels_out = writer, counter, preview, labels_out
        self.extra: list = []

    def __call__(self, rows):
        rows.ready()
        labels = rows.out[0] if self.labels_out else rows.labels
        if self.writer is not None:
            self.writer.write(rows.out)
        if self.counter is not None:
            self.counter.add(labels)
        if self.preview is not None:
            if self.preview.factor == 1:
                self.preview.add_labels(labels)
            else:
                self.preview.add_columns(rows.columns)
        for consume in self.extra:
            consume(rows)


def _sample_tiles(reader, boxes, tile, stats, n=4):
    """Up to ``n`` normalised tiles of the first band, for backend="auto" to measure on."""
    import torch

    from pixlab.image.normalize import apply_torch

    y0 = boxes[0][0]
    band = reader.band(y0, y0 + tile)
    pieces = [band[:, :, x0: x0 + tile] for y, x0 in boxes[:n] if y == y0]
    if band.shape[1] != tile or any(p.shape[2] != tile for p in pieces):
        return None
    return apply_torch(torch.stack(pieces), stats)


def _predict_opened(model, img, targets, *, output, dtype, backend, tile_size, overlap, batch_size,
                    per_image_norm, channels, window, tiff_tile, compression, geojson_max_pixels,
                    overlay_max_side, background, progress, t_start, object_opts=None):
    from tqdm.auto import tqdm

    from pixlab.image.resolution import output_pixel_size
    from pixlab.inference.blend import BandBlender
    from pixlab.inference.outputs import LabelCounter, PreviewLabels, RasterWriter, measurements_table
    from pixlab.inference.outputs import write_geojson, write_measurements
    from pixlab.labels.classids import label_dtype
    from pixlab.inference.pipeline import BackgroundSink, StripReader, run_tiles, worker_count
    from pixlab.inference.tiling import _check_overlap, blend_window, tile_starts

    img = match_channels(model, img, channels)
    work, ds = working_image(model, img)
    stats = image_stats_for(model, img, per_image_norm)
    tile, ov, bs = _tiling(model, tile_size, overlap, batch_size, work.n_channels)
    height, width = work.shape[1:]
    k = model.n_classes
    step = max(1, round(tile * (1 - _check_overlap(ov))))
    th, tw = min(tile, height), min(tile, width)
    grid = [(y0, x0) for y0 in tile_starts(height, tile, step) for x0 in tile_starts(width, tile, step)]
    tissue = _tissue_for(background, img, work)
    boxes = grid if tissue is None else [(y, x) for y, x in grid if tissue.covers(y, y + th, x, x + tw)]

    raster_fmt = next((f for f in ("ome-tiff", "ome-zarr") if f in targets), None)
    labels_out = output == "labels"
    counter = LabelCounter(k) if "csv" in targets else None
    traced = object_opts is not None and any(f in targets for f in ("csv", "geojson", "objects"))
    preview = (PreviewLabels.for_max_pixels(k, (height, width), geojson_max_pixels)
               if ("geojson" in targets and not traced) or "png" in targets else None)
    out_shape = (1 if labels_out else k, height, width)
    out_dtype = label_dtype(k) if labels_out else np.dtype(dtype)
    device = model.device
    blender = BandBlender(
        k, height, width, tile, blend_window(tile, window), device,
        output=output if raster_fmt is not None else None, dtype=dtype,
        labels=not labels_out and (counter is not None or traced or (preview is not None and preview.factor == 1)),
        preview_factor=preview.factor if preview is not None else None, fill_uncovered=tissue is not None,
        confidence=traced)
    if labels_out and raster_fmt is None:
        blender.output = "labels"  # the label map is what counts and previews are made of
    bar = tqdm(total=len(boxes), unit="tile", desc=img.name, disable=not progress, leave=False,
               file=sys.stderr)

    with contextlib.ExitStack() as stack:
        stack.callback(bar.close)
        writer = None
        if raster_fmt is not None:
            writer = stack.enter_context(RasterWriter(
                targets[raster_fmt], out_shape, out_dtype,
                ["labels"] if labels_out else model.class_names, kind=output,
                colours=[[255, 255, 255]] if labels_out else model.colours, tile=tiff_tile,
                compression=compression, name=img.name, display_max=k if labels_out else None,
                **output_pixel_size(img, work)))
        reader = StripReader(work, tile, device, worker_count())
        stack.callback(reader.close)  # runs before the writer's exit: no reader outlives an error
        engine = None
        if backend == "auto" and len(boxes) >= 8:  # too few tiles to repay comparing the backends
            from pixlab.inference.backends import get_backend as pick
            sample = _sample_tiles(reader, boxes, tile, stats)
            engine = pick(model, "auto", sample) if sample is not None else None
        if engine is None:
            engine = get_backend(model, "eager" if backend == "auto" else backend)
        consume = _Outputs(writer, counter, preview, labels_out)
        found = None
        net_threads = None
        if traced:
            from pixlab.inference.outputs import ObjectOutputs
            found = stack.enter_context(ObjectOutputs.for_prediction(targets, model, img, work, ds, object_opts))
            consume.extra.append(lambda rows: found.add_rows(rows, labels_out))
        if boxes:
            with BackgroundSink(consume) as sink:
                net_threads = run_tiles(reader, boxes, (height, width), tile, bs, stats, engine.logits, blender,
                                        sink.put, progress=bar.update)
        else:  # nothing but background
            for rows in blender.finish(height):
                consume(rows)
        reader.close()

        object_counts = found.finish() if found is not None else None
        table = None
        if counter is not None:
            table = measurements_table(counter.counts, model.class_names, img.name, img.pixel_size, ds,
                                       objects=object_counts)
            write_measurements(targets["csv"], table)
        preview_ds = None
        if preview is not None:
            preview_ds = preview.factor * ds
            if "geojson" in targets and not traced:
                write_geojson(targets["geojson"], preview.labels, model.class_names, model.colours,
                              downsample=preview_ds)
            if "png" in targets:
                _write_overlay_for(targets["png"], work, preview, model.colours, overlay_max_side)
    return {
        "input": img.path or img.name,
        "outputs": {fmt: os.fspath(p) for fmt, p in targets.items()},
        "shape": out_shape,
        "backend": engine.name,
        "net_threads": net_threads,  # CPU threads the network ran with (measured choice; None on a GPU)
        "tiles": len(grid),
        "tiles_skipped": len(grid) - len(boxes),
        "seconds": time.perf_counter() - t_start,
        "measurements": table,
        "objects": None if object_counts is None else {model.class_names[c - 1]: n for c, n in object_counts.items()},
        "preview_downsample": preview_ds,
    }


def _write_overlay_for(path, work, preview, colours, max_side):
    """Overlay PNG from the preview label map and the image read at the same (or coarser) scale."""
    from pixlab.inference.outputs import write_overlay

    labels = preview.labels
    step = 1
    while max(-(-labels.shape[0] // step), -(-labels.shape[1] // step)) > max_side:
        step *= 2
    labels = labels[::step, ::step]
    factor = preview.factor * step
    # Image.downsampled uses a pyramid level when one matches, else a lazy block mean that dask
    # computes chunk by chunk: the full-resolution image is never held in memory.
    small = work.downsampled(factor) if factor > 1 else work
    write_overlay(path, small.read(), labels, colours)
