import json
import os
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import shape

from pixlab.labels.masks import (
    DEFAULT_COLOURS,
    annotation_warnings,
    default_colours,
    geojson_to_labels,
    label_stats,
    labels_to_geojson,
    load_labels,
    min_strokes_per_class,
    parse_colour,
    save_labels,
    validate_labels,
)

DATA = Path(__file__).parent / "data"
QUPATH_FILE = DATA / "qupath_annotations.geojson"
QUPATH_CLASSES = ["Stroma", "Tumor", "Immune cells"]


def _blocky_labels():
    """Three classes of blocky shapes: a ring (hole), diagonal touching squares, touching classes."""
    labels = np.zeros((40, 48), np.uint8)
    labels[2:14, 2:14] = 1
    labels[6:10, 6:10] = 0  # hole in class 1
    labels[20:24, 20:24] = 2
    labels[24:28, 24:28] = 2  # touches the previous square only at a corner
    labels[30:38, 4:20] = 3
    labels[30:38, 20:30] = 1  # class 1 touching class 3 along an edge
    labels[0:3, 40:48] = 3  # on the image border
    return labels


# --------------------------------------------------------------------------------------------------
# colours


def test_default_colours_are_distinct_rgb_lists():
    assert default_colours(0) == []
    assert default_colours(len(DEFAULT_COLOURS)) == [list(c) for c in DEFAULT_COLOURS]
    colours = default_colours(40)
    assert len({tuple(c) for c in colours}) == 40
    assert all(len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colours)


@pytest.mark.parametrize(
    "colour, expected",
    [
        ("#ff8000", [255, 128, 0]),
        ("#F80", [255, 136, 0]),
        ([0, 114, 178], [0, 114, 178]),
        (np.array([1, 2, 3]), [1, 2, 3]),
        (-65536, [255, 0, 0]),  # QuPath packed ARGB red
        (-16711936, [0, 255, 0]),  # QuPath packed ARGB green
        (0xFF8000, [255, 128, 0]),
    ],
)
def test_parse_colour(colour, expected):
    assert parse_colour(colour) == expected


@pytest.mark.parametrize("colour", ["#12345", "red", [1, 2], [256, 0, 0], [0.5, 0.1, 0.2], True, None])
def test_parse_colour_rejects_unclear_values(colour):
    with pytest.raises(ValueError, match="colour"):
        parse_colour(colour)


# --------------------------------------------------------------------------------------------------
# validate_labels


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64, np.float32, np.float64])
def test_validate_labels_returns_uint8(dtype):
    labels = np.array([[0, 1, 2], [3, 0, 1]], dtype=dtype)
    out = validate_labels(labels, (2, 3), ["a", "b", "c"])
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, labels.astype(np.uint8))


def test_validate_labels_of_a_large_uint8_mask_makes_no_int64_copy():
    import tracemalloc
    labels = np.zeros((4096, 4096), np.uint8)
    labels[100:200, 100:200] = 2
    tracemalloc.start()
    out = validate_labels(labels, labels.shape, ["a", "b"])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.dtype == np.uint8 and out is not labels and out[150, 150] == 2
    assert peak < 2 * labels.nbytes, f"{peak / 2**20:.0f} MB for a {labels.nbytes / 2**20:.0f} MB mask"
    with pytest.raises(ValueError, match="class id 2"):
        validate_labels(labels, labels.shape, ["a"])


def test_validate_labels_accepts_image_shape_and_bool():
    out = validate_labels(np.eye(3, dtype=bool), (2, 3, 3), ["cells"])
    np.testing.assert_array_equal(out, np.eye(3, dtype=np.uint8))


def test_validate_labels_uint16_beyond_255_classes():
    names = [f"c{i}" for i in range(300)]
    out = validate_labels(np.array([[0, 300]]), (1, 2), names)
    assert out.dtype == np.uint16 and out[0, 1] == 300


def test_validate_labels_shape_mismatch_message():
    with pytest.raises(ValueError) as error:
        validate_labels(np.zeros((100, 90), np.uint8), (100, 100), ["bg", "fg"])
    assert str(error.value) == (
        "labels have shape (100, 90) but the image is (100, 100) (Y, X); "
        "draw labels on the same image or resize them"
    )


