"""pixlab.inference.outputs: streamed pyramidal rasters, measurements, preview labels, GeoJSON, overlay."""

import json
import os

import numpy as np
import pytest
import tifffile

from pixlab.inference.outputs import (
    PreviewLabels,
    RasterWriter,
    _reduce_mean,
    derived_path,
    measurements_table,
    pyramid_shapes,
    raster_format,
    to_output,
    write_geojson,
    write_overlay,
)


def write_in_bands(path, data, bands, **kwargs):
    kwargs.setdefault("channel_names", [f"c{i}" for i in range(data.shape[0])])
    with RasterWriter(path, data.shape, data.dtype, **kwargs) as w:
        y = 0
        for h in bands:
            w.write(data[:, y: y + h])
            y += h
        assert y == data.shape[1]


@pytest.mark.parametrize("shape, bands", [((2, 301, 203), [37, 100, 1, 163]), ((1, 64, 500), [64]),
                                          ((3, 129, 33), [128, 1])])
def test_streamed_ome_tiff_equals_the_data_and_its_block_mean_pyramid(tmp_path, shape, bands):
    data = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / "p.ome.tif"
    write_in_bands(path, data, bands, tile=32, pixel_size=(0.25, 0.5))
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        assert series.axes == ("CYX" if shape[0] > 1 else "YX")
        assert [lv.shape[-2:] for lv in series.levels] == pyramid_shapes(shape[1:], 32)
        np.testing.assert_array_equal(series.asarray().reshape(shape), data)  # 1 channel comes back (Y, X)
        expected = data
        for level in series.levels[1:]:
            ny, nx = level.shape[-2:]
            expected = _reduce_mean(expected[:, : 2 * ny, : 2 * nx])
            np.testing.assert_array_equal(level.asarray().reshape(expected.shape), expected)
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert tif.pages[0].is_tiled
    from pixlab.image.io import open_image
    img = open_image(path)
    assert img.channel_names == [f"c{i}" for i in range(shape[0])] and img.pixel_size == (0.25, 0.5)


def test_label_pyramid_keeps_ids_and_float32_roundtrips(tmp_path):
    labels = np.random.default_rng(1).integers(1, 4, (1, 100, 90), dtype=np.uint8)
    write_in_bands(tmp_path / "l.ome.tif", labels, [50, 50], kind="labels", tile=32, compression="zstd")
    with tifffile.TiffFile(tmp_path / "l.ome.tif") as tif:
        level1 = tif.series[0].levels[1].asarray()
    np.testing.assert_array_equal(level1, labels[0, ::2, ::2])
    probs = np.random.default_rng(2).random((2, 40, 50), dtype=np.float32)
    write_in_bands(tmp_path / "f.ome.tif", probs, [13, 27], tile=16, compression=None)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "f.ome.tif"), probs)


