"""QuPath GeoJSON <-> label images.

GeoJSON follows the layout QuPath (0.4, 0.5) reads and writes: a ``FeatureCollection`` whose features
carry ``properties = {"objectType": "annotation", "classification": {"name": ..., "color": [r, g, b]}}``
and whose coordinates are full-resolution pixel coordinates (x to the right, y down, the pixel
``(row, col)`` covering the square ``[col, col + 1) x [row, row + 1)``).
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pixlab.labels.colours import _colours_for
from pixlab.labels.validate import _check_class_names, _label_dtype, validate_labels

__all__ = ["labels_to_geojson", "geojson_to_labels"]


_OBJECT_TYPES = ("annotation", "detection")


def _check_downsample(downsample) -> float:
    try:
        value = float(downsample)
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(
            f"downsample must be a positive number, got {downsample!r}; use 1.0 when the labels "
            "are at full resolution"
        )
    return value


def labels_to_geojson(
    labels,
    class_names: Sequence[str],
    colours=None,
    downsample: float = 1.0,
    object_type: str = "annotation",
    min_area: float = 0,
) -> dict:
    """Vectorise a label image into a QuPath GeoJSON ``FeatureCollection``.

    Parameters
    ----------
    labels : array_like, shape (Y, X)
        Class ids (0 = unlabelled).
    class_names : sequence of str
        Names of classes ``1..N``; they become QuPath classifications.
    colours : sequence, optional
        One colour per class (anything :func:`parse_colour` accepts); default
        :func:`default_colours`.
    downsample : float, default 1.0
        How many full-resolution pixels one label pixel spans. Coordinates are multiplied by it,
        because QuPath expects full-resolution pixel coordinates.
    object_type : {"annotation", "detection"}
        QuPath object type of the features.
    min_area : float, default 0
        Connected pieces smaller than this many label pixels (4-connected) are dropped, to keep
        specks out of the QuPath project.

    Returns
    -------
    dict
        ``{"type": "FeatureCollection", "features": [...]}`` with one feature per class that has
        labelled pixels: a ``Polygon`` or ``MultiPolygon`` (holes preserved, geometry valid),
        ``"id"`` a random UUID and ``"properties"`` ``{"objectType": ..., "classification":
        {"name": ..., "color": [r, g, b]}}``. Save it with ``json.dump``; QuPath imports it by
        drag and drop or *File > Import objects from file*.

    Examples
    --------
    >>> gj = labels_to_geojson(np.array([[0, 1], [1, 1]]), ["cells"])
    >>> gj["features"][0]["properties"]["classification"]["name"]
    'cells'
    """
    import rasterio.features
    import shapely
    from shapely.affinity import scale
    from shapely.geometry import mapping, shape

    names = _check_class_names(class_names)
    array = validate_labels(labels, np.shape(labels), names)
    colours = _colours_for(names, colours)
    downsample = _check_downsample(downsample)
    if object_type not in _OBJECT_TYPES:
        raise ValueError(
            f"object_type must be one of {_OBJECT_TYPES}, got {object_type!r}; "
            "use 'annotation' for regions to edit or train on"
        )

    # Pixel edges traced with 4-connectivity always give valid rings; 8-connected diagonal
    # neighbours become separate pieces touching at a corner, which a MultiPolygon allows.
    pieces: dict[int, list] = {}
    for geometry, value in rasterio.features.shapes(array, mask=array > 0, connectivity=4):
        polygon = shape(geometry)
        if polygon.area >= min_area:
            pieces.setdefault(int(value), []).append(polygon)

    features = []
    for class_id in sorted(pieces):
        merged = shapely.make_valid(shapely.union_all(pieces[class_id]))
        merged = _polygonal_part(merged)
        if merged.is_empty:
            continue
        if downsample != 1.0:
            merged = scale(merged, xfact=downsample, yfact=downsample, origin=(0, 0))
        features.append(
            {
                "type": "Feature",
                "id": str(uuid.uuid4()),
                "geometry": _json_ready(mapping(merged)),
                "properties": {
                    "objectType": object_type,
                    "classification": {
                        "name": names[class_id - 1],
                        "color": list(colours[class_id - 1]),
                    },
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def _json_ready(obj):
    """Turn shapely's nested tuples into lists and whole floats into ints (smaller, exact JSON)."""
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)
    return obj


