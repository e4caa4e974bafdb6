"""Vector outputs of a prediction: QuPath GeoJSON.

- :func:`write_geojson` vectorises a (small) label map into one feature per class (a MultiPolygon
  of all its regions), the ``objects="none"`` output of :func:`pixlab.predict_file`.
- :class:`ObjectsGeoJSON` streams one feature per connected object (traced by
  :class:`pixlab.inference.objects.ObjectTracer`) with its measurements, as QuPath detections or
  annotations.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid

from pixlab._atomic import atomic_write

__all__ = ["write_geojson", "ObjectsGeoJSON"]


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


class ObjectsGeoJSON:
    """A GeoJSON FeatureCollection written object by object, atomically (a context manager).

    Each object is a ``Feature`` the way QuPath (0.4+) writes and reads them
    (``qupath.lib.io.PathObjectTypeAdapters``): a UUID ``id``, the geometry in full-resolution
    pixels, and ``properties`` with ``objectType`` ("detection" or "annotation"),
    ``classification`` ``{"name", "color": [r, g, b]}`` and ``measurements`` as a name -> number
    map (NaN values, e.g. µm without a pixel size, are left out: JSON has no NaN).

    Parameters
    ----------
    path : str or PathLike
    class_names : list of str
    colours : list of [r, g, b]
    object_type : {"detection", "annotation"}
    """

    def __init__(self, path, class_names, colours, object_type="detection"):
        from pixlab.inference.objects import OBJECT_TYPES

        if object_type not in OBJECT_TYPES:
            raise ValueError(f"object type must be one of {list(OBJECT_TYPES)}, got {object_type!r}")
        self.path = path
        self.object_type = object_type
        self._classes = [json.dumps({"name": n, "color": [int(v) for v in c]}) for n, c in zip(class_names, colours)]
        self._stack = contextlib.ExitStack()
        self._file = None
        self._first = True
        self.n = 0

    def __enter__(self):
        self._file = self._stack.enter_context(atomic_write(self.path, "w"))
        self._file.write('{"type": "FeatureCollection", "features": [\n')
        return self

    def add(self, batch) -> None:
        """Write a batch of objects (dicts from :class:`ObjectTracer`'s ``on_objects``)."""
        import shapely

        if not batch:
            return
        geometries = shapely.to_geojson([o["geometry"] for o in batch])
        parts = []
        for obj, geometry in zip(batch, geometries):
            measurements = {k: v for k, v in obj["measurements"].items() if not math.isnan(v)}
            parts.append('{"type": "Feature", "id": "%s", "geometry": %s, "properties": {"objectType": "%s", '
                         '"classification": %s, "measurements": %s}}'
                         % (uuid.uuid4(), geometry, self.object_type, self._classes[obj["class_id"] - 1],
                            json.dumps(measurements)))
        self._file.write(("" if self._first else ",\n") + ",\n".join(parts))
        self._first = False
        self.n += len(batch)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self._file.write("\n]}\n")
        return self._stack.__exit__(exc_type, exc, tb)
