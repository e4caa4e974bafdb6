"""Label images: checks, statistics, annotation advice, files and QuPath GeoJSON.

Conventions shared by all of pixlab: a label image is a 2-D ``(Y, X)`` integer array where ``0`` means
"not labelled" and ``k = 1..N`` means class ``class_names[k - 1]``. Label images are ``uint8`` when
there are at most 255 classes and ``uint16`` otherwise.

GeoJSON follows the layout QuPath (0.4, 0.5) reads and writes: a ``FeatureCollection`` whose features
carry ``properties = {"objectType": "annotation", "classification": {"name": ..., "color": [r, g, b]}}``
and whose coordinates are full-resolution pixel coordinates (x to the right, y down, the pixel
``(row, col)`` covering the square ``[col, col + 1) x [row, row + 1)``).
"""

from __future__ import annotations

import colorsys
import json
import os
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pixlab._atomic import atomic_path

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

#: Default class colours (RGB, 0-255). Class 1 is usually background, so it gets a neutral grey; the
#: next seven are the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies),
#: then four colours from Paul Tol's palettes. :func:`default_colours` extends the list when needed.
DEFAULT_COLOURS: tuple[tuple[int, int, int], ...] = (
    (150, 150, 150),  # neutral grey (background)
    (230, 159, 0),  # orange
    (86, 180, 233),  # sky blue
    (0, 158, 115),  # bluish green
    (240, 228, 66),  # yellow
    (0, 114, 178),  # blue
    (213, 94, 0),  # vermillion
    (204, 121, 167),  # reddish purple
    (136, 34, 85),  # wine
    (68, 170, 153),  # teal
    (153, 153, 51),  # olive
    (221, 204, 119),  # sand
)

# The guide's annotation table: (minimum, recommended) strokes per class by task size.
_STROKE_GUIDE = {2: (10, 30), 4: (15, 40), None: (20, 50)}

# A class with more than this many times the labelled pixels of another is "imbalanced" (guide).
_IMBALANCE_RATIO = 10.0

_OBJECT_TYPES = ("annotation", "detection")

_PNG_SUFFIXES = (".png",)
_TIFF_SUFFIXES = (".tif", ".tiff")


# --------------------------------------------------------------------------------------------------
# Colours
# --------------------------------------------------------------------------------------------------


def default_colours(n: int) -> list[list[int]]:
    """Return ``n`` distinct RGB colours for classes ``1..n``.

    Parameters
    ----------
    n : int
        Number of classes (>= 0).

    Returns
    -------
    list of [r, g, b]
        The first colours of :data:`DEFAULT_COLOURS`; beyond those, hues spaced by the golden angle
        so that neighbouring class ids still get visibly different colours.

    Examples
    --------
    >>> default_colours(2)
    [[150, 150, 150], [230, 159, 0]]
    """
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}; pass the number of classes.")
    colours = [list(c) for c in DEFAULT_COLOURS[:n]]
    golden = 0.618033988749895
    for i in range(len(colours), int(n)):
        hue = (i * golden) % 1.0
        # Alternate lightness a little so consecutive colours also differ in brightness.
        value = 0.95 if i % 2 else 0.75
        r, g, b = colorsys.hsv_to_rgb(hue, 0.7, value)
        colours.append([round(r * 255), round(g * 255), round(b * 255)])
    return colours


