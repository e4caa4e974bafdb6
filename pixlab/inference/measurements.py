"""Measurements of a prediction: per class (areas, object counts and densities) and per object.

Counted band by band while an image is predicted (:class:`LabelCounter`), so nothing here grows with
the image size; :func:`measurements_table` turns the counts into the table written as CSV.
:class:`ObjectsCSV` streams the per-object table (one row per object traced by
:class:`pixlab.inference.objects.ObjectTracer`) as objects are finished.
"""

from __future__ import annotations

import contextlib
import csv
import os

import numpy as np

from pixlab._atomic import atomic_write

__all__ = ["LabelCounter", "ObjectsCSV", "measurements_table", "write_measurements"]


class LabelCounter:
    """Pixels per class, counted band by band from probabilities (argmax) or label maps."""

    def __init__(self, n_classes: int):
        self.counts = np.zeros(n_classes + 1, dtype=np.int64)

    def add(self, labels: np.ndarray) -> None:
        """Count a (h, w) label band with values 1..K."""
        self.counts += np.bincount(labels.ravel(), minlength=self.counts.size)[: self.counts.size]


def measurements_table(counts, class_names, image_name, pixel_size=None, downsample=1.0, objects=None):
    """Area (and object count) per class of one image as a pandas DataFrame.

    Parameters
    ----------
    counts : sequence of int
        Pixels per class at the prediction's resolution (index 0 unused, or length K).
    class_names : list of str
    image_name : str
    pixel_size : (float, float), optional
        µm per full-resolution pixel (y, x) of the input image.
    downsample : float
        Full-resolution pixels per prediction pixel, per axis (the model's training downsample).
    objects : dict, optional
        ``{class_id: number of objects}`` for the classes traced into objects; adds the columns
        ``objects``, ``objects_per_mm2`` and ``objects_per_mpx`` (per mm² / per million
        full-resolution pixels of the predicted area, all classes together), NaN for classes not
        traced and ``objects_per_mm2`` NaN without a pixel size.

    Returns
    -------
    pandas.DataFrame
        Columns ``image, class, class_id, pixels, area_px, area_um2, fraction`` (and the object
        columns); ``area_px`` is in full-resolution pixels, ``area_um2`` is NaN when the image has
        no pixel size.

    Examples
    --------
    >>> measurements_table([0, 30, 10], ["bg", "cells"], "a", (0.5, 0.5))[["class", "area_um2"]].values.tolist()
    [['bg', 7.5], ['cells', 2.5]]
    """
    import pandas as pd

    counts = np.asarray(counts, dtype=np.int64)
    if counts.size == len(class_names) + 1:
        counts = counts[1:]
    total = max(int(counts.sum()), 1)
    area_px = counts * float(downsample) ** 2
    um2 = area_px * pixel_size[0] * pixel_size[1] if pixel_size is not None else np.full(counts.size, np.nan)
    table = pd.DataFrame({
        "image": image_name,
        "class": list(class_names),
        "class_id": np.arange(1, len(class_names) + 1),
        "pixels": counts,
        "area_px": area_px,
        "area_um2": um2,
        "fraction": counts / total,
    })
    if objects is not None:
        n = np.array([objects.get(k, np.nan) for k in table["class_id"]], np.float64)
        total_px = max(float(area_px.sum()), 1.0)
        table["objects"] = pd.array([None if np.isnan(v) else int(v) for v in n], dtype="Int64")
        table["objects_per_mm2"] = n / (total_px * pixel_size[0] * pixel_size[1] / 1e6) if pixel_size is not None else np.nan
        table["objects_per_mpx"] = n / (total_px / 1e6)
    return table


def write_measurements(path, table) -> str:
    """Write a measurements DataFrame as CSV, atomically; returns the path."""
    with atomic_write(path, "w") as f:
        table.to_csv(f, index=False)
    return os.fspath(path)


class ObjectsCSV:
    """The objects table (:func:`pixlab.inference.objects.object_columns`) written row by row, atomically.

    A context manager; :meth:`add` takes the batches of :class:`ObjectTracer`'s ``on_objects``.
    The first column is the image name, so the tables of several images can be concatenated.
    """

    def __init__(self, path, image_name, channel_names=()):
        from pixlab.inference.objects import object_columns

        self.path, self.image_name = path, image_name
        self.columns = ["image"] + object_columns(channel_names)
        self._stack = contextlib.ExitStack()
        self._writer = None
        self.n = 0

    def __enter__(self):
        f = self._stack.enter_context(atomic_write(self.path, "w"))
        self._writer = csv.writer(f, lineterminator="\n")
        self._writer.writerow(self.columns)
        return self

    def add(self, batch) -> None:
        keys = self.columns[4:]
        for obj in batch:
            m = obj["measurements"]
            self._writer.writerow([self.image_name, obj["object_id"], obj["class"], obj["class_id"]]
                                  + ["" if v != v else v for v in (m[k] for k in keys)])  # NaN: empty cell
        self.n += len(batch)

    def __exit__(self, exc_type, exc, tb):
        return self._stack.__exit__(exc_type, exc, tb)
