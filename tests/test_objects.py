"""Objects: connected components traced band by band, merged across band borders, measured, written."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import shapely
import torch
from shapely.geometry import shape

import pixlab
from pixlab.image.io import Image, write_ome_tiff
from pixlab.inference import objects as objects_mod
from pixlab.inference.measurements import measurements_table
from pixlab.inference.objects import ObjectTracer, trace_objects
from pixlab.inference.predict import predict_file
from pixlab.labels.masks import default_colours
from pixlab.model.model import Model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ["background", "nuclei", "membrane"]
STATS = {"method": "min_max", "per_channel": True, "offset": [0.0, 0.0], "scale": [4000.0, 4000.0], "clip": None}
KEY = ["class_id", "centroid_y_px", "centroid_x_px"]


def sorted_table(t):
    return t.sort_values(KEY).reset_index(drop=True)


def assert_same_objects(got, expected, columns=("pixels", "area_px", "perimeter_px", "centroid_x_px",
                                                "centroid_y_px", "mean_probability")):
    got, expected = sorted_table(got), sorted_table(expected)
    assert len(got) == len(expected)
    assert got["class_id"].tolist() == expected["class_id"].tolist()
    for c in columns:
        np.testing.assert_allclose(got[c].to_numpy(float), expected[c].to_numpy(float), rtol=1e-6, atol=1e-6,
                                   err_msg=c)


def blobs(shape_yx=(61, 53), seed=0):
    """A label map with objects of every shape: U shapes, spirals, holes, one-pixel objects."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    noise = ndi.gaussian_filter(rng.standard_normal(shape_yx), 1.5)
    lab = np.where(noise > 0.05, 2, 1).astype(np.uint8)
    lab[noise < -0.15] = 3
    return lab


@pytest.mark.parametrize("band", [1, 2, 3, 7, 60])
def test_objects_traced_in_bands_equal_the_whole_map(band):
    from skimage.measure import label

    lab = blobs()
    rng = np.random.default_rng(1)
    probs = rng.random((3, *lab.shape))
    img = rng.random((2, *lab.shape)) * 100
    whole, _ = trace_objects(lab, CLASSES, probs=probs, image=img, channel_names=["a", "b"])
    assert len(whole) == sum(label(lab == k, connectivity=1).max() for k in (2, 3))
    banded, shapes = trace_objects(lab, CLASSES, probs=probs, image=img, channel_names=["a", "b"],
                                   band_height=band)
    assert_same_objects(banded, whole, columns=("pixels", "area_px", "perimeter_px", "centroid_x_px",
                                                "centroid_y_px", "mean_probability", "mean_a", "mean_b"))
    assert all(g.is_valid and g.geom_type == "Polygon" for g in shapes)


def test_a_u_shape_and_a_ring_are_one_object_each_across_bands():
    lab = np.ones((9, 9), np.uint8)
    lab[1:8, 1] = lab[1:8, 3] = lab[7, 1:4] = 2  # U open at the top: two pieces until row 7
    lab[1:6, 5:8] = 2
    lab[3, 6] = 1  # a ring with a one-pixel hole
    table, shapes = trace_objects(lab, CLASSES, band_height=1)
    assert len(table) == 2
    ring = shapes[int(np.argmax([len(g.interiors) for g in shapes]))]
    assert ring.area == 14 and len(ring.interiors) == 1
    filled, shapes = trace_objects(lab, CLASSES, band_height=1, fill_holes=1.5)
    assert sorted(filled["area_px"]) == [15.0, 15.0]  # the U (7 + 7 + 1) and the filled ring
    assert all(not g.interiors for g in shapes)


