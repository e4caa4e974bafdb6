"""Writers for whole-image predictions: the output formats and the small outputs users ask for.

The streamed rasters (pyramidal OME-TIFF / OME-Zarr, :class:`RasterWriter`) live in
:mod:`pixlab.inference.rasters` and are re-exported here.

- :class:`PreviewLabels` gives a label map small enough to draw the overlay PNG. The measurements
  table is :mod:`pixlab.inference.measurements`, GeoJSON :mod:`pixlab.inference.vectors` (both
  re-exported here); :class:`ObjectOutputs` ties the object tracer
  (:mod:`pixlab.inference.objects`) to the objects GeoJSON and CSV.

Every file goes through :mod:`pixlab._atomic`: a failure (disk full included) leaves no file under
the final name and no temporary file behind.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from pixlab._atomic import atomic_path
# Measurements and GeoJSON live in their own modules; re-exported here for existing imports.
from pixlab.labels.classids import argmax_labels, label_dtype
from pixlab.inference.measurements import LabelCounter, ObjectsCSV, measurements_table, write_measurements
from pixlab.inference.vectors import ObjectsGeoJSON, write_geojson
# The raster writers have their own module; re-exported here for existing imports.
from pixlab.inference.rasters import (_COMPRESSIONS, _TIFF_SUFFIXES, _ZARR_SUFFIXES, OUTPUT_KINDS,  # noqa: F401
                                      RasterWriter, _reduce_mean, _reduce_nearest, _TiffSpool, _TileRows,
                                      _ZarrLevels, pyramid_shapes, raster_format)

__all__ = [
    "FORMATS",
    "OUTPUT_KINDS",
    "DTYPES",
    "raster_format",
    "derived_path",
    "pyramid_shapes",
    "to_output",
    "RasterWriter",
    "LabelCounter",
    "ObjectOutputs",
    "PreviewLabels",
    "measurements_table",
    "write_measurements",
    "write_geojson",
    "write_overlay",
]

#: Output formats and the file suffix each one gets beside (or inside) the output folder.
FORMATS = {
    "ome-tiff": ".ome.tif",
    "ome-zarr": ".ome.zarr",
    "csv": ".measurements.csv",
    "objects": ".objects.csv",
    "geojson": ".geojson",
    "png": ".overlay.png",
}

#: Pixel types for probabilities: uint8 = round(255 p), or the probability itself.
DTYPES = ("uint8", "float16", "float32")

_ALL_SUFFIXES = _TIFF_SUFFIXES + _ZARR_SUFFIXES + tuple(
    s for s in FORMATS.values() if s not in _TIFF_SUFFIXES + _ZARR_SUFFIXES) + (".csv", ".png", ".json")


def derived_path(path, fmt: str) -> Path:
    """The file of format ``fmt`` that goes beside output ``path`` (same name, that format's suffix).

    Examples
    --------
    >>> str(derived_path("out/slide.ome.tif", "geojson"))
    'out/slide.geojson'
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; choose from {list(FORMATS)}")
    path = Path(path)
    name = path.name
    for suffix in sorted(_ALL_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return path.with_name(name + FORMATS[fmt])


def to_output(probs: np.ndarray, output: str, dtype: str) -> np.ndarray:
    """Convert float32 probabilities ``(K, h, w)`` to what is stored.

    Parameters
    ----------
    probs : ndarray (K, h, w) float32
    output : {"probabilities", "labels"}
        ``"labels"``: ``(1, h, w)`` argmax, values 1..K (uint8; uint16 beyond 255 classes).
    dtype : {"uint8", "float16", "float32"}
        For probabilities: uint8 stores ``round(255 p)``.

    Examples
    --------
    >>> p = np.array([[[0.2, 1.0]], [[0.8, 0.0]]], np.float32)
    >>> to_output(p, "probabilities", "uint8").tolist(), to_output(p, "labels", "uint8").tolist()
    ([[[51, 255]], [[204, 0]]], [[[2, 1]]])
    """
    if output == "labels":
        return argmax_labels(probs)[None]
    if dtype == "uint8":
        out = probs * np.float32(255)
        np.clip(out, 0, 255, out=out)
        return np.rint(out, out=out).astype(np.uint8)
    return probs.astype(dtype)


# --------------------------------------------------------------------------------------------------
# Preview labels, overlay
# --------------------------------------------------------------------------------------------------


class PreviewLabels:
    """A label map ``factor`` times smaller than the prediction, built band by band.

    Each preview pixel is the class with the highest probability summed over its ``factor x factor``
    block (not a sampled pixel, so thin structures are not lost at random). Used to vectorise
    images too large to hold a full-resolution label map, and for the overlay PNG.

    Parameters
    ----------
    n_classes : int
    shape_yx : (int, int)
        Size of the prediction.
    factor : int
        Reduction, >= 1; the preview has ``ceil(Y / factor) x ceil(X / factor)`` pixels.
    """

    def __init__(self, n_classes, shape_yx, factor=1):
        self.factor = int(factor)
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor!r}")
        self.height, width = (int(v) for v in shape_yx)
        self.shape = (math.ceil(self.height / self.factor), math.ceil(width / self.factor))
        self.labels = np.zeros(self.shape, label_dtype(n_classes))
        self._acc = np.zeros((n_classes, self.shape[1]), np.float32)
        self._row = 0  # next prediction row

    @staticmethod
    def for_max_pixels(n_classes, shape_yx, max_pixels):
        """A preview whose factor is the smallest power of two that keeps it under ``max_pixels``."""
        f = 1
        while math.ceil(shape_yx[0] / f) * math.ceil(shape_yx[1] / f) > max_pixels:
            f *= 2
        return PreviewLabels(n_classes, shape_yx, f)

    def add(self, probs: np.ndarray) -> None:
        """Add the next rows of probabilities ``(K, h, X)``."""
        if self.factor == 1:
            self.add_labels(np.argmax(probs, axis=0) + 1)
            return
        k, h, w = probs.shape
        pad = self.shape[1] * self.factor - w
        cols = np.pad(probs, ((0, 0), (0, 0), (0, pad))) if pad else probs
        self.add_columns(cols.reshape(k, h, self.shape[1], self.factor).sum(axis=3))

    def add_labels(self, labels: np.ndarray) -> None:
        """Add the next rows as a label map ``(h, X)`` (factor 1 only)."""
        if self.factor != 1:
            raise ValueError(f"add_labels needs factor 1, this preview reduces by {self.factor}; use add")
        h = labels.shape[0]
        self.labels[self._row: self._row + h] = labels
        self._row += h

    def add_columns(self, cols: np.ndarray) -> None:
        """Add the next rows as sums of probabilities over blocks of ``factor`` columns,
        ``(K, h, ceil(X / factor))`` (what the device pipeline hands back instead of full rows)."""
        f = self.factor
        h = cols.shape[1]
        i = 0
        while i < h:
            y = self._row + i
            n = min(f - y % f, h - i)  # rows left in this block of f rows, within this band
            self._acc += cols[:, i: i + n].sum(axis=1)
            i += n
            if (y + n) % f == 0 or y + n == self.height:
                self.labels[y // f] = np.argmax(self._acc, axis=0) + 1
                self._acc[:] = 0
        self._row += h


def _composite(img) -> np.ndarray:
    """RGB (h, w, 3) uint8 picture of a small in-memory Image."""
    try:
        from pixlab.image.display import composite
    except ImportError:  # pixlab.image.display is optional here; grey levels of the first channel then
        a = img.data[0].astype(np.float32)
        lo, hi = np.percentile(a, (1, 99.8))
        g = np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)
        return np.repeat(np.rint(g * 255).astype(np.uint8)[..., None], 3, axis=2)
    return composite(img)


def write_overlay(path, image, labels, colours, opacity=0.4) -> str:
    """Write an RGB PNG: the image with the label map drawn over it in class colours, atomically.

    Parameters
    ----------
    path : str or PathLike
    image : Image or array
        The image at the label map's resolution (or slightly larger; it is cropped).
    labels : ndarray (h, w)
        Class ids 1..K (0 = transparent).
    colours : list of [r, g, b]
    opacity : float
        Opacity of the class colours, 0-1.
    """
    from PIL import Image as PILImage

    from pixlab.image.io import open_image

    img = open_image(image)
    rgb = _composite(img)
    h, w = min(rgb.shape[0], labels.shape[0]), min(rgb.shape[1], labels.shape[1])
    rgb, labels = rgb[:h, :w].astype(np.float32), np.asarray(labels)[:h, :w]
    lut = np.zeros((len(colours) + 1, 3), np.float32)
    lut[1:] = np.asarray(colours, np.float32)
    alpha = np.where(labels > 0, np.float32(opacity), np.float32(0))[..., None]
    out = np.rint(rgb * (1 - alpha) + lut[labels] * alpha).astype(np.uint8)
    with atomic_path(path) as tmp:
        PILImage.fromarray(out).save(tmp, format="PNG")
    return os.fspath(path)


class ObjectOutputs:
    """Objects of a streamed prediction: the tracer and the files it feeds (a context manager).

    :meth:`add` takes each band of finished rows (label map, probability of the predicted class,
    the image band for intensities); :meth:`finish` completes the objects still open at the bottom.
    The GeoJSON and CSV are written as objects complete, atomically: an error leaves neither.

    Parameters
    ----------
    geojson, csv : path or None
        Objects GeoJSON (:class:`pixlab.inference.vectors.ObjectsGeoJSON`) and objects table
        (:class:`pixlab.inference.measurements.ObjectsCSV`).
    class_names, colours : list
    object_type : {"detection", "annotation"}
    image_name : str
    width : int
        Width of the prediction.
    channel_names : list of str
        Channels of the image bands given to :meth:`add`.
    **options
        :class:`pixlab.inference.objects.ObjectTracer` options.
    """

    def __init__(self, geojson, csv, class_names, colours, object_type, image_name, width, channel_names=(),
                 **options):
        from contextlib import ExitStack

        from pixlab.inference.objects import ObjectTracer

        self._files = [f for f in (ObjectsGeoJSON(geojson, class_names, colours, object_type) if geojson else None,
                                   ObjectsCSV(csv, image_name, channel_names) if csv else None) if f is not None]
        self.tracer = ObjectTracer(class_names, width, channel_names=channel_names, on_objects=self._write,
                                   **options)
        self._stack = ExitStack()

    @classmethod
    def for_prediction(cls, targets, model, img, work, downsample, options) -> "ObjectOutputs":
        """The objects of ``predict_file``: ``targets`` by format, ``work`` the image at the model's resolution."""
        self = cls(targets.get("geojson"), targets.get("objects"), model.class_names, model.colours,
                   options["object_type"], img.name, work.shape[2], work.channel_names, downsample=downsample,
                   pixel_size=img.pixel_size, **options["tracer"])
        self._work = work
        return self

    def add_rows(self, rows, labels_out: bool) -> None:
        """A :class:`pixlab.inference.blend.FinishedRows` band; the image band is read for intensities."""
        labels = rows.out[0] if labels_out else rows.labels
        self.add(labels, rows.confidence, self._work.read((rows.y0, rows.y1, 0, self._work.shape[2])))

    def _write(self, batch):
        for f in self._files:
            f.add(batch)

    def __enter__(self):
        for f in self._files:
            self._stack.enter_context(f)
        return self

    def add(self, labels, confidence=None, image=None) -> None:
        """The next band: labels ``(h, X)``, probability of the predicted class ``(h, X)``, image ``(C, h, X)``."""
        self.tracer.add(labels, image=image, confidence=confidence)

    def finish(self) -> dict:
        """Complete the open objects; returns ``{class_id: objects}`` for the traced classes."""
        self.tracer.finish()
        return {c: int(self.tracer.counts[c]) for c in self.tracer.classes}

    def __exit__(self, exc_type, exc, tb):
        return self._stack.__exit__(exc_type, exc, tb)