def test_validate_labels_class_id_beyond_names():
    labels = np.array([[0, 4]])
    with pytest.raises(ValueError) as error:
        validate_labels(labels, (1, 2), ["bg", "nuclei", "membrane"])
    assert str(error.value) == (
        "labels contain class id 4 but only 3 class names were given ('bg', 'nuclei', 'membrane'); "
        "add the class name or relabel"
    )


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.array([[0, -1]]), "negative value -1"),
        (np.array([[0.0, np.nan]]), "NaN"),
        (np.array([[0.0, np.inf]]), "infinite"),
        (np.array([[0.0, 1.5]]), "non-integer value 1.5"),
        (np.zeros((2, 2, 3), np.uint8), r"2-D \(Y, X\).*\(2, 2, 3\)"),
        (np.array([["a", "b"]]), "integer class ids"),
    ],
)
def test_validate_labels_rejects_bad_values(labels, match):
    with pytest.raises(ValueError, match=match):
        validate_labels(labels, labels.shape[:2], ["bg", "fg"])


def test_validate_labels_needs_class_names():
    with pytest.raises(ValueError, match="class_names is empty"):
        validate_labels(np.zeros((2, 2)), (2, 2), [])


# --------------------------------------------------------------------------------------------------
# statistics and warnings


def test_label_stats_counts_pixels_and_8_connected_strokes():
    labels = np.array(
        [
            [1, 1, 0, 0, 2],
            [0, 0, 1, 0, 2],  # (1,2) touches (0,1) diagonally: same stroke
            [0, 0, 0, 0, 0],
            [2, 0, 1, 1, 0],
        ]
    )
    stats = label_stats(labels, ["bg", "fg", "other"])
    assert stats == [
        {"class": "bg", "id": 1, "pixels": 5, "strokes": 2},
        {"class": "fg", "id": 2, "pixels": 3, "strokes": 2},
        {"class": "other", "id": 3, "pixels": 0, "strokes": 0},
    ]


def test_label_stats_sums_over_images_and_skips_none():
    a = np.zeros((5, 5), np.uint8)
    a[0, 0] = 1
    a[4, 4] = 1
    b = np.zeros((3, 3), np.uint8)
    b[1, :] = 2
    stats = label_stats([a, None, b], ["bg", "fg"])
    assert [(s["pixels"], s["strokes"]) for s in stats] == [(2, 2), (3, 1)]


def test_label_stats_rejects_unknown_class_id():
    with pytest.raises(ValueError, match=r"labels\[1\] contain class id 3"):
        label_stats([np.ones((2, 2)), np.full((2, 2), 3)], ["bg", "fg"])


@pytest.mark.parametrize("n, expected", [(1, 10), (2, 10), (3, 15), (4, 15), (5, 20), (9, 20)])
def test_min_strokes_per_class(n, expected):
    assert min_strokes_per_class(n) == expected


def test_annotation_warnings_few_strokes_message():
    stats = [
        {"class": "background", "id": 1, "pixels": 900, "strokes": 12},
        {"class": "nuclei", "id": 2, "pixels": 300, "strokes": 4},
    ]
    assert annotation_warnings(stats) == [
        "class 'nuclei' has 4 strokes; the guide recommends at least 10 for a 2-class task (30+ is better)"
    ]


def test_annotation_warnings_empty_class_and_imbalance():
    stats = [
        {"class": "background", "id": 1, "pixels": 50_000, "strokes": 40},
        {"class": "nuclei", "id": 2, "pixels": 2_000, "strokes": 45},
        {"class": "membrane", "id": 3, "pixels": 0, "strokes": 0},
    ]
    messages = annotation_warnings(stats)
    assert len(messages) == 2
    assert messages[0].startswith("class 'membrane' has no labelled pixels; draw at least 15 strokes")
    assert "'background' has 25x the labelled pixels of class 'nuclei'" in messages[1]
    assert "background=1.0, nuclei=25.0" in messages[1]


def test_annotation_warnings_none_when_guide_is_met():
    stats = label_stats(np.zeros((4, 4), np.uint8), ["bg", "fg"])
    stats = [dict(s, pixels=1000, strokes=30) for s in stats]
    assert annotation_warnings(stats) == []


# --------------------------------------------------------------------------------------------------
# files


@pytest.mark.parametrize("name, n_classes", [("labels.png", 3), ("labels.tif", 3), ("labels.tiff", 300)])
def test_save_load_roundtrip(tmp_path, name, n_classes):
    labels = np.random.default_rng(0).integers(0, n_classes + 1, (17, 23))
    save_labels(tmp_path / name, labels)
    loaded = load_labels(tmp_path / name, shape=(2, 17, 23))
    np.testing.assert_array_equal(loaded, labels)
    assert loaded.dtype == (np.uint8 if n_classes < 256 else np.uint16)
    assert os.listdir(tmp_path) == [name]  # no temporary file left behind