def test_ome_zarr_is_readable_by_ome_zarr(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    data = np.random.default_rng(3).integers(0, 256, (2, 90, 70), dtype=np.uint8)
    write_in_bands(tmp_path / "z.ome.zarr", data, [45, 45], tile=32, pixel_size=(0.5, 0.5),
                   channel_names=["bg", "cells"], colours=[[0, 0, 0], [255, 0, 0]])
    node = next(iter(Reader(parse_url(str(tmp_path / "z.ome.zarr")))()))
    assert [tuple(a.shape) for a in node.data] == [(2, 90, 70), (2, 45, 35), (2, 22, 17)]
    np.testing.assert_array_equal(np.asarray(node.data[0]), data)
    assert node.metadata["channel_names"] == ["bg", "cells"]
    assert node.metadata["coordinateTransformations"][1][0]["scale"] == [1.0, 1.0, 1.0]


def test_unfinished_or_failing_raster_leaves_nothing(tmp_path):
    data = np.zeros((1, 64, 64), np.uint8)
    with pytest.raises(ValueError, match="only 32 of 64 rows"):
        with RasterWriter(tmp_path / "a.ome.tif", data.shape, np.uint8, ["x"], tile=32) as w:
            w.write(data[:, :32])
    with pytest.raises(KeyError):
        with RasterWriter(tmp_path / "b.ome.zarr", data.shape, np.uint8, ["x"], tile=32) as w:
            w.write(data[:, :32])
            raise KeyError("interrupted")
    with pytest.raises(ValueError, match="more rows"):
        with RasterWriter(tmp_path / "c.ome.tif", data.shape, np.uint8, ["x"], tile=32) as w:
            w.write(np.zeros((1, 65, 64), np.uint8))
    assert os.listdir(tmp_path) == []


def test_bad_writer_arguments_are_clear(tmp_path):
    with pytest.raises(ValueError, match="multiple of 16"):
        RasterWriter(tmp_path / "a.ome.tif", (1, 8, 8), np.uint8, ["x"], tile=20)
    with pytest.raises(ValueError, match="compression must be one of"):
        RasterWriter(tmp_path / "a.ome.tif", (1, 8, 8), np.uint8, ["x"], compression="gzip9")
    with pytest.raises(ValueError, match="suffix"):
        raster_format("result.h5")


def test_names_and_conversion():
    assert str(derived_path("o/slide.ome.tif", "csv")) == "o/slide.measurements.csv"
    assert str(derived_path("o/slide.ome.zarr", "png")) == "o/slide.overlay.png"
    assert str(derived_path("slide.tiff", "geojson")) == "slide.geojson"
    p = np.array([[[0.0, 0.5, 1.0]], [[1.0, 0.5, 0.0]]], np.float32)
    assert to_output(p, "probabilities", "uint8").tolist() == [[[0, 128, 255]], [[255, 128, 0]]]
    assert to_output(p, "probabilities", "float16").dtype == np.float16
    assert to_output(p, "labels", "uint8").tolist() == [[[2, 1, 1]]]  # ties go to the first class


@pytest.mark.parametrize("factor", [1, 3, 4])
def test_preview_labels_are_the_argmax_of_block_sums_whatever_the_bands(factor):
    rng = np.random.default_rng(4)
    probs = rng.random((3, 50, 41), dtype=np.float32)
    preview = PreviewLabels(3, (50, 41), factor)
    for y0, y1 in [(0, 7), (7, 8), (8, 33), (33, 50)]:
        preview.add(probs[:, y0:y1])
    h, w = -(-50 // factor), -(-41 // factor)
    padded = np.zeros((3, h * factor, w * factor), np.float64)
    padded[:, :50, :41] = probs
    sums = padded.reshape(3, h, factor, w, factor).sum(axis=(2, 4))
    np.testing.assert_array_equal(preview.labels, np.argmax(sums, axis=0) + 1)
    assert PreviewLabels.for_max_pixels(3, (1000, 1000), 70_000).factor == 4


def test_measurements_table_units():
    table = measurements_table([0, 6, 2], ["a", "b"], "img", pixel_size=None, downsample=2)
    assert table["area_px"].tolist() == [24.0, 8.0] and table["fraction"].tolist() == [0.75, 0.25]
    assert table["area_um2"].isna().all()


def test_geojson_and_overlay_files(tmp_path):
    import shapely.geometry
    from PIL import Image as PILImage

    labels = np.ones((20, 30), np.uint8)
    labels[5:10, 5:15] = 2
    write_geojson(tmp_path / "a.geojson", labels, ["bg", "cell"], [[0, 0, 0], [255, 0, 0]], downsample=2)
    gj = json.loads((tmp_path / "a.geojson").read_text())
    cell = next(f for f in gj["features"] if f["properties"]["classification"]["name"] == "cell")
    assert shapely.geometry.shape(cell["geometry"]).bounds == (10, 10, 30, 20)
    rgb = np.full((20, 30, 3), 100, np.uint8)
    write_overlay(tmp_path / "a.png", rgb, labels, [[0, 0, 0], [255, 0, 0]], opacity=0.5)
    with PILImage.open(tmp_path / "a.png") as png:
        out = np.asarray(png)
    assert out.shape == (20, 30, 3)
    assert out[7, 7].tolist() == [178, 50, 50] and out[0, 0].tolist() == [50, 50, 50]
