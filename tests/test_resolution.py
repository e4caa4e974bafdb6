"""The physical resolution contract (issue 14): bundles record the training pixel size; prediction at
another pixel size reads the matching pyramid level or resamples, says so, and writes the right size."""

import warnings

import numpy as np
import pytest
import tifffile
import torch

import pixlab
from pixlab.image.io import Image, open_image, write_ome_tiff
from pixlab.image.resolution import network_pixel_size, resample, training_pixel_size, working_image
from pixlab.labels.masks import default_colours
from pixlab.model.model import Model
from pixlab.nn.networks import build_network

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STATS = {"method": "min_max", "per_channel": True, "offset": [0.0, 0.0], "scale": [4000.0, 4000.0], "clip": None}


def make_model(pixel_size=(0.5, 0.5), downsample=1.0):
    torch.manual_seed(0)
    net = build_network("tiny_unet", None, in_channels=2, n_classes=2)
    cfg = pixlab.TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=64, recipe="standard",
                             device="cpu", downsample=downsample)
    meta = {} if pixel_size is None else {"pixel_size_um": list(pixel_size)}
    return Model(net, ["background", "nuclei"], default_colours(2), ["DAPI", "Membrane"], STATS, cfg, metadata=meta)


@pytest.fixture(scope="module")
def base():
    img, _ = pixlab.datasets.synthetic_fluorescence(shape=(96, 128), n_channels=2, n_nuclei=8, seed=3)
    return np.asarray(img.data)


def ramp(ny, nx):
    yy, xx = np.mgrid[:ny, :nx].astype(np.float32)
    return np.stack([3 * yy + 2 * xx, yy - xx + 500])


def test_network_pixel_size_includes_the_training_downsample():
    assert network_pixel_size(make_model((0.25, 0.25), downsample=2)) == (0.5, 0.5)
    assert network_pixel_size(make_model(None)) is None


