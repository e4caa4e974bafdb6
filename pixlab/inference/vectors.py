"""Vector outputs of a prediction: QuPath GeoJSON.

:func:`write_geojson` vectorises a (small) label map into one feature per class; per-object GeoJSON
(one feature per connected object, with measurements) is written by :mod:`pixlab.inference.objects`.
"""

from __future__ import annotations

import json
import os

from pixlab._atomic import atomic_write

__all__ = ["write_geojson"]


def write_geojson(path, labels, class_names, colours, downsample=1.0, min_area=0) -> str:
    """Vectorise a label map into a QuPath GeoJSON FeatureCollection, atomically.

    Uses :func:`pixlab.labels.masks.labels_to_geojson` (rasterio + shapely); ``downsample`` scales the
    coordinates to full-resolution pixels of the input image.
    """
    from pixlab.labels.masks import labels_to_geojson

    gj = labels_to_geojson(labels, class_names, colours, downsample=float(downsample), min_area=min_area)
    with atomic_write(path, "w") as f:
        json.dump(gj, f)
    return os.fspath(path)
