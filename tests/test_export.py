"""pixlab.model.export: TorchScript/ONNX equal the eager network; untraceable networks fail clearly."""

import numpy as np
import pytest
import torch

import pixlab
from pixlab.labels.masks import default_colours
from pixlab.model.export import ExportError, export_model
from pixlab.model.export.torchscript import export_torchscript
from pixlab.model.model import Model
from pixlab.model.onnx import OnnxBackend
from pixlab.nn.networks import build_network

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_model(architecture="tiny_unet", encoder=None, channels=2, classes=3, stats=None, per_image=False,
               network=None):
    torch.manual_seed(0)
    net = network if network is not None else build_network(architecture, encoder, in_channels=channels,
                                                            n_classes=classes)
    cfg = pixlab.TrainConfig(architecture=architecture, encoder=encoder or "resnet34", pretrained=False,
                             tile_size=64, recipe="standard", device="cpu", use_training_stats=not per_image)
    stats = stats or {"method": "percentile_99", "per_channel": True, "offset": [10.0] * channels,
                      "scale": [200.0] * channels, "clip": [0.0, 1.0]}
    return Model(net, [f"class {i}" for i in range(classes)], default_colours(classes),
                 [f"ch{i}" for i in range(channels)], stats, cfg)


@pytest.mark.parametrize("arch, encoder, channels", [("tiny_unet", None, 2), ("unet", "resnet18", 3)])
def test_torchscript_and_onnx_outputs_equal_pixlab(tmp_path, arch, encoder, channels):
    model = make_model(arch, encoder, channels=channels)
    ts = torch.jit.load(export_torchscript(model, tmp_path / "m.pt"))
    onnx = OnnxBackend(export_model(model, tmp_path / "m.onnx", "onnx"))
    rng = np.random.default_rng(0)
    for shape in [(1, channels, 64, 64), (2, channels, 96, 128)]:  # another size than the trace's
        batch = rng.random(shape, dtype=np.float32)
        expected = model.infer_batch(batch)  # pixlab's probabilities
        with torch.inference_mode():
            got_ts = torch.softmax(ts(torch.from_numpy(batch)), dim=1).numpy()
        got_onnx = onnx.infer_batch(batch)
        assert got_ts.shape == got_onnx.shape == expected.shape
        assert np.abs(got_ts - expected).max() < 1e-4
        assert np.abs(got_onnx - expected).max() < 1e-4


class SizeDependent(torch.nn.Module):
    """Python control flow on the input size: a trace at one size is wrong at another."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        if x.shape[-1] > 64:
            y = y * 2.0
        return y


def test_untraceable_network_names_the_format_that_works(tmp_path):
    model = make_model(network=SizeDependent())
    with pytest.raises(ExportError, match="--format onnx"):
        model.export(tmp_path / "m.pt", "torchscript")
    assert not (tmp_path / "m.pt").exists()  # nothing half-written
    with pytest.raises(ExportError, match="weights="):
        model.export(tmp_path / "m.zip", "bioimageio", authors=["a"], license="MIT")
    assert not (tmp_path / "m.zip").exists()


def test_imported_onnx_model_exports_onnx_but_not_torchscript(tmp_path, capsys):
    from pixlab.model.onnx_import import import_onnx

    src = make_model()
    path = src.export_onnx(tmp_path / "src.onnx")
    imported = import_onnx(path, src.class_names, channel_names=src.channel_names, tile_size=64)
    with pytest.raises(ExportError, match="--format onnx"):
        imported.export(tmp_path / "x.pt", "torchscript")
    imported.save(tmp_path / "saved")
    from pixlab.app.cli import main

    assert main(["export", "--format", "torchscript", str(tmp_path / "saved"), str(tmp_path / "y.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pixlab: error:") and "--format onnx" in err[0]
    assert main(["export", "--format", "onnx", str(tmp_path / "saved"), str(tmp_path / "y.onnx")]) == 0
    assert (tmp_path / "y.onnx").read_bytes() == (tmp_path / "src.onnx").read_bytes()


def test_cli_export_refuses_existing_output_and_unknown_options(tmp_path, capsys):
    from pixlab.app.cli import main

    model = make_model()
    model.save(tmp_path / "model")
    out = tmp_path / "m.pt"
    assert main(["export", "--format", "torchscript", str(tmp_path / "model"), str(out)]) == 0
    assert torch.jit.load(out)(torch.zeros(1, 2, 32, 32)).shape == (1, 3, 32, 32)
    assert main(["export", "--format", "torchscript", str(tmp_path / "model"), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", "--format", "torchscript", "--license", "MIT", str(tmp_path / "model"),
                 str(tmp_path / "n.pt")]) == 2
    assert "do not apply" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown export format"):
        export_model(model, tmp_path / "z", "tflite")
    with pytest.raises(TypeError, match=r"pixlab.load_model\(folder\)"):
        export_model(str(tmp_path / "model"), tmp_path / "y.pt", "torchscript")
