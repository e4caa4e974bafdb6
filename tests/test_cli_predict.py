"""``pixlab predict`` on the command line."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import tifffile
import torch

import pixlab
from pixlab.app.cli import main
from pixlab.image.io import Image, write_ome_tiff
from pixlab.labels.masks import default_colours
from pixlab.model.model import Model
from pixlab.nn.networks import build_network


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    net = build_network("tiny_unet", None, in_channels=2, n_classes=2)
    cfg = pixlab.TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=64, recipe="standard",
                             device="cpu")
    stats = {"method": "min_max", "per_channel": True, "offset": [0.0, 0.0], "scale": [4000.0, 4000.0],
             "clip": None}
    model = Model(net, ["background", "nuclei"], default_colours(2), ["DAPI", "Membrane"], stats, cfg)
    path = tmp_path_factory.mktemp("model") / "model"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for i, shape in enumerate([(100, 120), (70, 90)]):
        img, _ = pixlab.datasets.synthetic_fluorescence(shape=shape, n_channels=2, n_nuclei=5, seed=i)
        write_ome_tiff(folder / f"img{i}.ome.tif", Image(img.data, img.channel_names, pixel_size=0.5))
    return folder


def run(*args):
    return main(["predict", *map(str, args), "--no-progress"])


def test_one_image_to_a_file_with_side_outputs(model_dir, images, tmp_path, capsys):
    out = tmp_path / "res.ome.tif"
    rc = run("--model", model_dir, "--input", images / "img0.ome.tif", "--output", out,
             "--format", "ome-tiff", "csv", "geojson", "png", "--backend", "eager")
    assert rc == 0
    assert sorted(os.listdir(tmp_path)) == ["res.geojson", "res.measurements.csv", "res.ome.tif",
                                            "res.overlay.png"]
    assert "wrote" in capsys.readouterr().out
    assert tifffile.imread(out).shape == (2, 100, 120)
    assert json.loads((tmp_path / "res.geojson").read_text())["type"] == "FeatureCollection"

    # The same output again: refused (one line, exit 2), kept as it was.
    stamp = os.stat(out).st_mtime_ns
    rc = run("--model", model_dir, "--input", images / "img0.ome.tif", "--output", out)
    err = capsys.readouterr().err
    assert rc == 2 and "already exists" in err and "--overwrite" in err and "Traceback" not in err
    assert os.stat(out).st_mtime_ns == stamp
    assert run("--model", model_dir, "--input", images / "img0.ome.tif", "--output", out,
               "--overwrite", "--output-type", "labels") == 0
    assert set(np.unique(tifffile.imread(out))) <= {1, 2}


def test_folder_batch_reports_a_bad_image_and_resumes(model_dir, images, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for name in os.listdir(images):
        os.link(images / name, src / name)
    (src / "zz_broken.tif").write_bytes(b"II*\x00 truncated")
    out = tmp_path / "out"
    rc = run("--model", model_dir, "--input", src, "--output", out, "--format", "ome-zarr", "csv",
             "--backend", "eager")
    captured = capsys.readouterr()
    assert rc == 1
    assert "zz_broken.tif" in captured.err and "cannot read image" in captured.err
    assert "Traceback" not in captured.err
    assert "2 done, 0 skipped (outputs exist), 1 failed" in captured.out
    assert sorted(os.listdir(out)) == ["img0.measurements.csv", "img0.ome.zarr", "img1.measurements.csv",
                                       "img1.ome.zarr", "measurements.csv"]
    os.remove(src / "zz_broken.tif")
    rc = run("--model", model_dir, "--input", src, "--output", out, "--format", "ome-zarr", "csv")
    assert rc == 0 and "0 done, 2 skipped" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--output", "{tmp}/o.ome.tif", "--format", "csv"], "does not look like a csv file"),
    (["--output", "{tmp}/o.h5"], "cannot tell what to write"),
    (["--output", "{tmp}/missing/o.ome.tif"], "does not exist"),
])
def test_user_errors_are_one_line(model_dir, images, tmp_path, capsys, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    assert run("--model", model_dir, "--input", images / "img0.ome.tif", *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_channel_mismatch_names_the_expected_channels(model_dir, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "one.tif", np.zeros((64, 64), np.uint16))
    assert run("--model", model_dir, "--input", tmp_path / "one.tif", "--output", tmp_path / "o.ome.tif") == 2
    err = capsys.readouterr().err
    assert "1 channel(s)" in err and "expects 2 channel(s) ['DAPI', 'Membrane']" in err


def test_objects_flags_reach_the_outputs(model_dir, images, tmp_path, capsys):
    import pandas as pd

    out = tmp_path / "o.geojson"
    rc = run("--model", model_dir, "--input", images / "img0.ome.tif", "--output", out, "--format", "geojson",
             "objects", "csv", "--objects", "annotation", "--min-object-um2", "2", "--fill-holes-um2", "inf",
             "--smooth", "1", "--backend", "eager")
    assert rc == 0
    assert sorted(os.listdir(tmp_path)) == ["o.geojson", "o.measurements.csv", "o.objects.csv"]
    features = json.loads(out.read_text())["features"]
    table = pd.read_csv(tmp_path / "o.objects.csv")
    assert len(features) == len(table) and (table["area_um2"] >= 2).all()
    assert {f["properties"]["objectType"] for f in features} <= {"annotation"}
    assert "objects" in pd.read_csv(tmp_path / "o.measurements.csv").columns
    rc = run("--model", model_dir, "--input", images / "img0.ome.tif", "--output", tmp_path / "p.geojson",
             "--format", "geojson", "objects", "--objects", "none")
    assert rc == 2 and "objects='none'" in capsys.readouterr().err


def test_scheduler_hands_the_batch_to_pixlab_cluster(model_dir, images, tmp_path, monkeypatch, capsys):
    calls = {}

    def predict_many(model_dir_, inputs, out_dir, client=None, scheduler=None, overwrite=False, **kwargs):
        calls.update(model=model_dir_, inputs=inputs, out=out_dir, scheduler=scheduler, overwrite=overwrite,
                     **kwargs)
        return [{"input": inputs[0], "status": "done"}, {"input": inputs[1], "status": "failed", "error": "x"}]

    monkeypatch.setitem(sys.modules, "pixlab.inference.cluster", types.SimpleNamespace(predict_many=predict_many))
    rc = run("--model", model_dir, "--input", images, "--output", tmp_path / "o", "--scheduler", "local",
             "--format", "ome-tiff", "geojson", "--backend", "onnxruntime")
    assert rc == 1 and "failed: " in capsys.readouterr().err
    assert calls["scheduler"] == "local" and calls["overwrite"] is False
    assert calls["formats"] == ["ome-tiff", "geojson"] and calls["backend"] == "onnxruntime"
    assert calls["progress"] is False and calls["device"] is None
    assert [os.path.basename(p) for p in calls["inputs"]] == ["img0.ome.tif", "img1.ome.tif"]


def test_python_m_pixlab_predict_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pixlab", "predict", "--model", str(tmp_path / "nope"),
                           "--input", str(tmp_path / "nope.tif"), "--output", str(tmp_path / "o.ome.tif")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("pixlab: error: input") and "Traceback" not in proc.stderr


def test_channels_selects_and_maps_the_images_channels(model_dir, images, tmp_path, capsys):
    src = pixlab.open_image(images / "img0.ome.tif")
    data = np.asarray(src.read())
    three = Image(np.stack([data[1], data[0] // 2, data[0]]), ["Membrane", "junk", "Nuclear"], pixel_size=0.5)
    write_ome_tiff(tmp_path / "three.ome.tif", three)
    assert run("--model", model_dir, "--input", images / "img0.ome.tif", "--output", tmp_path / "ref.ome.tif") == 0
    argv = ["--model", model_dir, "--input", tmp_path / "three.ome.tif", "--backend", "eager"]
    assert run(*argv, "--output", tmp_path / "no.ome.tif") == 2
    err = capsys.readouterr().err
    assert "['DAPI'] not found" in err and "['Membrane', 'junk', 'Nuclear']" in err and "--channels" in err
    ref = tifffile.imread(tmp_path / "ref.ome.tif")
    for i, sel in enumerate(("Nuclear,Membrane", "2,0", "DAPI=Nuclear,Membrane=Membrane")):
        assert run(*argv, "--channels", sel, "--output", tmp_path / f"o{i}.ome.tif") == 0, capsys.readouterr().err
        np.testing.assert_array_equal(tifffile.imread(tmp_path / f"o{i}.ome.tif"), ref)


def test_tile_size_follows_the_training_rule(model_dir, images, tmp_path, capsys):
    assert run("--model", model_dir, "--input", images / "img0.ome.tif", "--output", tmp_path / "o.ome.tif",
               "--tile-size", "100") == 2
    err = capsys.readouterr().err
    assert err.startswith("pixlab: error: --tile-size=100 is not divisible by 32") and "use 96 or 128" in err
    assert not (tmp_path / "o.ome.tif").exists()
    with pytest.raises(ValueError, match=r"tile_size=100 is not divisible by 32"):
        pixlab.load_model(model_dir).predict(np.zeros((2, 64, 64), np.float32), tile_size=100)


def test_help_says_each_default_once(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: the model's)" in text and "(default: None)" not in text
    assert "(default: the model's) (default" not in text


def test_warnings_read_as_pixlabs_own_lines(model_dir, tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((2, 64, 64), np.uint16), photometric="minisblack")
    r = subprocess.run([sys.executable, "-m", "pixlab", "predict", "--model", str(model_dir), "--input",
                        str(tmp_path / "plain.tif"), "--output", str(tmp_path / "o.ome.tif"), "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if "by position" in line]
    assert len(lines) == 1 and lines[0].startswith("pixlab: warning: image 'plain' has 2 channel(s)"), r.stderr
    assert ".py:" not in r.stderr  # no library file path
