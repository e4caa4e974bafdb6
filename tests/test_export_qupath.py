"""QuPath DL pixel classifier folder: metadata.json read the way the extension reads it, field by field.

The key/type table below was taken from the extension's source, uw-loci/qupath-extension-dl-pixel-classifier
at commit 6510626c5a6952522714f111fdb148873a6eb9d2 (see docs/interop.md for the files):
``ModelManager.loadMetadata`` (Java, Gson: getAsString/getAsInt/getAsDouble/getAsBoolean) and the
Python server's ``utils/normalization.py`` (what the stats and strategy do to a tile). It is written
here independently of pixlab's exporter, so a change of either side that breaks QuPath fails a test.
"""

import json

import numpy as np
import onnx
import pytest

from pixlab.image.normalize import apply
from pixlab.model.onnx import OnnxBackend

from test_export import make_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# What ModelManager.loadMetadata reads: key -> JSON type (nested dicts for JSON objects,
# [type] for arrays). "id" and "name" are required (read without has()); the others have defaults.
READ_BY_EXTENSION = {
    "id": str, "name": str, "description": str, "createdAt": str,
    "architecture": {"type": str, "backbone": str, "input_width": int, "input_height": int,
                     "input_channels": int, "downsample": float, "context_scale": int,
                     "effective_input_channels": int},
    "channel_config": {"expected_channels": [str], "normalization_strategy": str, "bit_depth_trained": int,
                       "normalization": {"per_channel": bool, "clip_percentile": float}},
    "input_config": {"normalization": {"per_channel": bool, "clip_percentile": float}},
    "classes": [{"index": int, "name": str, "color": str}],
    "training": {"epochs": int, "final_loss": float, "final_accuracy": float},
    "normalization_stats": [{"p1": float, "p99": float, "min": float, "max": float, "mean": float, "std": float}],
    "training_pixel_size_um": float,
    "training_tile_size_px": int,
}
REQUIRED = {"id", "name", "architecture"}
STRATEGY_NAMES = {"MIN_MAX", "PERCENTILE_99", "Z_SCORE", "FIXED_RANGE"}  # ChannelConfiguration enum


def check_types(value, schema, where="metadata"):
    """Fail where Gson's getAsX would fail or mis-read: ints must be JSON integers, doubles numbers."""
    if isinstance(schema, dict):
        assert isinstance(value, dict), where
        for key, sub in schema.items():
            if key in value:
                check_types(value[key], sub, f"{where}.{key}")
    elif isinstance(schema, list):
        assert isinstance(value, list) and value, where
        for i, item in enumerate(value):
            check_types(item, schema[0], f"{where}[{i}]")
    elif schema is int:
        assert isinstance(value, int) and not isinstance(value, bool), where
    elif schema is float:
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
    else:
        assert isinstance(value, schema), where


def extension_normalise(tile_hwc, meta):
    """The extension's precomputed-stats normalisation of a raw (H, W, C) tile, as its Python server
    does it (per channel; strategy lower-cased by the Java side's buildInputConfig)."""
    strategy = meta["channel_config"]["normalization_strategy"].lower()
    out = tile_hwc.astype(np.float32).copy()
    for c, s in enumerate(meta["normalization_stats"]):
        x = out[..., c]
        if strategy == "percentile_99":
            x = np.clip(x, s["p1"], s["p99"])
            x = (x - s["p1"]) / (s["p99"] - s["p1"])
        elif strategy == "min_max":
            x = (x - s["min"]) / (s["max"] - s["min"])
        elif strategy == "z_score":
            x = (np.clip((x - s["mean"]) / s["std"], -5, 5) + 5) / 10
        out[..., c] = x
    return out


def test_metadata_matches_what_the_extension_reads(tmp_path):
    model = make_model(channels=2, classes=3)
    model.metadata["pixel_size_um"] = [0.5, 0.5]
    folder = model.export(tmp_path / "classifiers" / "dl" / "nuclei", "qupath-dl", name="Nuclei")
    meta = json.loads((tmp_path / "classifiers/dl/nuclei/metadata.json").read_text())
    assert folder.endswith("nuclei") and sorted(p.name for p in (tmp_path / "classifiers/dl/nuclei").iterdir()) == [
        "metadata.json", "model.onnx"]  # model.pt is not needed: the extension prefers model.onnx
    assert REQUIRED <= set(meta)
    assert set(READ_BY_EXTENSION) <= set(meta)  # every key it reads is given, none left to defaults
    check_types(meta, READ_BY_EXTENSION)
    assert meta["id"] == "nuclei" and meta["name"] == "Nuclei"  # folder name = id (loadClassifier(id))
    arch = meta["architecture"]
    assert (arch["input_channels"], arch["effective_input_channels"], arch["context_scale"]) == (2, 2, 1)
    assert arch["input_width"] == arch["input_height"] == model.inference_tile_size
    assert arch["downsample"] == 1.0 and meta["training_pixel_size_um"] == 0.5
    assert meta["training_tile_size_px"] == model.config.tile_size
    cc = meta["channel_config"]
    assert cc["expected_channels"] == ["ch0", "ch1"] and cc["normalization_strategy"] in STRATEGY_NAMES
    assert cc["normalization"]["per_channel"] is True  # one stats row per channel is used as such
    assert [c["index"] for c in meta["classes"]] == [0, 1, 2]  # output channel index
    assert [c["name"] for c in meta["classes"]] == model.class_names
    assert all(len(c["color"]) == 7 and c["color"].startswith("#") and int(c["color"][1:], 16) >= 0
               for c in meta["classes"])
    assert meta["classes"][1]["color"] == "#%02X%02X%02X" % tuple(model.colours[1])
    assert len(meta["normalization_stats"]) == 2
    import datetime
    datetime.datetime.fromisoformat(meta["createdAt"])  # Java LocalDateTime.parse: no zone
    assert "+" not in meta["createdAt"] and "Z" not in meta["createdAt"]


