"""predict_file / predict_folder: streamed whole-image prediction into files."""

import errno
import json
import os

import numpy as np
import pytest
import tifffile
import torch

import pixlab
from pixlab.image.io import Image, write_ome_tiff
from pixlab.labels.masks import default_colours
from pixlab.model.model import Model
from pixlab.nn.networks import build_network
from pixlab.inference.predict import predict_file, predict_folder

CLASSES = ["background", "nuclei", "membrane"]
STATS = {"method": "min_max", "per_channel": True, "offset": [0.0, 0.0], "scale": [4000.0, 4000.0], "clip": None}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_model(downsample=1.0, network=None):
    torch.manual_seed(0)
    net = network if network is not None else build_network("tiny_unet", None, in_channels=2, n_classes=3)
    cfg = pixlab.TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=64, recipe="standard",
                             device="cpu", downsample=downsample)
    return Model(net, CLASSES, default_colours(3), ["DAPI", "Membrane"], STATS, cfg)


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def image():
    img, _ = pixlab.datasets.synthetic_fluorescence(shape=(150, 170), n_channels=2, n_nuclei=10, seed=3)
    return Image(img.data, img.channel_names, pixel_size=(0.5, 0.5))


@pytest.fixture
def image_file(tmp_path, image):
    path = tmp_path / "in.ome.tif"
    write_ome_tiff(path, image)
    return path


