"""Per-class measurements of a prediction: pixel counts, areas and (with objects) counts and densities.

Counted band by band while an image is predicted (:class:`LabelCounter`), so nothing here grows with
the image size; :func:`measurements_table` turns the counts into the table written as CSV.
"""

from __future__ import annotations

import os

import numpy as np

from pixlab._atomic import atomic_write

__all__ = ["LabelCounter", "measurements_table", "write_measurements"]


class LabelCounter:
    """Pixels per class, counted band by band from probabilities (argmax) or label maps."""

    def __init__(self, n_classes: int):
        self.counts = np.zeros(n_classes + 1, dtype=np.int64)

    def add(self, labels: np.ndarray) -> None:
        """Count a (h, w) label band with values 1..K."""
        self.counts += np.bincount(labels.ravel(), minlength=self.counts.size)[: self.counts.size]


def measurements_table(counts, class_names, image_name, pixel_size=None, downsample=1.0):
    """Area per class of one image as a pandas DataFrame.

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

    Returns
    -------
    pandas.DataFrame
        Columns ``image, class, class_id, pixels, area_px, area_um2, fraction``; ``area_px`` is in
        full-resolution pixels, ``area_um2`` is NaN when the image has no pixel size.

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
    return pd.DataFrame({
        "image": image_name,
        "class": list(class_names),
        "class_id": np.arange(1, len(class_names) + 1),
        "pixels": counts,
        "area_px": area_px,
        "area_um2": um2,
        "fraction": counts / total,
    })


def write_measurements(path, table) -> str:
    """Write a measurements DataFrame as CSV, atomically; returns the path."""
    with atomic_write(path, "w") as f:
        table.to_csv(f, index=False)
    return os.fspath(path)
