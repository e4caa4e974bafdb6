"""pixlab.model.onnx: export with dynamic batch/H/W, ONNX Runtime backend matching Model.infer_batch."""

import numpy as np
import onnx
import pytest
import torch

import pixlab
from pixlab.labels.masks import default_colours
from pixlab.model.model import Model
from pixlab.nn.networks import build_network
from pixlab.model.onnx import OnnxBackend, compare_backends, export_onnx, max_prob_difference


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_model(architecture="tiny_unet", encoder=None, channels=2, classes=3):
    torch.manual_seed(0)
    net = build_network(architecture, encoder, in_channels=channels, n_classes=classes)
    cfg = pixlab.TrainConfig(architecture=architecture, encoder=encoder or "resnet34", pretrained=False,
                             tile_size=64, recipe="standard", device="cpu")
    stats = {"method": "min_max", "per_channel": True, "offset": [0.0] * channels,
             "scale": [1.0] * channels, "clip": None}
    return Model(net, [f"class {i}" for i in range(classes)], default_colours(classes),
                 [f"ch{i}" for i in range(channels)], stats, cfg)


def test_export_has_dynamic_batch_height_width_and_matches_eager(tmp_path):
    model = make_model()
    path = model.export_onnx(tmp_path / "m.onnx")
    graph = onnx.load(path).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 2, "height", "width"]
    backend = OnnxBackend(path)
    rng = np.random.default_rng(0)
    for shape in [(1, 2, 64, 64), (3, 2, 96, 128)]:
        batch = rng.standard_normal(shape, dtype=np.float32)
        expected = model.infer_batch(batch)
        got = backend.infer_batch(batch)
        assert got.shape == expected.shape and got.dtype == np.float32
        assert max_prob_difference(got, expected) < 1e-5
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_smp_unet_exports_and_agrees():
    model = make_model("unet", "resnet18", channels=3, classes=2)
    batch = np.random.default_rng(1).standard_normal((2, 3, 64, 64), dtype=np.float32)
    rows = compare_backends(model, batch)
    assert [r["backend"] for r in rows] == ["eager", "onnxruntime"]
    assert rows[1]["max_prob_diff"] < 1e-4 and rows[0]["max_prob_diff"] == 0.0
    assert all(r["seconds"] > 0 for r in rows)


def test_model_backend_is_cached_and_export_is_atomic(tmp_path, monkeypatch):
    model = make_model()
    assert model.backend("eager") is model
    ort = model.backend("onnxruntime")
    assert ort is model.backend("onnxruntime") and ort.name == "onnxruntime"
    with pytest.raises(ValueError, match="backend must be"):
        model.backend("tensorrt")

    def broken(*args, **kwargs):
        raise RuntimeError("exporter failed")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(RuntimeError):
        export_onnx(model, tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_onnx_sources_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="export one with"):
        OnnxBackend(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="ONNX Runtime cannot load"):
        OnnxBackend(tmp_path / "junk.onnx")
    with pytest.raises(ValueError, match="in_channels"):
        OnnxBackend(torch.nn.Sequential(torch.nn.Conv2d(2, 2, 1)))


def test_bare_network_with_in_channels():
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 2, 3, padding=1)).eval()
    backend = OnnxBackend(net, in_channels=4)
    x = np.random.default_rng(2).standard_normal((2, 4, 40, 24), dtype=np.float32)
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(x)), 1).numpy()
    assert max_prob_difference(backend.infer_batch(x), expected) < 1e-5
