"""bioimage.io packages: pass bioimageio.core's own test, and run back in pixlab (import)."""

import zipfile

import numpy as np
import pytest
import yaml

import pixlab
from pixlab.model.export.bioimageio import preprocessing
from pixlab.model.export.bioimageio_import import BioimageioModel, load_bioimageio

from test_export import make_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sample_image():
    rng = np.random.default_rng(0)
    img = rng.normal(60, 15, (2, 140, 150))
    yy, xx = np.mgrid[:140, :150]
    img[1] += 150 * (np.hypot(yy - 70, xx - 60) < 20)
    return np.clip(img, 0, 255).astype(np.uint8)


def core_test(path):
    bioimageio_core = pytest.importorskip("bioimageio.core")
    summary = bioimageio_core.test_model(str(path))
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failed
    return {d.name for d in summary.details}


@pytest.mark.slow
@pytest.mark.parametrize("per_image", [False, True])
def test_package_passes_bioimageio_core_test(tmp_path, per_image, tiny_cfg, fluo_sample):
    # A trained model: its outputs depend on the inputs enough that a wrong normalisation step
    # fails the test (checked: a 5% wrong scale_linear gain fails it at the package's tolerance).
    img, labels, _, names = fluo_sample
    model = pixlab.train([(img, labels)], tiny_cfg.replace(use_training_stats=not per_image), class_names=names)
    model.metadata["pixel_size_um"] = [0.65, 0.65]
    out = model.export(tmp_path / "m.zip", "bioimageio", sample=img, authors=["Ada Lovelace"],
                       license="MIT", cite=[{"text": "A paper", "doi": "10.1000/xyz123"}])
    names = core_test(out)
    assert {"Reproduce test outputs from test inputs (torchscript)",
            "Reproduce test outputs from test inputs (onnx)"} <= names
    with zipfile.ZipFile(out) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        assert {"rdf.yaml", "README.md", "cover.png", "test_input.npy", "test_output.npy",
                "weights.onnx", "weights_torchscript.pt"} <= set(z.namelist())
    assert rdf["format_version"].startswith("0.5") and rdf["license"] == "MIT"
    axes = rdf["inputs"][0]["axes"]
    assert [a["type"] for a in axes] == ["batch", "channel", "space", "space"]
    assert [a.get("id") for a in axes[2:]] == ["y", "x"]
    assert (axes[2]["unit"], axes[2]["scale"]) == ("nanometer", 650.0)  # 0.65 µm is not exact in µm
    assert rdf["outputs"][0]["axes"][1]["channel_names"] == model.class_names
    assert rdf["outputs"][0]["axes"][2]["halo"] >= 1
    assert rdf["outputs"][0]["postprocessing"] == [{"id": "softmax", "kwargs": {"axis": "channel"}}]
    ops = [p["id"] for p in rdf["inputs"][0]["preprocessing"]]
    assert ops == (["scale_range", "clip"] if per_image else ["scale_linear", "clip"])


def test_preprocessing_maps_pixlab_normalisation():
    fixed = make_model(stats={"method": "percentile_99", "per_channel": True, "offset": [10.0, 20.0],
                              "scale": [100.0, 50.0], "clip": [0.0, 1.0]})
    pre = preprocessing(fixed)
    assert pre[0] == {"id": "scale_linear", "kwargs": {"axis": "channel", "gain": [0.01, 0.02],
                                                        "offset": [-0.1, -0.4]}}
    assert pre[1] == {"id": "clip", "kwargs": {"min": 0.0, "max": 1.0}}
    z = make_model(stats={"method": "z_score", "per_channel": True, "offset": [5.0, 6.0], "scale": [2.0, 3.0],
                          "clip": None})
    assert preprocessing(z) == [{"id": "fixed_zero_mean_unit_variance",
                                 "kwargs": {"axis": "channel", "mean": [5.0, 6.0], "std": [2.0, 3.0]}}]
    per_image = make_model(per_image=True, stats={"method": "z_score", "per_channel": False, "offset": [0, 0],
                                                  "scale": [1, 1], "clip": None})
    assert preprocessing(per_image) == [{"id": "zero_mean_unit_variance",
                                         "kwargs": {"axes": ["channel", "y", "x"], "eps": 1e-6}}]
    mm = make_model(per_image=True, stats={"method": "min_max", "per_channel": True, "offset": [0, 0],
                                           "scale": [1, 1], "clip": [0.0, 1.0]})
    assert preprocessing(mm)[0]["kwargs"]["min_percentile"] == 0.0


@pytest.mark.parametrize("weights", ["onnx", "torchscript"])
def test_exported_package_runs_in_pixlab_like_the_model(tmp_path, weights):
    model = make_model()
    img = sample_image()
    package = model.export(tmp_path / "m.zip", "bioimageio", sample=img, authors=["a"], license="MIT",
                           weights=["torchscript", "onnx"])
    loaded = pixlab.load_model(package) if weights == "onnx" else load_bioimageio(package, weights=weights)
    assert isinstance(loaded, BioimageioModel) and loaded.metadata["bioimageio"]["weights"] == weights
    assert loaded.class_names == model.class_names and loaded.channel_names == model.channel_names
    assert loaded.colours == model.colours
    tile, overlap = loaded.inference_tile_size, loaded.config.tile_overlap
    expected = model.predict(img, tile_size=tile, overlap=overlap)
    got = loaded.predict(img)
    assert np.abs(got - expected).max() < 1e-4
    # predict_file streams it like any model; save/load keeps the package and the settings
    loaded.save(tmp_path / "saved")
    again = pixlab.load_model(tmp_path / "saved")
    from pixlab.image.io import write_ome_tiff
    write_ome_tiff(tmp_path / "in.ome.tif", img)
    res = pixlab.predict_file(again, tmp_path / "in.ome.tif", tmp_path / "out.ome.tif", output="labels")
    import tifffile
    labels = tifffile.imread(tmp_path / "out.ome.tif")
    assert res["shape"] == (1, 140, 150)
    assert (labels.squeeze() == np.argmax(expected, axis=0) + 1).mean() > 0.999


def test_unsupported_packages_are_refused_with_the_reason(tmp_path):
    model = make_model()
    package = model.export(tmp_path / "m", "bioimageio", sample=sample_image(), authors=["a"], license="MIT",
                           weights=["onnx"])
    rdf_path = tmp_path / "m" / "rdf.yaml"
    rdf = yaml.safe_load(rdf_path.read_text())
    rdf["inputs"][0]["preprocessing"] = [{"id": "scale_range", "kwargs": {"min_percentile": 1,
                                                                          "max_percentile": 99.8}}]
    rdf_path.write_text(yaml.safe_dump(rdf))
    with pytest.raises(ValueError, match="percentiles"):
        load_bioimageio(package)
    rdf["inputs"][0]["preprocessing"] = []
    rdf["weights"] = {"pytorch_state_dict": rdf["weights"]["onnx"]}
    rdf_path.write_text(yaml.safe_dump(rdf))
    with pytest.raises(ValueError, match="ONNX or TorchScript"):
        load_bioimageio(package)
    rdf["weights"] = {"onnx": {"source": "../../etc/passwd", "opset_version": 17}}
    rdf_path.write_text(yaml.safe_dump(rdf))
    with pytest.raises(ValueError, match="inside the package"):
        load_bioimageio(package)