def test_sizes_are_in_um2_with_a_pixel_size_and_full_resolution_pixels():
    lab = np.ones((10, 10), np.uint8)
    lab[1:3, 1:3] = 2  # 4 px
    lab[5:9, 5:9] = 2  # 16 px
    # downsample 2: a prediction pixel is 4 input pixels; pixel size 0.5 µm: an input pixel is 0.25 µm².
    table, _ = trace_objects(lab, CLASSES, downsample=2, pixel_size=(0.5, 0.5), min_area=5.0)
    assert table["area_px"].tolist() == [64.0] and table["area_um2"].tolist() == [16.0]
    assert table["centroid_x_px"].tolist() == [14.0] and table["centroid_x_um"].tolist() == [7.0]
    assert table["perimeter_px"].tolist() == [32.0] and table["perimeter_um"].tolist() == [16.0]
    no_size, _ = trace_objects(lab, CLASSES, downsample=2, min_area=5.0)  # px: both are kept
    assert no_size["area_px"].tolist() == [16.0, 64.0] and no_size["area_um2"].isna().all()


def test_smoothing_and_simplification_round_the_staircase():
    yy, xx = np.mgrid[:64, :64]
    lab = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 20 ** 2, 2, 1).astype(np.uint8)
    exact, (g0,) = trace_objects(lab, CLASSES)
    smooth, (g1,) = trace_objects(lab, CLASSES, smooth=2.0, simplify=0.5)
    circle = 2 * math.pi * 20
    assert exact["perimeter_px"][0] > 1.2 * circle  # the staircase is ~4/pi too long
    assert abs(smooth["perimeter_px"][0] - circle) < 0.05 * circle
    assert len(g1.exterior.coords) < len(g0.exterior.coords)
    assert smooth["area_px"][0] == exact["area_px"][0]  # measured before smoothing


def test_object_options_are_checked_up_front():
    with pytest.raises(ValueError, match="objects must be one of"):
        objects_mod.object_options("cells", CLASSES)
    with pytest.raises(ValueError, match="object class 'cells' is not a class of this model"):
        objects_mod.object_options("detection", CLASSES, classes=["cells"])
    with pytest.raises(ValueError, match="min_area must be a number >= 0"):
        objects_mod.object_options("detection", CLASSES, min_area=-1)
    with pytest.raises(ValueError, match="objects='none'"):
        objects_mod.object_options("none", CLASSES, wanted=True)
    assert objects_mod.object_options("annotation", CLASSES, classes=["membrane", 2])["tracer"]["classes"] == [3, 2]


def test_measurements_table_counts_objects_per_mm2():
    t = measurements_table([0, 600, 300, 100], CLASSES, "a", (0.5, 0.5), objects={2: 5, 3: 0})
    assert t["objects"].tolist()[1:] == [5, 0] and pd.isna(t["objects"][0])
    # 1000 px of 0.25 µm² = 250 µm² = 2.5e-4 mm²
    assert t["objects_per_mm2"].tolist()[1] == pytest.approx(5 / 2.5e-4)
    assert t["objects_per_mpx"].tolist()[1] == pytest.approx(5 / 1e-3)


class Threshold(torch.nn.Module):
    """Nuclei where the first channel is bright, membrane where the second is: a prediction with objects."""

    def __init__(self, t_nuclei, t_membrane):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[1, 0] = self.conv.weight[2, 1] = 200.0
            self.conv.bias.copy_(torch.tensor([0.0, -200.0 * t_nuclei, -200.0 * t_membrane]))

    def forward(self, x):
        return self.conv(x)


@pytest.fixture(scope="module")
def scene():
    img, _ = pixlab.datasets.synthetic_fluorescence(shape=(160, 190), n_channels=2, n_nuclei=40, seed=5)
    image = Image(img.data, img.channel_names, pixel_size=(0.5, 0.5))
    x = image.read().astype(np.float32) / 4000.0
    net = Threshold(float(np.percentile(x[0], 80)), float(np.percentile(x[1], 97)))
    cfg = pixlab.TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=64, recipe="standard",
                             device="cpu")
    model = Model(net, CLASSES, default_colours(3), image.channel_names, STATS, cfg)
    return model, image