def read_ome_zarr(path):
    import zarr

    group = zarr.open_group(str(path), mode="r")
    meta = group.attrs["ome"]
    names = [c["label"] for c in meta["omero"]["channels"]]
    scale = meta["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    levels = [group[d["path"]][:] for d in meta["multiscales"][0]["datasets"]]
    return levels, names, tuple(scale[1:])


def test_float32_output_equals_model_predict(model, image, image_file, tmp_path):
    res = predict_file(model, image_file, tmp_path / "out.ome.tif", dtype="float32")
    expected = model.predict(image)
    got = pixlab.open_image(tmp_path / "out.ome.tif")
    assert got.shape == expected.shape == res["shape"]
    assert got.channel_names == CLASSES
    assert got.pixel_size == pytest.approx((0.5, 0.5))
    assert len(got.levels) == 1  # 170 px fits in one 256 px tile
    np.testing.assert_allclose(got.read(), expected, atol=1e-4)
    assert res["backend"] == "eager" and res["tiles"] == 12


def test_ome_zarr_output(model, image, image_file, tmp_path):
    predict_file(model, image_file, tmp_path / "out.ome.zarr", dtype="float16", tiff_tile=64)
    levels, names, scale = read_ome_zarr(tmp_path / "out.ome.zarr")
    assert names == CLASSES and scale == pytest.approx((0.5, 0.5))
    assert [lv.shape for lv in levels] == [(3, 150, 170), (3, 75, 85), (3, 37, 42)]
    assert levels[0].dtype == np.float16
    np.testing.assert_allclose(levels[0], model.predict(image), atol=1e-3)


def test_uint8_float16_and_labels(model, image, image_file, tmp_path):
    expected = model.predict(image)
    predict_file(model, image_file, tmp_path / "u8.ome.tif", tiff_tile=64)
    with pytest.raises(ValueError, match="float16 is not an OME-TIFF pixel type"):
        predict_file(model, image_file, tmp_path / "f16.ome.tif", dtype="float16")
    predict_file(model, image_file, tmp_path / "lab.ome.tif", output="labels", tiff_tile=64)
    u8 = tifffile.imread(tmp_path / "u8.ome.tif")
    assert u8.dtype == np.uint8 and np.abs(u8 / 255.0 - expected).max() <= 0.5 / 255 + 1e-6
    with tifffile.TiffFile(tmp_path / "lab.ome.tif") as tif:
        series = tif.series[0]
        labels = series.asarray()
        assert len(series.levels) == 3  # 64 px tiles: 150x170 -> 75x85 -> 37x42
        assert set(np.unique(series.levels[2].asarray())) <= {1, 2, 3}  # ids never averaged
    np.testing.assert_array_equal(labels, np.argmax(expected, axis=0) + 1)


class Constant(torch.nn.Module):
    """Ignores the image: the same logits everywhere."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 1)
        torch.nn.init.zeros_(self.conv.weight)
        with torch.no_grad():
            self.conv.bias.copy_(torch.tensor([0.3, -1.1, 0.7]))

    def forward(self, x):
        return self.conv(x)


def test_constant_network_gives_an_exactly_constant_map(image_file, tmp_path):
    model = make_model(network=Constant())
    predict_file(model, image_file, tmp_path / "c.ome.tif", dtype="float32", window="gaussian")
    got = tifffile.imread(tmp_path / "c.ome.tif")
    expected = torch.softmax(torch.tensor([0.3, -1.1, 0.7]), 0).numpy()
    for k in range(3):
        assert np.unique(got[k]).tolist() == [expected[k]]  # exactly one value: no seams at all


def test_measurements_geojson_and_overlay(model, image, image_file, tmp_path):
    import shapely.geometry
    from PIL import Image as PILImage

    res = predict_file(model, image_file, tmp_path / "r.ome.tif", measurements=True, geojson=True,
                       overlay=True, objects="none")  # one MultiPolygon per class (objects: test_objects.py)
    labels = np.argmax(model.predict(image), axis=0) + 1
    assert set(res["outputs"]) == {"ome-tiff", "csv", "geojson", "png"}
    table = res["measurements"]
    assert table["pixels"].tolist() == [int((labels == k).sum()) for k in (1, 2, 3)]
    np.testing.assert_allclose(table["area_um2"], table["pixels"] * 0.25)
    import pandas as pd
    assert pd.read_csv(tmp_path / "r.measurements.csv")["pixels"].tolist() == table["pixels"].tolist()

    gj = json.loads((tmp_path / "r.geojson").read_text())
    assert gj["type"] == "FeatureCollection"
    area = 0.0
    for feature in gj["features"]:
        geom = shapely.geometry.shape(feature["geometry"])
        assert geom.is_valid
        cls = feature["properties"]["classification"]
        k = CLASSES.index(cls["name"]) + 1
        assert cls["color"] == default_colours(3)[k - 1]
        assert geom.area == pytest.approx((labels == k).sum())
        area += geom.area
    assert area == pytest.approx(150 * 170)

    with PILImage.open(tmp_path / "r.overlay.png") as png:
        assert png.size == (170, 150) and png.mode == "RGB"


def test_geojson_of_a_large_prediction_is_traced_on_a_reduced_map(model, image_file, tmp_path):
    import shapely.geometry

    res = predict_file(model, image_file, None, geojson=tmp_path / "g.geojson", geojson_max_pixels=2000,
                       objects="none")
    assert res["preview_downsample"] == 4  # 150x170 -> 38x43 = 1634 px
    gj = json.loads((tmp_path / "g.geojson").read_text())
    bounds = shapely.geometry.shape(gj["features"][0]["geometry"]).bounds
    assert bounds[0] >= 0 and bounds[1] >= 0 and bounds[2] <= 172 and bounds[3] <= 152
    total = sum(shapely.geometry.shape(f["geometry"]).area for f in gj["features"])
    assert total == pytest.approx(38 * 43 * 16)  # coordinates are full-resolution pixels


def test_downsampled_model_uses_the_pyramid_level(image, tmp_path):
    path = tmp_path / "pyr.ome.tif"
    write_ome_tiff(path, image, tile=64)  # 150x170 -> level 1 is 75x85
    model2 = make_model(downsample=2.0)
    res = predict_file(model2, path, tmp_path / "o.ome.tif", dtype="float32", measurements=True)
    got = pixlab.open_image(tmp_path / "o.ome.tif")
    assert got.shape == (3, 75, 85) and got.pixel_size == pytest.approx((1.0, 1.0))
    level1 = Image(pixlab.open_image(path).levels[1].compute(), image.channel_names)
    np.testing.assert_allclose(got.read(), make_model().predict(level1), atol=1e-4)
    assert res["measurements"]["area_px"].sum() == 75 * 85 * 4


def test_onnxruntime_and_auto_backends_agree_with_eager(model, image, image_file, tmp_path):
    expected = model.predict(image)
    res = predict_file(model, image_file, tmp_path / "o.ome.tif", dtype="float32", backend="onnxruntime")
    assert res["backend"] == "onnxruntime"
    np.testing.assert_allclose(tifffile.imread(tmp_path / "o.ome.tif"), expected, atol=1e-4)
    res = predict_file(model, image_file, tmp_path / "a.ome.tif", dtype="float32", backend="auto")
    assert res["backend"] in ("eager", "channels_last", "onnxruntime")  # the CPU candidates: timing picks
    np.testing.assert_allclose(tifffile.imread(tmp_path / "a.ome.tif"), expected, atol=1e-3)


# -- bad input --------------------------------------------------------------------------------------


def test_channel_count_mismatch_names_both_counts_and_the_expected_channels(model, tmp_path):
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.zeros((3, 80, 80), np.uint8), photometric="minisblack")
    with pytest.raises(ValueError, match=r"3 channel.*expects 2 channel.*'DAPI', 'Membrane'"):
        predict_file(model, path, tmp_path / "o.ome.tif")
    assert sorted(os.listdir(tmp_path)) == ["rgb.tif"]


def test_truncated_and_corrupt_tiffs_are_clear_errors_and_leave_nothing(model, image, tmp_path):
    data = np.asarray(image.data)
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, data, tile=(64, 64), compression="zlib", photometric="minisblack")
    raw = good.read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="cannot read image .*cut.tif"):
        predict_file(model, tmp_path / "cut.tif", tmp_path / "o1.ome.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(ValueError, match="cannot read image .*junk.tif"):
        predict_file(model, tmp_path / "junk.tif", tmp_path / "o2.ome.tif")
    # A damaged tile in the middle of the file only shows up when it is read.
    with tifffile.TiffFile(good) as tif:
        offset, count = tif.pages[0].dataoffsets[4], tif.pages[0].databytecounts[4]
    bad = bytearray(raw)
    bad[offset: offset + count] = b"\x13" * count
    (tmp_path / "bad.tif").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="cannot read image .*bad.tif.*damaged"):
        predict_file(model, tmp_path / "bad.tif", tmp_path / "o3.ome.tif", measurements=True)
    assert sorted(os.listdir(tmp_path)) == ["bad.tif", "cut.tif", "good.tif", "junk.tif"]


def test_unwritable_or_missing_output_folder(model, image_file, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        predict_file(model, image_file, tmp_path / "nope" / "o.ome.tif")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # Tests may run as root, for whom chmod does not make a folder read-only.
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.fspath(p) == os.fspath(locked)
                        else real_access(p, mode))
    with pytest.raises(PermissionError, match="not writable"):
        predict_file(model, image_file, locked / "o.ome.tif")
    with pytest.raises(PermissionError, match="not writable"):
        predict_file(model, image_file, tmp_path / "o.ome.tif", geojson=locked / "o.geojson")
    assert not (tmp_path / "o.ome.tif").exists()


def test_existing_output_is_refused_unless_overwrite(model, image_file, tmp_path):
    out = tmp_path / "o.ome.tif"
    out.write_bytes(b"previous result")
    with pytest.raises(FileExistsError, match="already exists.*overwrite"):
        predict_file(model, image_file, out)
    assert out.read_bytes() == b"previous result"
    predict_file(model, image_file, out, overwrite=True)
    assert tifffile.imread(out).shape == (3, 150, 170)


@pytest.mark.parametrize("suffix, target", [(".ome.tif", "_TiffSpool"), (".ome.zarr", "_ZarrLevels")])
def test_disk_full_mid_write_leaves_no_file_and_no_temp(model, image_file, tmp_path, monkeypatch, suffix, target):
    import pixlab.inference.outputs as outputs

    cls = getattr(outputs, target)
    real_emit = cls.emit
    calls = []

    def failing_emit(self, level, y0, block):
        calls.append(level)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_emit(self, level, y0, block)

    monkeypatch.setattr(cls, "emit", failing_emit)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(OSError) as info:
        predict_file(model, image_file, tmp_path / ("o" + suffix), tiff_tile=32, measurements=True)
    assert info.value.errno == errno.ENOSPC
    assert sorted(os.listdir(tmp_path)) == before  # no output, no spool, no temp folder


# -- folders ----------------------------------------------------------------------------------------


def test_predict_folder_resumes_and_survives_a_bad_image(model, image, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    write_ome_tiff(src / "a.ome.tif", image)
    write_ome_tiff(src / "b.tif", Image(np.asarray(image.data)[:, :90, :100], image.channel_names))
    (src / "broken.tif").write_bytes(b"II*\x00garbage")
    out = tmp_path / "out"
    results = predict_folder(model, src, out, formats=["ome-tiff", "csv"], progress=False)
    assert [r["status"] for r in results] == ["done", "done", "failed"]
    assert "broken.tif" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["a.measurements.csv", "a.ome.tif", "b.measurements.csv", "b.ome.tif",
                                       "measurements.csv"]
    import pandas as pd
    table = pd.read_csv(out / "measurements.csv")
    assert table["image"].tolist() == ["a"] * 3 + ["b"] * 3
    assert table.groupby("image")["pixels"].sum().tolist() == [150 * 170, 90 * 100]

    os.remove(out / "b.measurements.csv")  # as if interrupted before this output
    stamp = os.stat(out / "a.ome.tif").st_mtime_ns
    results = predict_folder(model, [src / "a.ome.tif", src / "b.tif"], out, formats=["ome-tiff", "csv"],
                             progress=False)
    assert [r["status"] for r in results] == ["skipped", "done"]
    assert (out / "b.measurements.csv").exists() and os.stat(out / "a.ome.tif").st_mtime_ns == stamp
    results = predict_folder(model, src / "a.ome.tif", out, formats=["ome-tiff"], overwrite=True, progress=False)
    assert results[0]["status"] == "done" and os.stat(out / "a.ome.tif").st_mtime_ns != stamp


def test_predict_folder_rejects_clashing_names_and_missing_inputs(model, image, tmp_path):
    write_ome_tiff(tmp_path / "x.ome.tif", image)
    write_ome_tiff(tmp_path / "x.tif", image)
    with pytest.raises(ValueError, match="same output names"):
        predict_folder(model, [tmp_path / "x.ome.tif", tmp_path / "x.tif"], tmp_path / "o", progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        predict_folder(model, [tmp_path / "missing.tif"], tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match="one raster format"):
        predict_folder(model, tmp_path / "x.tif", tmp_path / "o", formats=["ome-tiff", "ome-zarr"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_path_amp_and_batch_size_from_free_memory(image, image_file, tmp_path):
    from pixlab.inference.predict import cuda_batch_size

    cpu = make_model()
    gpu = make_model().to("cuda")
    bs = cuda_batch_size(gpu, 64, 2)
    assert 1 <= bs <= 64
    predict_file(gpu, image_file, tmp_path / "g.ome.tif", dtype="float32")
    np.testing.assert_allclose(tifffile.imread(tmp_path / "g.ome.tif"), cpu.predict(image), atol=2e-2)


def test_on_a_cpu_tiles_are_run_one_at_a_time(model):
    # On a few cores a batch of tiles is not faster than the tiles one by one, and each tile in a
    # batch holds its activations at once (batch 4 of 512 px tiles: +0.4 GiB and 1.6x the CPU time
    # on the whole-slide benchmark's level); an explicit batch_size still wins.
    from pixlab.inference.backends import inference_batch_size
    assert model.device.type == "cpu"
    assert inference_batch_size(model, 512, 3) == 1
    assert inference_batch_size(model, 512, 3, batch_size=6) == 6