def parse_colour(colour) -> list[int]:
    """Convert a colour given as hex string, RGB triple or QuPath packed integer to ``[r, g, b]``.

    Parameters
    ----------
    colour : str, sequence of 3 int, or int
        ``"#rrggbb"`` (or ``"#rgb"``), ``[r, g, b]`` with values 0-255, or a QuPath packed colour:
        a (possibly negative) 32-bit ARGB integer such as ``-65536`` for red, as in QuPath's older
        ``"colorRGB"`` field.

    Returns
    -------
    list of int
        ``[r, g, b]``, each 0-255.

    Examples
    --------
    >>> parse_colour("#ff8000")
    [255, 128, 0]
    >>> parse_colour(-65536)
    [255, 0, 0]
    >>> parse_colour((0, 114, 178))
    [0, 114, 178]
    """
    if isinstance(colour, str):
        text = colour.strip().lstrip("#")
        if len(text) == 3:
            text = "".join(ch * 2 for ch in text)
        try:
            if len(text) != 6:
                raise ValueError
            return [int(text[i : i + 2], 16) for i in (0, 2, 4)]
        except ValueError:
            raise ValueError(
                f"colour {colour!r} is not a hex colour; use the form '#rrggbb', e.g. '#e69f00'"
            ) from None
    if isinstance(colour, (int, np.integer)) and not isinstance(colour, bool):
        # QuPath packs colours as Java ints (ARGB, signed); the mask makes negative values unsigned.
        packed = int(colour) & 0xFFFFFFFF
        if int(colour) > 0xFFFFFFFF or int(colour) < -(2**31):
            raise ValueError(
                f"colour {colour!r} is outside the 32-bit range of a QuPath packed colour; "
                "pass '#rrggbb' or [r, g, b] instead"
            )
        return [(packed >> 16) & 255, (packed >> 8) & 255, packed & 255]
    try:
        values = list(colour)
    except TypeError:
        values = None
    if (
        values is None
        or len(values) != 3
        or any(isinstance(v, bool) or not float(v).is_integer() or not 0 <= v <= 255 for v in values)
    ):
        raise ValueError(
            f"colour {colour!r} is not understood; pass '#rrggbb', [r, g, b] with integers 0-255, "
            "or a QuPath packed integer"
        )
    return [int(v) for v in values]


def _colours_for(class_names: Sequence[str], colours) -> list[list[int]]:
    if colours is None:
        return default_colours(len(class_names))
    colours = [parse_colour(c) for c in colours]
    if len(colours) < len(class_names):
        raise ValueError(
            f"{len(colours)} colours were given for {len(class_names)} classes; "
            "give one colour per class or pass colours=None for the defaults"
        )
    return colours


# --------------------------------------------------------------------------------------------------
# Validation and statistics
# --------------------------------------------------------------------------------------------------


def _label_dtype(n_classes: int) -> type:
    from pixlab.labels.classids import label_dtype
    return label_dtype(n_classes).type


def _check_class_names(class_names) -> list[str]:
    if isinstance(class_names, str):
        raise ValueError(
            f"class_names must be a list of names, got the string {class_names!r}; "
            f"pass e.g. [{class_names!r}, ...]"
        )
    names = list(class_names)
    if not names:
        raise ValueError("class_names is empty; give at least one class name, e.g. ['background', 'cells']")
    return names


def _as_integer_labels(labels, what: str = "labels") -> np.ndarray:
    """Check a label array is 2-D, whole-numbered and non-negative; return it as int64."""
    array = np.asarray(labels)
    if array.ndim != 2:
        raise ValueError(
            f"{what} must be a 2-D (Y, X) array but have shape {array.shape}; "
            "pass one single-channel label image per image"
        )
    if array.dtype == bool:
        return array.astype(np.int64)
    if array.dtype.kind == "f":
        if np.isnan(array).any():
            raise ValueError(
                f"{what} contain NaN; use 0 for unlabelled pixels and 1..N for classes"
            )
        if not np.isfinite(array).all():
            raise ValueError(
                f"{what} contain infinite values; use 0 for unlabelled pixels and 1..N for classes"
            )
        fractional = array[array != np.round(array)]
        if fractional.size:
            raise ValueError(
                f"{what} contain the non-integer value {float(fractional.flat[0])}; "
                "labels are class ids, round them or build them as an integer array"
            )
    elif array.dtype.kind not in "iu":
        raise ValueError(
            f"{what} have dtype {array.dtype} but must hold integer class ids; "
            "convert them with labels.astype(np.uint8)"
        )
    if array.size and array.min() < 0:
        raise ValueError(
            f"{what} contain the negative value {array.min()}; "
            "use 0 for unlabelled pixels and 1..N for classes"
        )
    return array.astype(np.int64, copy=False)