def test_save_labels_errors(tmp_path):
    with pytest.raises(ValueError, match=r"does not fit an 8-bit PNG.*\.tif"):
        save_labels(tmp_path / "x.png", np.array([[0, 300]]))
    with pytest.raises(ValueError, match=r"suffix '\.jpg' is not supported"):
        save_labels(tmp_path / "x.jpg", np.zeros((2, 2)))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_labels(tmp_path / "missing" / "x.png", np.zeros((2, 2)))


def test_save_labels_keeps_previous_file_on_error(tmp_path):
    path = tmp_path / "labels.png"
    save_labels(path, np.ones((4, 4)))
    with pytest.raises(ValueError):
        save_labels(path, np.full((4, 4), -1))
    np.testing.assert_array_equal(load_labels(path), np.ones((4, 4)))


def test_load_labels_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_labels(tmp_path / "nothing.png")
    save_labels(tmp_path / "l.png", np.zeros((5, 6)))
    with pytest.raises(ValueError, match=r"have shape \(5, 6\) but the image is \(6, 5\)"):
        load_labels(tmp_path / "l.png", shape=(6, 5))
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="RGB colour image"):
        load_labels(tmp_path / "rgb.png")


# --------------------------------------------------------------------------------------------------
# GeoJSON export


def test_labels_to_geojson_qupath_layout():
    labels = _blocky_labels()
    gj = labels_to_geojson(labels, ["bg", "fg", "other"], colours=["#102030", (1, 2, 3), -65536])
    json.dumps(gj)  # serialisable as it is
    assert gj["type"] == "FeatureCollection"
    assert len(gj["features"]) == 3
    first = gj["features"][0]
    assert first["type"] == "Feature" and len(first["id"]) == 36
    assert first["properties"] == {
        "objectType": "annotation",
        "classification": {"name": "bg", "color": [16, 32, 48]},
    }
    assert gj["features"][2]["properties"]["classification"]["color"] == [255, 0, 0]
    for feature in gj["features"]:
        geometry = shape(feature["geometry"])
        assert geometry.is_valid
        assert geometry.geom_type in ("Polygon", "MultiPolygon")


def test_labels_to_geojson_keeps_holes_and_areas():
    labels = _blocky_labels()
    gj = labels_to_geojson(labels, ["bg", "fg", "other"])
    geometries = {f["properties"]["classification"]["name"]: shape(f["geometry"]) for f in gj["features"]}
    for k, name in enumerate(["bg", "fg", "other"], start=1):
        assert geometries[name].area == (labels == k).sum()
    ring = [p for p in shapely.get_parts(geometries["bg"]) if p.bounds == (2, 2, 14, 14)][0]
    assert len(ring.interiors) == 1


def test_labels_to_geojson_downsample_and_options():
    labels = _blocky_labels()
    gj = labels_to_geojson(labels, ["bg", "fg", "other"], downsample=4, object_type="detection")
    fg = shape(gj["features"][1]["geometry"])
    assert fg.bounds == (80, 80, 112, 112)  # (x0, y0, x1, y1) in full-resolution pixels
    assert gj["features"][1]["properties"]["objectType"] == "detection"
    # min_area drops pieces smaller than 20 label pixels: the two 16-pixel squares of class 2
    small = labels_to_geojson(labels, ["bg", "fg", "other"], min_area=20)
    assert [f["properties"]["classification"]["name"] for f in small["features"]] == ["bg", "other"]
    assert labels_to_geojson(np.zeros((4, 4)), ["bg"])["features"] == []
    with pytest.raises(ValueError, match="object_type"):
        labels_to_geojson(labels, ["bg", "fg", "other"], object_type="cell")
    with pytest.raises(ValueError, match="2 colours were given for 3 classes"):
        labels_to_geojson(labels, ["bg", "fg", "other"], colours=["#000000", "#ffffff"])


@pytest.mark.parametrize("downsample", [1.0, 2.0, 0.5])
def test_geojson_roundtrip_is_exact(downsample):
    labels = _blocky_labels()
    names = ["bg", "fg", "other"]
    gj = labels_to_geojson(labels, names, downsample=downsample)
    back = geojson_to_labels(json.loads(json.dumps(gj)), labels.shape, names, downsample=downsample)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)


# --------------------------------------------------------------------------------------------------
# GeoJSON import


def _expected_qupath_labels():
    expected = np.zeros((64, 80), np.uint8)
    expected[0:30, 0:40] = 1  # Stroma (locked annotation)
    expected[10:30, 10:30] = 2  # Tumor overwrites Stroma ...
    expected[15:25, 15:25] = 1  # ... except inside its hole
    expected[40:60, 50:70] = 2  # second part of the Tumor MultiPolygon
    return expected


