"""Label images: checks, statistics, annotation advice, files and QuPath GeoJSON (the public names).

Conventions shared by all of pixlab: a label image is a 2-D ``(Y, X)`` integer array where ``0`` means
"not labelled" and ``k = 1..N`` means class ``class_names[k - 1]``. Label images are ``uint8`` when
there are at most 255 classes and ``uint16`` otherwise.

GeoJSON follows the layout QuPath (0.4, 0.5) reads and writes: a ``FeatureCollection`` whose features
carry ``properties = {"objectType": "annotation", "classification": {"name": ..., "color": [r, g, b]}}``
and whose coordinates are full-resolution pixel coordinates (x to the right, y down, the pixel
``(row, col)`` covering the square ``[col, col + 1) x [row, row + 1)``).

Each concern is its own module, re-exported here so ``from pixlab.labels.masks import save_labels``
keeps working: :mod:`~pixlab.labels.colours`, :mod:`~pixlab.labels.validate`,
:mod:`~pixlab.labels.stats`, :mod:`~pixlab.labels.files`, :mod:`~pixlab.labels.geojson`.
"""

from pixlab.labels.colours import DEFAULT_COLOURS, _colours_for, default_colours, parse_colour  # noqa: F401
from pixlab.labels.files import load_labels, save_labels
from pixlab.labels.geojson import geojson_to_labels, labels_to_geojson
from pixlab.labels.stats import annotation_warnings, label_stats, min_strokes_per_class
from pixlab.labels.validate import _as_integer_labels, _check_class_names, _label_dtype, validate_labels  # noqa: F401

__all__ = [
    "DEFAULT_COLOURS",
    "default_colours",
    "parse_colour",
    "validate_labels",
    "label_stats",
    "min_strokes_per_class",
    "annotation_warnings",
    "save_labels",
    "load_labels",
    "labels_to_geojson",
    "geojson_to_labels",
]