def validate_labels(labels, image_shape_yx, class_names: Sequence[str]) -> np.ndarray:
    """Check a label image against its image and class list and return it as a compact array.

    Parameters
    ----------
    labels : array_like, shape (Y, X)
        Integer class ids (0 = unlabelled, ``k`` = ``class_names[k - 1]``). Floats are accepted when
        they are whole numbers; booleans are read as 0/1.
    image_shape_yx : tuple of int
        ``(Y, X)`` of the image the labels belong to. A longer shape such as ``Image.shape``
        ``(C, Y, X)`` is accepted: its last two entries are used.
    class_names : sequence of str
        Names of classes ``1..N``.

    Returns
    -------
    numpy.ndarray, shape (Y, X)
        ``uint8`` for up to 255 classes, ``uint16`` beyond.

    Raises
    ------
    ValueError
        If the labels are not 2-D, do not match the image shape, contain NaN, negative, fractional
        or too-large class ids.

    Examples
    --------
    >>> validate_labels([[0, 1], [2, 0]], (2, 2), ["background", "cells"]).dtype
    dtype('uint8')
    """
    names = _check_class_names(class_names)
    dtype = _label_dtype(len(names))
    array = _as_integer_labels(labels)
    shape_yx = tuple(int(s) for s in tuple(image_shape_yx)[-2:])
    if array.shape != shape_yx:
        raise ValueError(
            f"labels have shape {array.shape} but the image is {shape_yx} (Y, X); "
            "draw labels on the same image or resize them"
        )
    top = int(array.max()) if array.size else 0
    if top > len(names):
        raise ValueError(
            f"labels contain class id {top} but only {len(names)} class names were given "
            f"({', '.join(map(repr, names))}); add the class name or relabel"
        )
    return array.astype(dtype)


def label_stats(labels_list, class_names: Sequence[str]) -> list[dict]:
    """Count labelled pixels and strokes per class over one or more label images.

    Parameters
    ----------
    labels_list : array_like or list of array_like
        One label image ``(Y, X)`` or a list of them (``None`` entries, images without labels, are
        skipped).
    class_names : sequence of str
        Names of classes ``1..N``.

    Returns
    -------
    list of dict
        One dict per class, in class order: ``{"class": name, "id": k, "pixels": int,
        "strokes": int}``. A stroke is an 8-connected component of one class, so two strokes that
        touch count as one.

    Examples
    --------
    >>> labels = np.array([[1, 1, 0, 2], [0, 0, 0, 2], [1, 0, 0, 0]])
    >>> [(s["class"], s["pixels"], s["strokes"]) for s in label_stats(labels, ["bg", "fg"])]
    [('bg', 3, 2), ('fg', 2, 1)]
    """
    from skimage.measure import label as connected_components

    names = _check_class_names(class_names)
    if labels_list is None:
        labels_list = []
    elif isinstance(labels_list, np.ndarray) or (
        isinstance(labels_list, (list, tuple)) and labels_list and np.ndim(labels_list[0]) == 1
    ):
        labels_list = [labels_list]  # one image given directly
    pixels = np.zeros(len(names) + 1, np.int64)
    strokes = np.zeros(len(names) + 1, np.int64)
    for i, labels in enumerate(labels_list):
        if labels is None:
            continue
        array = _as_integer_labels(labels, what=f"labels[{i}]")
        top = int(array.max()) if array.size else 0
        if top > len(names):
            raise ValueError(
                f"labels[{i}] contain class id {top} but only {len(names)} class names were given "
                f"({', '.join(map(repr, names))}); add the class name or relabel"
            )
        pixels += np.bincount(array.ravel(), minlength=len(names) + 1)
        # skimage labels connected regions of *equal value*, so one pass finds the strokes of all
        # classes; each component's class is the value of any of its pixels.
        components = connected_components(array, background=0, connectivity=2)
        component_class = np.zeros(int(components.max()) + 1, np.int64)
        component_class[components.ravel()] = array.ravel()
        strokes += np.bincount(component_class[1:], minlength=len(names) + 1)
    return [
        {"class": name, "id": k, "pixels": int(pixels[k]), "strokes": int(strokes[k])}
        for k, name in enumerate(names, start=1)
    ]