def _polygonal_part(geometry):
    """Keep only the area-bearing part of a geometry (make_valid may add stray lines or points)."""
    import shapely
    from shapely.geometry import MultiPolygon, Polygon

    if isinstance(geometry, (Polygon, MultiPolygon)):
        return geometry
    parts = [g for g in shapely.get_parts(geometry) if isinstance(g, (Polygon, MultiPolygon))]
    if not parts:
        return Polygon()
    return shapely.union_all(parts)


def _read_features(geojson_or_path) -> list:
    """Return the list of Feature dicts from a path, FeatureCollection, feature list or Feature."""
    source = geojson_or_path
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"GeoJSON file '{path}' does not exist; export it from QuPath with "
                "File > Export objects as GeoJSON"
            )
        with open(path, encoding="utf-8") as f:
            try:
                source = json.load(f)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"'{path.name}' is not valid JSON ({error}); export it again from QuPath"
                ) from None
    if isinstance(source, dict) and source.get("type") == "FeatureCollection":
        features = source.get("features", [])
    elif isinstance(source, dict) and source.get("type") == "Feature":
        features = [source]
    elif isinstance(source, (list, tuple)):
        features = list(source)
    else:
        kind = source.get("type") if isinstance(source, dict) else type(source).__name__
        raise ValueError(
            f"expected a GeoJSON FeatureCollection, a list of Features or one Feature, got {kind!r}; "
            "export objects from QuPath as GeoJSON"
        )
    for i, feature in enumerate(features):
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            kind = feature.get("type") if isinstance(feature, dict) else type(feature).__name__
            raise ValueError(
                f"feature {i} is a {kind!r}, not a GeoJSON Feature; wrap geometries in Features "
                "with a 'classification' property"
            )
    return features


def _class_name_of(feature: dict):
    properties = feature.get("properties") or {}
    classification = properties.get("classification")
    if isinstance(classification, str):  # some tools write the name directly
        return classification
    if not isinstance(classification, dict):
        return None
    name = classification.get("name")
    if name is None and classification.get("names"):
        # QuPath derived classes ("Tumor: Positive") may be given as a list of parts.
        name = ": ".join(classification["names"])
    return name