def test_import_qupath_export_file():
    with pytest.warns(UserWarning, match=r"1 feature\(s\) without a classification.*index 2"):
        labels = geojson_to_labels(QUPATH_FILE, (64, 80), QUPATH_CLASSES)
    expected = _expected_qupath_labels()
    line = labels == 3  # Immune cells polyline x=45, y 5..30, buffered by 1 px
    assert line[6:29, 44:46].all() and not line[:, :43].any() and not line[:, 47:].any()
    labels[line] = 0
    np.testing.assert_array_equal(labels, expected)


def test_import_qupath_list_single_feature_and_downsample():
    features = json.loads(QUPATH_FILE.read_text())["features"]
    tumor_only = geojson_to_labels(features[1], (64, 80), QUPATH_CLASSES)
    assert tumor_only[20, 20] == 0 and tumor_only[12, 12] == 2 and tumor_only[50, 60] == 2
    polygons = [features[0], features[1]]
    full = geojson_to_labels(polygons, (64, 80), QUPATH_CLASSES)
    np.testing.assert_array_equal(full, _expected_qupath_labels())
    half = geojson_to_labels(polygons, (32, 40), QUPATH_CLASSES, downsample=2)
    # Compare where a half-resolution pixel covers 2x2 full-resolution pixels of one class; the hole's
    # odd edges (15, 25) cross the others' centres, where either class is right.
    blocks = _expected_qupath_labels().reshape(32, 2, 40, 2)
    uniform = blocks.min(axis=(1, 3)) == blocks.max(axis=(1, 3))
    assert uniform.mean() > 0.95
    np.testing.assert_array_equal(half[uniform], blocks.min(axis=(1, 3))[uniform])


def test_import_unknown_class():
    features = json.loads(QUPATH_FILE.read_text())["features"][:2]
    with pytest.raises(ValueError, match=r"class 'Tumor'.*on_unknown='skip'"):
        geojson_to_labels(features, (64, 80), ["Stroma"])
    with pytest.warns(UserWarning, match="'Tumor'"):
        labels = geojson_to_labels(features, (64, 80), ["Stroma"], on_unknown="skip")
    assert set(np.unique(labels)) == {0, 1}


def _feature(geometry, name="cells"):
    return {"type": "Feature", "geometry": geometry, "properties": {"classification": {"name": name}}}


def test_import_repairs_invalid_polygon_with_warning():
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}
    with pytest.warns(UserWarning, match=r"feature 0 \('cells'\) had an invalid geometry.*make_valid"):
        labels = geojson_to_labels(_feature(bowtie), (12, 12), ["cells"])
    assert labels[5, 1] == 1 and labels[5, 8] == 1  # both triangles kept
    assert labels[1, 5] == 0


def test_import_unreadable_geometry_names_feature():
    broken = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}
    ok = _feature({"type": "Point", "coordinates": [3, 3]})
    with pytest.raises(ValueError, match=r"feature 1 \('cells'\) has a geometry that cannot be read"):
        geojson_to_labels([ok, _feature(broken)], (8, 8), ["cells"])


def test_import_points_lines_and_overwrite_order():
    square = {"type": "Polygon", "coordinates": [[[0, 0], [8, 0], [8, 8], [0, 8], [0, 0]]]}
    features = [
        _feature(square, "a"),
        _feature({"type": "Point", "coordinates": [4, 4]}, "b"),
        _feature({"type": "LineString", "coordinates": [[0, 7], [8, 7]]}, "b"),
    ]
    labels = geojson_to_labels({"type": "FeatureCollection", "features": features}, (8, 8), ["a", "b"])
    assert labels[4, 4] == 2 and labels[0, 0] == 1
    assert (labels[6:8, 1:7] == 2).all()
    # reversed order: the square, drawn last, covers everything
    reverse = geojson_to_labels(features[::-1], (8, 8), ["a", "b"])
    assert (reverse == 1).all()


def test_import_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="Export objects as GeoJSON"):
        geojson_to_labels(tmp_path / "missing.geojson", (4, 4), ["a"])
    (tmp_path / "bad.geojson").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        geojson_to_labels(tmp_path / "bad.geojson", (4, 4), ["a"])
    with pytest.raises(ValueError, match="expected a GeoJSON FeatureCollection"):
        geojson_to_labels({"type": "Polygon", "coordinates": []}, (4, 4), ["a"])
    with pytest.raises(ValueError, match="on_unknown"):
        geojson_to_labels([], (4, 4), ["a"], on_unknown="ignore")
    with pytest.raises(ValueError, match="downsample"):
        geojson_to_labels([], (4, 4), ["a"], downsample=0)
    assert geojson_to_labels([], (4, 4), ["a"]).tolist() == [[0] * 4] * 4