def _stroke_guide(n_classes: int) -> tuple[int, int]:
    if isinstance(n_classes, bool) or int(n_classes) != n_classes or n_classes < 1:
        raise ValueError(
            f"n_classes must be a positive integer, got {n_classes!r}; pass len(class_names)"
        )
    if n_classes <= 2:
        return _STROKE_GUIDE[2]
    if n_classes <= 4:
        return _STROKE_GUIDE[4]
    return _STROKE_GUIDE[None]


def min_strokes_per_class(n_classes: int) -> int:
    """Minimum number of strokes per class that the annotation guide asks for.

    Parameters
    ----------
    n_classes : int
        Number of classes in the task.

    Returns
    -------
    int
        10 for 1-2 classes, 15 for 3-4 classes, 20 for 5 or more (the guide recommends 30, 40 and
        50+ respectively).

    Examples
    --------
    >>> [min_strokes_per_class(n) for n in (2, 3, 4, 5)]
    [10, 15, 15, 20]
    """
    return _stroke_guide(n_classes)[0]


def annotation_warnings(stats: Sequence[dict]) -> list[str]:
    """Plain-language warnings about annotations that are too few or too unbalanced.

    Parameters
    ----------
    stats : list of dict
        Output of :func:`label_stats`.

    Returns
    -------
    list of str
        One sentence per problem: classes with no labelled pixels, classes with fewer strokes than
        the guide's minimum (:func:`min_strokes_per_class`), and, when one class has more than 10x
        the labelled pixels of another, suggested class-weight multipliers. Empty when all is well.

    Examples
    --------
    >>> stats = [{"class": "background", "id": 1, "pixels": 900, "strokes": 12},
    ...          {"class": "nuclei", "id": 2, "pixels": 300, "strokes": 4}]
    >>> annotation_warnings(stats)
    ["class 'nuclei' has 4 strokes; the guide recommends at least 10 for a 2-class task (30+ is better)"]
    """
    stats = list(stats)
    if not stats:
        return []
    n_classes = len(stats)
    minimum, recommended = _stroke_guide(n_classes)
    messages = []
    for s in stats:
        if s["pixels"] == 0:
            messages.append(
                f"class '{s['class']}' has no labelled pixels; draw at least {minimum} strokes of it "
                "or remove the class"
            )
        elif s["strokes"] < minimum:
            messages.append(
                f"class '{s['class']}' has {s['strokes']} stroke{'s' if s['strokes'] != 1 else ''}; "
                f"the guide recommends at least {minimum} for a {n_classes}-class task "
                f"({recommended}+ is better)"
            )
    labelled = [s for s in stats if s["pixels"] > 0]
    if len(labelled) >= 2:
        most = max(labelled, key=lambda s: s["pixels"])
        least = min(labelled, key=lambda s: s["pixels"])
        ratio = most["pixels"] / least["pixels"]
        if ratio > _IMBALANCE_RATIO:
            # Inverse-frequency multipliers relative to the most labelled class (which keeps 1.0).
            weights = ", ".join(
                f"{s['class']}={most['pixels'] / s['pixels']:.1f}" if s["pixels"] else f"{s['class']}=1.0"
                for s in stats
            )
            messages.append(
                f"class '{most['class']}' has {ratio:.0f}x the labelled pixels of class "
                f"'{least['class']}' ({most['pixels']} vs {least['pixels']}); label more "
                f"'{least['class']}' or use class weight multipliers such as {weights}"
            )
    return messages


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def save_labels(path: str | os.PathLike, labels) -> None:
    """Write a label image as PNG (up to 255 classes) or TIFF, atomically.

    Parameters
    ----------
    path : str or PathLike
        Output file ending in ``.png``, ``.tif`` or ``.tiff``. PNG files are 8-bit grey images of the
        class ids; TIFF files are ``uint8`` or ``uint16``.
    labels : array_like, shape (Y, X)
        Class ids (0 = unlabelled).

    Raises
    ------
    ValueError
        If the suffix is not supported, or labels above 255 are saved as PNG.
    FileNotFoundError
        If the output folder does not exist.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _PNG_SUFFIXES + _TIFF_SUFFIXES:
        raise ValueError(
            f"cannot save labels as '{path.name}': suffix {path.suffix!r} is not supported; "
            "use .png (up to 255 classes) or .tif"
        )
    array = _as_integer_labels(labels)
    top = int(array.max()) if array.size else 0
    if top > 65535:
        raise ValueError(f"labels contain class id {top}, above the uint16 limit 65535; relabel them")
    dtype = np.uint8 if top <= 255 else np.uint16
    if suffix in _PNG_SUFFIXES and dtype != np.uint8:
        raise ValueError(
            f"labels contain class id {top} which does not fit an 8-bit PNG ('{path.name}'); "
            "save them as .tif instead"
        )
    array = array.astype(dtype)
    with atomic_path(path) as tmp:
        if suffix in _PNG_SUFFIXES:
            from PIL import Image as PILImage

            PILImage.fromarray(array, mode="L").save(tmp, format="PNG")
        else:
            import tifffile

            tifffile.imwrite(tmp, array, compression="zlib")


def load_labels(path: str | os.PathLike, shape=None) -> np.ndarray:
    """Read a label image written by :func:`save_labels` (or any single-channel PNG/TIFF).

    Parameters
    ----------
    path : str or PathLike
        A ``.png``, ``.tif`` or ``.tiff`` file of class ids.
    shape : tuple of int, optional
        Expected ``(Y, X)`` (or an image shape ``(C, Y, X)``, whose last two entries are used).

    Returns
    -------
    numpy.ndarray, shape (Y, X)
        ``uint8`` or ``uint16`` class ids.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a single-channel integer image or its shape differs from ``shape``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file '{path}' does not exist; check the path or save labels first")
    suffix = path.suffix.lower()
    if suffix in _PNG_SUFFIXES:
        from PIL import Image as PILImage

        with PILImage.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16", "1"):
                raise ValueError(
                    f"label file '{path.name}' is a {im.mode} colour image; save class ids as a "
                    "single-channel (grey or palette) image"
                )
            array = np.asarray(im)
    elif suffix in _TIFF_SUFFIXES:
        import tifffile

        array = np.squeeze(tifffile.imread(path))
    else:
        raise ValueError(
            f"cannot read labels from '{path.name}': suffix {path.suffix!r} is not supported; "
            "use .png or .tif"
        )
    array = _as_integer_labels(array, what=f"labels in '{path.name}'")
    if shape is not None:
        shape_yx = tuple(int(s) for s in tuple(shape)[-2:])
        if array.shape != shape_yx:
            raise ValueError(
                f"labels in '{path.name}' have shape {array.shape} but the image is {shape_yx} "
                "(Y, X); load the labels drawn on this image or resize them"
            )
    top = int(array.max()) if array.size else 0
    return array.astype(np.uint8 if top <= 255 else np.uint16)


# --------------------------------------------------------------------------------------------------
# QuPath GeoJSON
# --------------------------------------------------------------------------------------------------


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