def test_onnx_is_opset_14_dynamic_and_gives_pixlab_logits(tmp_path):
    model = make_model()
    model.export(tmp_path / "m", "qupath-dl")
    proto = onnx.load(tmp_path / "m" / "model.onnx")
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [14]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] and dims[2] and dims[3] and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))
    assert dims[1] == 2
    batch = np.random.default_rng(0).random((2, 2, 96, 64), dtype=np.float32)
    got = OnnxBackend(tmp_path / "m" / "model.onnx").infer_batch(batch)
    assert np.abs(got - model.infer_batch(batch)).max() < 1e-4


@pytest.mark.parametrize("stats", [
    {"method": "percentile_99", "per_channel": True, "offset": [12.0, 3.0], "scale": [200.0, 50.0], "clip": [0.0, 1.0]},
    {"method": "min_max", "per_channel": False, "offset": [5.0, 5.0], "scale": [250.0, 250.0], "clip": [0.0, 1.0]},
    {"method": "fixed_range", "per_channel": True, "offset": [0.0, 0.0], "scale": [4095.0, 4095.0], "clip": [0.0, 1.0]},
    {"method": "z_score", "per_channel": True, "offset": [100.0, 40.0], "scale": [30.0, 12.0], "clip": None},
])
def test_extension_normalisation_reproduces_pixlab(tmp_path, stats):
    model = make_model(stats=stats)
    model.export(tmp_path / "m", "qupath-dl")
    meta = json.loads((tmp_path / "m" / "metadata.json").read_text())
    raw = np.random.default_rng(1).uniform(-50, 400, (2, 16, 16)).astype(np.float32)
    theirs = extension_normalise(raw.transpose(1, 2, 0), meta).transpose(2, 0, 1)
    np.testing.assert_allclose(theirs, apply(raw, stats), rtol=1e-5, atol=1e-5)


def test_per_image_z_score_graph_undoes_the_extension_rescaling(tmp_path):
    stats = {"method": "z_score", "per_channel": True, "offset": [0.0, 0.0], "scale": [1.0, 1.0], "clip": None}
    model = make_model(stats=stats, per_image=True)
    model.export(tmp_path / "m", "qupath-dl")
    meta = json.loads((tmp_path / "m" / "metadata.json").read_text())
    assert meta["channel_config"]["normalization_strategy"] == "Z_SCORE" and "normalization_stats" not in meta
    raw = np.random.default_rng(2).normal(50, 10, (2, 32, 32)).astype(np.float32)
    image_stats = [{"mean": float(c.mean()), "std": float(c.std())} for c in raw]
    theirs = extension_normalise(raw.transpose(1, 2, 0), {**meta, "normalization_stats": image_stats})
    got = OnnxBackend(tmp_path / "m" / "model.onnx").infer_batch(theirs.transpose(2, 0, 1)[None])
    z = (raw - raw.mean(axis=(1, 2), keepdims=True)) / raw.std(axis=(1, 2), keepdims=True)
    assert np.abs(z).max() < 5  # inside the extension's clip, so the results must agree
    assert np.abs(got - model.infer_batch(z[None])).max() < 1e-4


def test_qupath_project_folder_and_bad_names(tmp_path, capsys):
    model = make_model()
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "project.qpproj").write_text("{}")
    written = model.export(tmp_path / "proj", "qupath-dl", name="My nuclei")
    assert written.endswith("classifiers/dl/My_nuclei")
    assert json.loads((tmp_path / "proj/classifiers/dl/My_nuclei/metadata.json").read_text())["id"] == "My_nuclei"
    assert "QuPath project" in capsys.readouterr().out
    with pytest.raises(ValueError, match="classifier id"):
        model.export(tmp_path / "bad name!", "qupath-dl")
    assert not (tmp_path / "bad name!").exists()
