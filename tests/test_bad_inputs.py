"""Bad inputs, one table, through the API and the CLI: one clear line, no traceback, no partial output.

Each row makes its bad input in a small shared workspace, then
- API: the call raises one of pixlab's user-error types with a one-line message that names the problem
  (checked by a regular expression) and the value;
- CLI (``pixlab.app.cli.main``, in-process for speed; two rows also run in a real process): exit status 2,
  exactly one stderr line ``pixlab: error: ...`` matching the same expression, no traceback;
- both: the output folder holds exactly what it held before (no partial file, no temporary file).
"""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest

import pixlab
from pixlab.app.cli import main

USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, FileExistsError, NotADirectoryError, IsADirectoryError)
CLASSES = ["bg", "nuclei"]
TINY = dict(architecture="tiny_unet", pretrained=False, tile_size=64, epochs=1, batch_size=2,
            patches_per_epoch=4, recipe="standard", device="cpu")
TRAIN_SETS = [a for k, v in TINY.items() for a in ("--set", f"{k}={str(v).lower()}")]


class _Evil:
    """Unpickling this creates the file ``path`` (what a malicious checkpoint would do)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Good and bad input files, and a small trained model bundle."""
    import tifffile

    from pixlab.datasets import strokes_from_mask, synthetic_fluorescence
    from pixlab.image.io import write_ome_tiff
    from pixlab.labels.masks import save_labels

    d = tmp_path_factory.mktemp("bad-inputs")
    img, truth = synthetic_fluorescence(shape=(64, 64), n_channels=2, n_nuclei=5, seed=2)
    labels = strokes_from_mask(truth, strokes_per_class=3, seed=2)
    ns = SimpleNamespace(d=d, labels_array=labels)
    ns.image, ns.labels = d / "img.ome.tif", d / "labels.png"
    write_ome_tiff(ns.image, img.read(), channel_names=img.channel_names)
    save_labels(ns.labels, labels)

    ns.empty = d / "empty.tif"
    ns.empty.write_bytes(b"")
    ns.random = d / "random.tif"
    ns.random.write_bytes(np.random.default_rng(0).bytes(4096))
    ns.truncated = d / "truncated.tif"
    whole = ns.image.read_bytes()
    ns.truncated.write_bytes(whole[: len(whole) // 2])
    ns.axes4d = d / "stack4d.tif"
    tifffile.imwrite(ns.axes4d, np.zeros((2, 3, 32, 32), np.uint8), metadata={"axes": "TZYX"})
    ns.nans = d / "nans.tif"
    a = img.read().astype(np.float32)
    a[0, 10:12, 10:12] = np.nan
    tifffile.imwrite(ns.nans, a)
    ns.one_channel = d / "one_channel.tif"
    tifffile.imwrite(ns.one_channel, img.read()[0])
    ns.small_labels = d / "small.labels.png"
    save_labels(ns.small_labels, labels[:32, :32])
    ns.class5_labels = d / "class5.labels.png"
    l5 = labels.copy()
    l5[0, 0] = 5
    save_labels(ns.class5_labels, l5)
    ns.one_class_labels = d / "one_class.labels.png"
    l1 = labels.copy()
    l1[l1 == 2] = 0
    save_labels(ns.one_class_labels, l1)
    ns.broken_geojson = d / "broken.geojson"
    ns.broken_geojson.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10]]]},
        "properties": {"objectType": "annotation", "classification": {"name": "bg"}}}]}))
    ns.marker = d / "pwned-by-pickle"
    ns.evil = d / "model.pth"
    ns.evil.write_bytes(pickle.dumps(_Evil(str(ns.marker))))

    model = pixlab.train([(img, labels)], pixlab.TrainConfig(**TINY), class_names=CLASSES, progress=False)
    ns.model_dir = d / "model"
    model.save(ns.model_dir)
    ns.model = model
    ns.no_metadata = d / "model-without-metadata"
    ns.no_metadata.mkdir()
    (ns.no_metadata / "model.safetensors").write_bytes((ns.model_dir / "model.safetensors").read_bytes())
    return ns


def _train_api(image, labels, **changes):
    def call(ws, out):
        model = pixlab.train([(image(ws), labels(ws))], pixlab.TrainConfig(**{**TINY, **changes}),
                             class_names=CLASSES, progress=False)
        model.save(out / "model")
    return call