def test_streamed_objects_equal_the_in_memory_prediction(scene, tmp_path, monkeypatch):
    model, image = scene
    write_ome_tiff(tmp_path / "in.ome.tif", image)
    tracers = []
    finish = ObjectTracer.finish
    monkeypatch.setattr(ObjectTracer, "finish", lambda self: (tracers.append(self), finish(self))[1])
    res = predict_file(model, tmp_path / "in.ome.tif", None, geojson=tmp_path / "o.geojson",
                       objects_csv=tmp_path / "o.objects.csv", measurements=tmp_path / "o.csv",
                       tile_size=32, overlap=0.25, backend="eager")
    (tracer,) = tracers
    assert tracer.bands >= 5 and tracer.merged >= 5  # small bands: many objects cross a border

    probs = model.predict(image, tile_size=32, overlap=0.25)
    expected, _ = trace_objects(np.argmax(probs, axis=0) + 1, CLASSES, probs=probs, image=image.read(),
                                channel_names=image.channel_names, pixel_size=(0.5, 0.5))
    got = pd.read_csv(tmp_path / "o.objects.csv")
    assert len(got) > 20
    assert_same_objects(got, expected, columns=("pixels", "area_px", "area_um2", "perimeter_px", "centroid_x_px",
                                                "centroid_y_px", "mean_probability", "mean_DAPI"))
    counts = expected["class"].value_counts().to_dict()
    assert res["objects"] == {"nuclei": counts["nuclei"], "membrane": counts["membrane"]}
    table = res["measurements"]
    assert table["objects"].tolist()[1:] == [counts["nuclei"], counts["membrane"]]
    area_mm2 = 160 * 190 * 0.25 / 1e6
    assert table["objects_per_mm2"][1] == pytest.approx(counts["nuclei"] / area_mm2)

    gj = json.loads((tmp_path / "o.geojson").read_text())
    assert len(gj["features"]) == len(got)
    feature = gj["features"][0]
    props = feature["properties"]
    assert props["objectType"] == "detection"
    assert props["classification"]["name"] in ("nuclei", "membrane")
    assert props["classification"]["color"] == default_colours(3)[CLASSES.index(props["classification"]["name"])]
    assert set(props["measurements"]) >= {"area_um2", "perimeter_um", "centroid_x_um", "mean_probability",
                                          "mean_DAPI", "mean_Membrane"}
    import uuid
    uuid.UUID(feature["id"])
    geoms = [shape(f["geometry"]) for f in gj["features"]]
    assert all(g.is_valid for g in geoms)
    areas = sorted(g.area for g in geoms)
    assert areas == pytest.approx(sorted(got["area_px"]))


def test_annotations_min_size_and_classes_from_predict_file(scene, tmp_path):
    model, image = scene
    res = predict_file(model, image, None, geojson=tmp_path / "a.geojson", objects="annotation",
                       object_classes=["nuclei"], min_object_area=5.0, fill_holes_area=math.inf,
                       tile_size=32, backend="eager")
    gj = json.loads((tmp_path / "a.geojson").read_text())
    assert {f["properties"]["objectType"] for f in gj["features"]} == {"annotation"}
    assert {f["properties"]["classification"]["name"] for f in gj["features"]} == {"nuclei"}
    assert all(f["properties"]["measurements"]["area_um2"] >= 5.0 for f in gj["features"])
    assert all(not shape(f["geometry"]).interiors for f in gj["features"])
    assert res["objects"] == {"nuclei": len(gj["features"])}


def test_a_failed_prediction_leaves_no_objects_file(scene, tmp_path, monkeypatch):
    model, image = scene

    def broken(self, *a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ObjectTracer, "_flush", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        predict_file(model, image, None, geojson=tmp_path / "x.geojson", objects_csv=tmp_path / "x.csv",
                     tile_size=32, backend="eager")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_objects_geojson_reads_back_as_labels(scene, tmp_path):
    """The GeoJSON is QuPath's layout: pixlab's own QuPath reader turns it back into the label map."""
    from pixlab.labels.masks import geojson_to_labels

    model, image = scene
    predict_file(model, image, None, geojson=tmp_path / "r.geojson", tile_size=32, backend="eager")
    labels = geojson_to_labels(tmp_path / "r.geojson", image.shape[1:], CLASSES)
    predicted = np.argmax(model.predict(image, tile_size=32), axis=0) + 1
    assert np.array_equal(labels > 1, predicted > 1)
    assert np.array_equal(labels[labels > 1], predicted[labels > 1])
    assert shapely.is_valid(shapely.from_geojson((tmp_path / "r.geojson").read_text())).all()