def geojson_to_labels(
    geojson_or_path,
    shape_yx,
    class_names: Sequence[str],
    downsample: float = 1.0,
    on_unknown: str = "error",
) -> np.ndarray:
    """Rasterise QuPath GeoJSON annotations into a label image.

    Parameters
    ----------
    geojson_or_path : dict, list or path
        A GeoJSON ``FeatureCollection`` (as dict or ``.geojson``/``.json`` file), a list of
        Features (QuPath's export without "FeatureCollection"), or a single Feature.
    shape_yx : tuple of int
        ``(Y, X)`` of the label image to produce (an image shape ``(C, Y, X)`` also works).
    class_names : sequence of str
        Names of classes ``1..N``; a feature classified ``class_names[k - 1]`` is burnt as ``k``.
    downsample : float, default 1.0
        How many full-resolution pixels one label pixel spans; coordinates are divided by it.
    on_unknown : {"error", "skip"}
        What to do with a feature whose class is not in ``class_names``.

    Returns
    -------
    numpy.ndarray, shape (Y, X)
        ``uint8`` (or ``uint16`` beyond 255 classes) class ids; 0 where nothing was drawn. A pixel
        belongs to a polygon when its centre is inside it. Later features overwrite earlier ones.

    Notes
    -----
    - Polygon and MultiPolygon geometries are filled, holes kept.
    - LineString / MultiLineString (QuPath polyline annotations) and Point / MultiPoint are buffered
      by 1 label pixel, so a polyline becomes a stroke about 2 pixels wide.
    - Features without a classification are skipped with a warning.
    - Invalid geometries (e.g. self-intersecting polygons) are repaired with ``shapely.make_valid``
      and a warning; a geometry that cannot be read or repaired raises ``ValueError`` naming the
      feature index.

    Examples
    --------
    >>> square = {"type": "Feature", "geometry": {"type": "Polygon",
    ...     "coordinates": [[[1, 1], [3, 1], [3, 3], [1, 3], [1, 1]]]},
    ...     "properties": {"classification": {"name": "cells"}}}
    >>> geojson_to_labels(square, (4, 4), ["background", "cells"])
    array([[0, 0, 0, 0],
           [0, 2, 2, 0],
           [0, 2, 2, 0],
           [0, 0, 0, 0]], dtype=uint8)
    """
    import rasterio.features
    import shapely
    from shapely.affinity import scale
    from shapely.geometry import mapping, shape

    names = _check_class_names(class_names)
    dtype = _label_dtype(len(names))
    downsample = _check_downsample(downsample)
    if on_unknown not in ("error", "skip"):
        raise ValueError(f"on_unknown must be 'error' or 'skip', got {on_unknown!r}; use one of them")
    shape_yx = tuple(int(s) for s in tuple(shape_yx)[-2:])
    if len(shape_yx) != 2 or min(shape_yx) < 1:
        raise ValueError(
            f"shape_yx must be (Y, X) with positive sizes, got {shape_yx}; pass image.shape[-2:]"
        )
    ids = {name: k for k, name in enumerate(names, start=1)}

    burns = []
    unclassified, unknown = [], []
    for i, feature in enumerate(_read_features(geojson_or_path)):
        name = _class_name_of(feature)
        if name is None:
            unclassified.append(i)
            continue
        if name not in ids:
            if on_unknown == "error":
                raise ValueError(
                    f"feature {i} has class {name!r} which is not one of the class names "
                    f"({', '.join(map(repr, names))}); add it to class_names or pass on_unknown='skip'"
                )
            unknown.append(name)
            continue
        if not feature.get("geometry"):
            unclassified.append(i)
            continue
        try:
            geometry = shape(feature["geometry"])
        except Exception as error:  # shapely/GEOS raise several types for malformed coordinates
            raise ValueError(
                f"feature {i} ({name!r}) has a geometry that cannot be read ({error}); fix or delete "
                "it in QuPath"
            ) from None
        if geometry.is_empty:
            continue
        if not geometry.is_valid:
            reason = shapely.is_valid_reason(geometry)
            repaired = shapely.make_valid(geometry)
            polygonal = geometry.geom_type in ("Polygon", "MultiPolygon")
            if repaired.is_empty or (polygonal and _polygonal_part(repaired).is_empty):
                raise ValueError(
                    f"feature {i} ({name!r}) has an invalid geometry ({reason}) that cannot be "
                    "repaired; fix or delete it in QuPath"
                )
            warnings.warn(
                f"feature {i} ({name!r}) had an invalid geometry ({reason}); it was repaired with "
                "shapely.make_valid, check it in QuPath",
                UserWarning,
                stacklevel=2,
            )
            # A repaired polygon may carry stray lines/points (collapsed parts); keep only its area.
            geometry = _polygonal_part(repaired) if polygonal else repaired
        if downsample != 1.0:
            geometry = scale(geometry, xfact=1 / downsample, yfact=1 / downsample, origin=(0, 0))
        geometry = _areal(geometry)
        if not geometry.is_empty:
            burns.append((mapping(geometry), ids[name]))

    if unclassified:
        shown = ", ".join(map(str, unclassified[:10])) + (", ..." if len(unclassified) > 10 else "")
        warnings.warn(
            f"{len(unclassified)} feature(s) without a classification or geometry were skipped "
            f"(index {shown}); set their class in QuPath to use them",
            UserWarning,
            stacklevel=2,
        )
    if unknown:
        warnings.warn(
            f"{len(unknown)} feature(s) with classes not in class_names were skipped "
            f"({', '.join(sorted(set(map(repr, unknown))))})",
            UserWarning,
            stacklevel=2,
        )
    if not burns:
        return np.zeros(shape_yx, dtype)
    # rasterio burns shapes in order with "replace", so later features overwrite earlier ones.
    return rasterio.features.rasterize(
        burns, out_shape=shape_yx, fill=0, dtype=dtype, all_touched=False
    )


def _areal(geometry):
    """Polygons as they are; lines and points buffered by one pixel; collections handled per part."""
    import shapely
    from shapely.geometry import Polygon

    parts = []
    for part in shapely.get_parts(geometry):
        if part.geom_type in ("Polygon", "MultiPolygon"):
            parts.append(part)
        elif part.geom_type in ("LineString", "LinearRing", "MultiLineString", "Point", "MultiPoint"):
            parts.append(part.buffer(1.0))
        elif part.geom_type == "GeometryCollection":
            parts.append(_areal(part))
    parts = [p for p in parts if not p.is_empty]
    if not parts:
        return Polygon()
    return parts[0] if len(parts) == 1 else shapely.union_all(parts)