def _train_cli(image, labels, *extra, output="model"):
    def argv(ws, out):
        return (["train", "--image", str(image(ws)), "--labels", str(labels(ws)), "--classes", *CLASSES,
                 "--output", str(out / output)] + TRAIN_SETS + list(extra))
    return argv


def _predict_cli(inp, model=lambda ws: ws.model_dir, output="p.ome.tif"):
    def argv(ws, out):
        return ["predict", "--model", str(model(ws)), "--input", str(inp(ws)), "--output", str(out / output)]
    return argv


def _make_file(ws, out):
    (out / "file").write_text("a regular file where a folder is expected")


IMG, LAB = (lambda ws: ws.image), (lambda ws: ws.labels)


@dataclass
class Case:
    id: str
    error: type
    match: str  # regular expression the one-line message must contain (names problem and value)
    api: Callable
    cli: Callable | None
    prep: Callable | None = None
    cli_xfail: str | None = None  # a known bug of the CLI row (strict xfail: it flags the fix)


CASES = [
    Case("empty-file", ValueError, r"cannot read image '[^']*empty\.tif'",
         lambda ws, out: pixlab.open_image(ws.empty), _predict_cli(lambda ws: ws.empty)),
    Case("random-bytes-named-tif", ValueError, r"cannot read image '[^']*random\.tif': not a TIFF",
         lambda ws, out: pixlab.open_image(ws.random), _train_cli(lambda ws: ws.random, LAB)),
    Case("truncated-tiff", ValueError, r"'[^']*truncated\.tif': file is truncated",
         lambda ws, out: pixlab.open_image(ws.truncated), _predict_cli(lambda ws: ws.truncated)),
    Case("4d-tiff-unexpected-axes", ValueError, r"stack4d\.tif': axes 'TZYX' .*not supported",
         lambda ws, out: pixlab.open_image(ws.axes4d), _train_cli(lambda ws: ws.axes4d, LAB)),
    Case("image-with-nans", ValueError, r"image 'nans' contains NaN",
         _train_api(lambda ws: ws.nans, LAB), _train_cli(lambda ws: ws.nans, LAB)),
    Case("labels-shape-mismatch", ValueError, r"labels have shape \(32, 32\) but the image is \(64, 64\)",
         _train_api(IMG, lambda ws: ws.small_labels), _train_cli(IMG, lambda ws: ws.small_labels)),
    Case("labels-class-id-beyond-class-list", ValueError, r"class id 5 but only 2 class names",
         _train_api(IMG, lambda ws: ws.class5_labels), _train_cli(IMG, lambda ws: ws.class5_labels)),
    Case("class-with-no-labels", ValueError, r"\['nuclei'\] have no labelled pixel",
         _train_api(IMG, lambda ws: ws.one_class_labels), _train_cli(IMG, lambda ws: ws.one_class_labels)),
    Case("unknown-encoder", ValueError, r"unknown encoder 'resnet999'",
         _train_api(IMG, LAB, architecture="unet", encoder="resnet999"),
         _train_cli(IMG, LAB, "--set", "architecture=unet", "--set", "encoder=resnet999")),
    Case("tile-size-not-multiple-of-32", ValueError, r"tile_size=100 is not divisible by 32 .*; use 96 or 128",
         lambda ws, out: pixlab.TrainConfig(tile_size=100), _train_cli(IMG, LAB, "--set", "tile_size=100")),
    Case("negative-learning-rate", ValueError, r"learning_rate=-0\.1 is below the minimum",
         lambda ws, out: pixlab.TrainConfig(learning_rate=-0.1),
         _train_cli(IMG, LAB, "--set", "learning_rate=-0.1")),
    Case("unknown-config-field", ValueError, r"unknown TrainConfig field\(s\) 'epoch' \(did you mean 'epochs'\?\)",
         lambda ws, out: pixlab.TrainConfig.from_dict({"epoch": 3}), _train_cli(IMG, LAB, "--set", "epoch=3")),
    Case("labels-is-a-folder", IsADirectoryError, r"label file '[^']*bad-inputs[^']*' is a folder; give the label file of one image",
         _train_api(IMG, lambda ws: ws.d), _train_cli(IMG, lambda ws: ws.d)),
    Case("set-list-written-as-text", ValueError, r"--set 'channels=DAPI,Membrane': values are YAML.*--set 'channels=\[DAPI, Membrane\]'",
         lambda ws, out: __import__("pixlab.app.commands.train").app.commands.train.parse_set(["channels=DAPI,Membrane"]),
         _train_cli(IMG, LAB, "--set", "channels=DAPI,Membrane")),
    Case("predict-tile-size-not-multiple-of-32", ValueError, r"tile[_-]size=100 is not divisible by 32 .*; use 96 or 128",
         lambda ws, out: pixlab.predict_file(ws.model, ws.image, out / "p.ome.tif", tile_size=100),
         lambda ws, out: _predict_cli(IMG)(ws, out) + ["--tile-size", "100"]),
    Case("missing-image-file", FileNotFoundError, r"'[^']*nope\.tif' does not exist",
         lambda ws, out: pixlab.open_image(ws.d / "nope.tif"), _predict_cli(lambda ws: ws.d / "nope.tif")),
    Case("model-dir-missing-metadata", FileNotFoundError, r"model-without-metadata' has no metadata\.json",
         lambda ws, out: pixlab.load_model(ws.no_metadata), _predict_cli(IMG, model=lambda ws: ws.no_metadata)),
    Case("model-other-channel-count", ValueError, r"has 1 channel\(s\) .* but the model expects 2 channel\(s\)",
         lambda ws, out: pixlab.predict_file(ws.model, ws.one_channel, out / "p.ome.tif"),
         _predict_cli(lambda ws: ws.one_channel)),
    Case("pickle-model-file", ValueError, r"model\.pth' is a PyTorch pickle file; pixlab does not unpickle",
         lambda ws, out: pixlab.load_model(ws.evil), _predict_cli(IMG, model=lambda ws: ws.evil)),
    # Root can write anywhere, so "unwritable" is a folder path that is really a regular file.
    Case("unwritable-output-folder", NotADirectoryError, r"output folder '[^']*file' is a file",
         lambda ws, out: pixlab.predict_file(ws.model, ws.image, out / "file" / "p.ome.tif"),
         _predict_cli(IMG, output="file/p.ome.tif"), prep=_make_file),
    Case("unwritable-model-folder", NotADirectoryError, r"output folder '[^']*file' is a file",
         lambda ws, out: ws.model.save(out / "file" / "model"), _train_cli(IMG, LAB, output="file/model"),
         prep=_make_file),
    Case("geojson-broken-geometry", ValueError, r"feature 0 \('bg'\) has a geometry that cannot be read",
         lambda ws, out: __import__("pixlab.labels.masks").labels.masks.geojson_to_labels(ws.broken_geojson, (64, 64), CLASSES),
         None),  # no command reads GeoJSON labels (train takes PNG/TIFF masks)
]


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def out(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


def test_the_table_covers_the_issue():
    assert len(CASES) >= 15 and len({c.id for c in CASES}) == len(CASES)
    assert sum(c.cli is not None for c in CASES) >= 15


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_api_raises_one_clear_line_and_writes_nothing(case, ws, out):
    if case.prep:
        case.prep(ws, out)
    before = _snapshot(out)
    with pytest.raises(USER_ERRORS) as info:
        case.api(ws, out)
    assert type(info.value) is case.error, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert "\n" not in message.strip()
    assert re.search(case.match, message), message
    assert _snapshot(out) == before, "a partial or temporary file was left behind"
    assert not ws.marker.exists()


CLI_CASES = [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.cli_xfail)] if c.cli_xfail else [])
             for c in CASES if c.cli is not None]


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_prints_one_line_exits_2_and_writes_nothing(case, ws, out, capsys):
    if case.prep:
        case.prep(ws, out)
    before = _snapshot(out)
    rc = main(case.cli(ws, out))
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert rc == 2
    assert "Traceback" not in captured.err + captured.out
    assert len(lines) == 1 and lines[0].startswith("pixlab: error: "), captured.err
    assert re.search(case.match, lines[0]), lines[0]
    assert _snapshot(out) == before, "a partial or temporary file was left behind"
    assert not ws.marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("argv, match", [
    (lambda ws, out: ["info", str(ws.truncated)], r"truncated\.tif': file is truncated"),
    (lambda ws, out: ["predict", "--model", str(ws.evil), "--input", str(ws.image), "--output",
                      str(out / "p.ome.tif")], r"PyTorch pickle file"),
], ids=["truncated-tiff", "pickle-model"])
def test_a_real_cli_process_prints_one_line_and_no_traceback(argv, match, ws, out):
    r = subprocess.run([sys.executable, "-m", "pixlab", *argv(ws, out)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and re.search(match, lines[0]), r.stderr
    assert list(out.iterdir()) == [] and not ws.marker.exists()