def test_same_resolution_is_left_alone(base):
    img = Image(base, ["DAPI", "Membrane"], pixel_size=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        work, ds = working_image(img, make_model())
    assert work is img and ds == 1.0


def test_an_image_already_at_a_downsampled_models_pixel_size_is_left_alone_silently(base):
    # A slide's pyramid level (or a crop of it) at 2 µm/px and a model trained at 4x on 0.5 µm/px:
    # nothing to do and nothing to say (it used to warn "predicting on the image as is").
    img = Image(base, ["DAPI", "Membrane"], pixel_size=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        work, ds = working_image(img, make_model(downsample=4))
    assert work is img and ds == 1.0


def test_40x_slide_with_20x_model_reads_the_2x_level(tmp_path, base):
    fine = np.repeat(np.repeat(base, 2, axis=1), 2, axis=2)  # the same picture at 0.25 µm/px
    write_ome_tiff(tmp_path / "40x.ome.tif", fine, ["DAPI", "Membrane"], pixel_size=0.25, tile=64)
    img = open_image(tmp_path / "40x.ome.tif")
    with pytest.warns(UserWarning, match=r"0.25 µm/px and the model at 0.5 µm/px: predicting on pyramid level 1"):
        work, ds = working_image(img, make_model())
    assert work.data is img.levels[1] and ds == 2.0 and work.pixel_size == (0.5, 0.5)
    np.testing.assert_array_equal(work.read(), base)  # 2x2 block means of the repeated pixels


def test_non_integer_factor_resamples_lazily_and_exactly(base):
    img = Image(ramp(300, 400), pixel_size=0.3)
    with pytest.warns(UserWarning, match="bilinear resampling"):
        work, ds = working_image(img, pixel_size=(0.5, 0.5))
    assert work.is_lazy and work.pixel_size == (0.5, 0.5)
    assert work.shape == (2, 180, 240) and ds == pytest.approx(5 / 3)
    # Bilinear interpolation of a linear ramp is exact away from the clamped border.
    yy, xx = np.mgrid[:180, :240] * (5 / 3) + (5 / 3 - 1) / 2
    expected = np.stack([3 * yy + 2 * xx, yy - xx + 500])
    np.testing.assert_allclose(work.read()[:, 1:-1, 1:-1], expected[:, 1:-1, 1:-1], rtol=1e-5)
    # Chunking does not change a pixel: tiles agree at their seams.
    small_chunks = resample(img, (0.5, 0.5), chunk=37)
    np.testing.assert_allclose(small_chunks.read(), work.read(), rtol=1e-6)
    np.testing.assert_allclose(small_chunks.read((50, 90, 100, 140)), work.read()[:, 50:90, 100:140], rtol=1e-6)


def test_coarser_image_is_upsampled(base):
    img = Image(base.astype(np.uint16), ["DAPI", "Membrane"], pixel_size=1.0)
    with pytest.warns(UserWarning, match="bilinear resampling by 2"):
        work, ds = working_image(img, make_model())
    assert work.shape == (2, 192, 256) and ds == 0.5 and work.dtype == np.uint16


def test_image_without_pixel_size_warns_and_uses_the_downsample(base):
    img = Image(base, ["DAPI", "Membrane"])
    with pytest.warns(UserWarning, match=r"has no pixel size but the model was trained at 0.5 µm/px.*pixel_size="):
        work, ds = working_image(img, make_model())
    assert work is img and ds == 1.0


def test_predict_file_at_40x_writes_the_models_pixel_size(tmp_path, base):
    model = make_model()
    fine = np.repeat(np.repeat(base, 2, axis=1), 2, axis=2)
    write_ome_tiff(tmp_path / "40x.ome.tif", fine, ["DAPI", "Membrane"], pixel_size=0.25, tile=64)
    write_ome_tiff(tmp_path / "20x.ome.tif", base, ["DAPI", "Membrane"], pixel_size=0.5, tile=64)
    with pytest.warns(UserWarning, match="pyramid level 1"):
        res = pixlab.predict_file(model, tmp_path / "40x.ome.tif", tmp_path / "out40.ome.tif", measurements=True)
    pixlab.predict_file(model, tmp_path / "20x.ome.tif", tmp_path / "out20.ome.tif", measurements=True)
    out40, out20 = open_image(tmp_path / "out40.ome.tif"), open_image(tmp_path / "out20.ome.tif")
    assert out40.shape == (2, 96, 128) and out40.pixel_size == pytest.approx((0.5, 0.5))
    np.testing.assert_array_equal(out40.read(), out20.read())  # the model saw the same pixels
    # Areas are physical: the same in µm² whatever the input's resolution.
    assert res["measurements"]["area_um2"].sum() == pytest.approx(192 * 256 * 0.25 * 0.25)


def test_model_predict_returns_the_input_size(base):
    model = make_model()
    fine = np.repeat(np.repeat(base, 2, axis=1), 2, axis=2)
    with pytest.warns(UserWarning, match="model at 0.5"):
        probs = model.predict(Image(fine, ["DAPI", "Membrane"], pixel_size=0.25))
    assert probs.shape == (2, 192, 256)


def test_training_records_the_pixel_size_in_the_bundle(tmp_path, tiny_cfg, fluo_sample):
    img, labels, _, names = fluo_sample
    model = pixlab.train([(Image(img.data, img.channel_names, pixel_size=0.4), labels)], tiny_cfg,
                         class_names=names)
    assert model.metadata["pixel_size_um"] == [0.4, 0.4]
    model.save(tmp_path / "m")
    assert pixlab.load_model(tmp_path / "m").metadata["pixel_size_um"] == [0.4, 0.4]


def test_training_pixel_size_is_level0_and_disagreements_are_named():
    a = Image(np.zeros((1, 8, 8)), pixel_size=1.0, name="a")  # a downsampled-by-2 image of 0.5 µm/px
    b = Image(np.zeros((1, 8, 8)), pixel_size=2.0, name="b")
    c = Image(np.zeros((1, 8, 8)), name="c")
    assert training_pixel_size([a], downsample=2) == [0.5, 0.5]
    assert training_pixel_size([c]) is None
    with pytest.warns(UserWarning, match=r"records 1 µm/px.*different: 'b' \(2 µm\).*unknown: 'c'"):
        assert training_pixel_size([a, b, c]) == [1.0, 1.0]


def test_plain_tiff_with_resolution_tags_takes_part(tmp_path, base):
    # Issue 19 + 14 together: a scanner TIFF's resolution tags are the pixel size that is matched.
    fine = np.repeat(np.repeat(base, 2, axis=1), 2, axis=2).astype(np.uint16)
    tifffile.imwrite(tmp_path / "scan.tif", fine, photometric="minisblack", resolution=(4e4, 4e4),
                     resolutionunit="CENTIMETER")
    img = open_image(tmp_path / "scan.tif")
    assert img.pixel_size == pytest.approx((0.25, 0.25))
    with pytest.warns(UserWarning, match="2x2 block means"):
        work, ds = working_image(img, make_model())
    assert work.shape == (2, 96, 128) and ds == 2.0


def test_downsampled_output_without_pixel_size_keeps_its_scale(tmp_path, base):
    # Issue 19: a prediction at the model's downsample must say how it maps onto the input.
    model = make_model(pixel_size=None, downsample=2)
    write_ome_tiff(tmp_path / "in.ome.tif", base, ["DAPI", "Membrane"], tile=64)  # no pixel size
    pixlab.predict_file(model, tmp_path / "in.ome.tif", tmp_path / "out.ome.tif")
    pixlab.predict_file(model, tmp_path / "in.ome.tif", tmp_path / "out.ome.zarr", tiff_tile=32)
    with tifffile.TiffFile(tmp_path / "out.ome.tif") as tif:
        xml = tif.ome_metadata
    assert 'PhysicalSizeX="2.0"' in xml and 'PhysicalSizeXUnit="pixel"' in xml
    assert open_image(tmp_path / "out.ome.tif").pixel_size is None  # not mistaken for µm
    import zarr
    meta = zarr.open_group(str(tmp_path / "out.ome.zarr"), mode="r").attrs["ome"]["multiscales"][0]
    assert meta["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 2.0, 2.0]
    assert meta["datasets"][1]["coordinateTransformations"][0]["scale"] == [1.0, 4.0, 4.0]
    assert "unit" not in meta["axes"][1]
    # With a physical size, the output level's is written in µm (input 0.5 µm/px, output 1 µm/px).
    write_ome_tiff(tmp_path / "in2.ome.tif", base, ["DAPI", "Membrane"], pixel_size=0.5, tile=64)
    pixlab.predict_file(model, tmp_path / "in2.ome.tif", tmp_path / "out2.ome.tif")
    assert open_image(tmp_path / "out2.ome.tif").pixel_size == (1.0, 1.0)
