"""Interop: external ONNX models as pixlab models, and a QuPath GeoJSON round trip through training."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import pixlab
from pixlab.model.onnx_import import OnnxModel, import_onnx

DATA = Path(__file__).parent / "data"
QUPATH_FILE = DATA / "qupath_annotations.geojson"


def _export(network, path, in_channels, fixed_tile=None):
    """ONNX file of ``network``: pixlab.model.onnx's export (dynamic sizes), or a fixed (1, C, T, T) input."""
    if fixed_tile is None:
        from pixlab.model.onnx import export_onnx

        return Path(export_onnx(network, path, in_channels=in_channels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(network.eval(), (torch.zeros(1, in_channels, fixed_tile, fixed_tile),), str(path),
                          input_names=["image"], output_names=["scores"], dynamo=False)
    return Path(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from pixlab.datasets import strokes_from_mask, synthetic_fluorescence

    img, truth = synthetic_fluorescence(shape=(96, 96), n_channels=2, n_nuclei=8, seed=4)
    labels = strokes_from_mask(truth, strokes_per_class=6, radius=2, length=(6, 12), seed=4)
    cfg = pixlab.TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=64, epochs=2, batch_size=4,
                             patches_per_epoch=8, recipe="standard", device="cpu", early_stopping=False,
                             loss="ce", scheduler="none")
    model = pixlab.train([(img, labels)], cfg, ["background", "nuclei"], progress=False)
    folder = tmp_path_factory.mktemp("onnx")
    return model, img, labels, _export(model.network, folder / "model.onnx", 2), folder


def _declared(model, **kw):
    return {"channel_names": model.channel_names, "tile_size": model.inference_tile_size,
            "overlap": model.config.tile_overlap, "colours": model.colours, **kw}


def test_round_trip_same_predictions(trained):
    model, img, _, onnx_path, _ = trained
    imported = import_onnx(onnx_path, model.class_names, in_channels=2,
                           **_declared(model, normalization=model.norm_stats))
    assert isinstance(imported, OnnxModel) and isinstance(imported, pixlab.Model)
    expected = model.predict(img)
    got = imported.predict(img)
    assert got.shape == expected.shape == (2, 96, 96)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert imported.summary()["architecture"] == "onnx"


def test_per_image_normalisation_declared_by_name(trained):
    model, img, _, onnx_path, _ = trained
    # Trained on this one image: its own percentile statistics are the training statistics.
    imported = import_onnx(onnx_path, model.class_names, **_declared(model, normalization="percentile_99"))
    assert imported.config.use_training_stats is False
    np.testing.assert_allclose(imported.predict(img), model.predict(img), atol=1e-4)


def test_probability_outputs_are_not_softmaxed_twice(trained):
    model, img, _, _, folder = trained
    softmaxed = torch.nn.Sequential(model.network, torch.nn.Softmax(dim=1))
    path = _export(softmaxed, folder / "softmax.onnx", 2)
    imported = import_onnx(path, model.class_names, outputs="probabilities",
                           **_declared(model, normalization=model.norm_stats))
    np.testing.assert_allclose(imported.predict(img), model.predict(img), atol=1e-4)


def test_fixed_shape_graph_fixes_tile_and_is_checked_against_declared_channels(trained):
    model, img, _, _, folder = trained
    path = _export(model.network, folder / "fixed.onnx", 2, fixed_tile=64)
    imported = import_onnx(path, model.class_names, normalization=model.norm_stats, overlap=0.25)
    assert imported.in_channels == 2 and imported.inference_tile_size == 64
    # batch fixed at 1 in the graph; pixlab's batches of 4 are fed one by one
    np.testing.assert_allclose(imported.predict(img), model.predict(img), atol=1e-4)
    with pytest.raises(ValueError, match=r"\(2 channel\(s\)\) but 3 channel\(s\) were declared.*in_channels=2"):
        import_onnx(path, model.class_names, in_channels=3)
    with pytest.raises(ValueError, match="fixed at 64 x 64 px; pass tile_size=64"):
        import_onnx(path, model.class_names, tile_size=128)


@pytest.mark.parametrize("kw, match", [
    ({"class_names": ["a", "b", "c"], "tile_size": 64}, r"output of shape \(1, 2, 64, 64\).*\(1, 3, 64, 64\)"),
    ({"class_names": ["a", "b"], "in_channels": 2}, "declare tile_size"),
    ({"class_names": ["a", "b"], "in_channels": 2, "tile_size": 64, "normalization": "histogram"},
     "normalization='histogram' is not valid"),
    ({"class_names": ["a", "b"], "in_channels": 2, "tile_size": 64, "normalization": {"mean": [1, 2, 3], "std": 1}},
     "3 mean/offset"),
    ({"class_names": ["a", "b"], "in_channels": 2, "tile_size": 64, "outputs": "softmax"}, "outputs='softmax'"),
])
def test_declaration_errors(trained, kw, match):
    _, _, _, onnx_path, _ = trained
    kw = {"in_channels": 2, **kw}
    with pytest.raises(ValueError, match=match):
        import_onnx(onnx_path, **kw)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.onnx"):
        import_onnx(tmp_path / "nothere.onnx", ["a", "b"], in_channels=1, tile_size=64)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all")
    with pytest.raises(ValueError, match="cannot load .*junk.onnx' as an ONNX model"):
        import_onnx(junk, ["a", "b"], in_channels=1, tile_size=64)


def test_save_and_reload_imported_model(trained, tmp_path):
    model, img, _, onnx_path, _ = trained
    imported = import_onnx(onnx_path, model.class_names, **_declared(model, normalization=model.norm_stats))
    imported.save(tmp_path / "imported")
    assert sorted(p.name for p in (tmp_path / "imported").iterdir()) == ["model.onnx", "onnx_model.json"]
    again = import_onnx(tmp_path / "imported")
    assert again.class_names == model.class_names and again.colours == model.colours
    np.testing.assert_array_equal(again.predict(img), imported.predict(img))
    with pytest.raises(ValueError, match="leave out"):
        import_onnx(tmp_path / "imported", ["x", "y"])


def test_diagnostics_and_predict_file_accept_imported_model(trained, tmp_path):
    from pixlab.analysis.diagnostics import evaluate
    from pixlab.inference.predict import predict_file

    model, img, labels, onnx_path, _ = trained
    imported = import_onnx(onnx_path, model.class_names, **_declared(model, normalization=model.norm_stats))
    ours, theirs = evaluate(model, [(img, labels)], split=False), evaluate(imported, [(img, labels)], split=False)
    np.testing.assert_array_equal(theirs.confusion["all"], ours.confusion["all"])
    tif = tmp_path / "in.ome.tif"
    pixlab.image.io.write_ome_tiff(tif, img.read(), channel_names=img.channel_names)
    for backend in ("eager", "onnxruntime"):
        out = tmp_path / f"labels_{backend}.ome.tif"
        predict_file(imported, tif, out, output="labels", backend=backend)
        written = pixlab.open_image(out).read()[0]
        np.testing.assert_array_equal(written, model.predict_labels(img))


# --- QuPath GeoJSON: import annotations, train, export predicted objects -------------------------------


@pytest.mark.slow
def test_qupath_geojson_train_and_export_round_trip(tmp_path):
    import shapely
    from shapely.geometry import shape

    from pixlab.labels.masks import geojson_to_labels, labels_to_geojson

    names = ["Stroma", "Tumor", "Immune cells"]
    qupath = json.loads(QUPATH_FILE.read_text())
    colours = {f["properties"]["classification"]["name"]: f["properties"]["classification"]["color"]
               for f in qupath["features"] if "classification" in f["properties"]}
    downsample = 2.0  # labels at half the resolution QuPath's coordinates are in
    with pytest.warns(UserWarning, match="without a classification"):
        labels = geojson_to_labels(QUPATH_FILE, (40, 48), names, downsample=downsample)
    assert set(np.unique(labels)) == {0, 1, 2, 3}

    # An image whose channel k is bright where class k was annotated: learnable from the labels.
    rng = np.random.default_rng(0)
    image = rng.normal(0.1, 0.05, (3, 40, 48)).astype(np.float32)
    for k in (1, 2, 3):
        image[k - 1][labels == k] += 1.0
    cfg = pixlab.TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=32, epochs=3, batch_size=4,
                             patches_per_epoch=8, recipe="standard", device="cpu", early_stopping=False,
                             loss="ce", scheduler="none", learning_rate=1e-2, validation_split=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few strokes per class: the annotation-count advice
        model = pixlab.train([(image, labels)], cfg, names, colours=[colours[n] for n in names], progress=False)
    predicted = model.predict_labels(image)
    agree = (predicted == labels)[labels > 0].mean()
    assert agree > 0.8

    exported = labels_to_geojson(predicted, model.class_names, model.colours, downsample=downsample,
                                 object_type="detection")
    path = tmp_path / "predicted.geojson"
    path.write_text(json.dumps(exported))
    features = json.loads(path.read_text())["features"]
    geoms = {}
    for feature in features:
        props = feature["properties"]
        assert props["objectType"] == "detection"
        name = props["classification"]["name"]
        assert props["classification"]["color"] == colours[name]
        geometry = shape(feature["geometry"])
        assert geometry.is_valid and geometry.geom_type in ("Polygon", "MultiPolygon")
        geoms[name] = geometry
    assert set(geoms) == set(names)
    # Coordinates are back in QuPath's full-resolution pixels: the predicted Tumor covers the
    # annotated Tumor polygons of the file.
    tumor = shapely.union_all([shape(f["geometry"]) for f in qupath["features"]
                               if f["properties"].get("classification", {}).get("name") == "Tumor"])
    assert geoms["Tumor"].intersection(tumor).area / tumor.area > 0.7
    assert shapely.union_all(list(geoms.values())).bounds == (0, 0, 96, 80)
