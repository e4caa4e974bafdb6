"""Whole-slide and vendor formats (issue 14): small files of each kind that can be written here, read
lazily with their pyramid levels, pixel size and channel names; skipped with a reason otherwise."""

import importlib.util
import sys

import dask.array as da
import numpy as np
import pytest
import tifffile

from pixlab.image.io import open_image, write_ome_tiff

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 255, (512, 768, 3), dtype=np.uint8)
FLUO = RNG.integers(0, 4000, (3, 512, 768), dtype=np.uint16)
LEVELS = [(512, 768), (256, 384), (128, 192)]


def check_slide(img, channels, pixel_size, source):
    """Lazy, all levels, right pixels at level 0 and at a reduced level, right metadata."""
    assert img.is_lazy and isinstance(img.data, da.Array)
    assert [lv.shape[1:] for lv in img.levels] == LEVELS
    assert img.channel_names == channels
    assert img.pixel_size == pytest.approx(pixel_size)
    np.testing.assert_array_equal(img.read((100, 140, 200, 260)), source[:, 100:140, 200:260])
    np.testing.assert_array_equal(img.read((10, 20, 30, 40), level=2), source[:, ::4, ::4][:, 10:20, 30:40])


def aperio(tmp_path, mpp="0.4990"):
    """An SVS-like file: 'Aperio' descriptions, tiled baseline, thumbnail, tiled levels, label, macro."""
    head = "Aperio Image Library v12.0.15\n768x512 [0,0 768x512] (128x128)"
    path = tmp_path / "slide.svs"
    with tifffile.TiffWriter(path) as tw:
        tw.write(RGB, tile=(128, 128), photometric="rgb", metadata=None,
                 description=f"{head} RAW|AppMag = 20|MPP = {mpp}|Filename = slide")
        tw.write(RGB[::8, ::8], photometric="rgb", metadata=None, description=f"{head} -> 96x64")
        for f in (2, 4):
            tw.write(RGB[::f, ::f], tile=(128, 128), photometric="rgb", metadata=None, description=f"{head} -> {f}")
        tw.write(RGB[:50, :50], photometric="rgb", subfiletype=1, metadata=None, description=f"{head}\nlabel")
        tw.write(RGB[:60, :80], photometric="rgb", subfiletype=9, metadata=None, description=f"{head}\nmacro")
    return path


def test_aperio_svs(tmp_path):
    img = open_image(aperio(tmp_path))
    check_slide(img, ["Red", "Green", "Blue"], (0.499, 0.499), np.moveaxis(RGB, -1, 0))
    assert img.is_rgb and img.name == "slide"


def test_hamamatsu_ndpi_tags(tmp_path):
    # NDPI stores 64-bit offsets in a classic TIFF, which no writer here produces: this file has the
    # NDPI tags and layout in an ordinary TIFF (tifffile reads it as NDPI), named .tif.
    tags = [(65420, "I", 1, 1, True), (65421, "f", 1, 20.0, True), (271, "s", 0, "Hamamatsu", True)]
    path = tmp_path / "ndpi_like.tif"
    with tifffile.TiffWriter(path) as tw:
        for f in (1, 2, 4):
            tw.write(RGB[::f, ::f], tile=(128, 128), photometric="rgb", metadata=None, extratags=tags,
                     resolution=(1e4 / 0.45 / f, 1e4 / 0.45 / f), resolutionunit="CENTIMETER")
        tw.write(RGB[::16, ::16], photometric="rgb", metadata=None,
                 extratags=[(65420, "I", 1, 1, True), (65421, "f", 1, -1.0, True), (271, "s", 0, "Hamamatsu", True)])
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ndpi and tif.series[0].kind == "ndpi"
    check_slide(open_image(path), ["Red", "Green", "Blue"], (0.45, 0.45), np.moveaxis(RGB, -1, 0))


@pytest.mark.skip(reason="a real .ndpi file has 64-bit offsets in a classic TIFF header; tifffile reads "
                         "but cannot write that, and no NDPI sample is in the repo (the NDPI tags and "
                         "layout are tested in test_hamamatsu_ndpi_tags)")
def test_hamamatsu_ndpi_file():
    pass


def test_leica_scn_reads_the_scan_not_the_macro(tmp_path):
    nm = 500  # 0.5 µm per pixel, in the SCN's nanometres
    view = f'<view sizeX="{768 * nm}" sizeY="{512 * nm}" offsetX="0" offsetY="0" spacingZ="0"/>'
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<scn xmlns="http://www.leica-microsystems.com/scn/2010/10/01">'
        f'<collection name="slide" sizeX="{768 * nm}" sizeY="{512 * nm}">'
        f'<image name="macro"><pixels sizeX="48" sizeY="32"><dimension sizeX="48" sizeY="32" r="0" ifd="0"/>'
        f'</pixels>{view}</image>'
        '<image name="scan"><pixels sizeX="768" sizeY="512">'
        '<dimension sizeX="768" sizeY="512" r="0" ifd="1"/><dimension sizeX="384" sizeY="256" r="1" ifd="2"/>'
        f'<dimension sizeX="192" sizeY="128" r="2" ifd="3"/></pixels>{view}</image>'
        '</collection></scn>')
    path = tmp_path / "slide.scn"
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(RGB[::16, ::16], photometric="rgb", description=xml, metadata=None)
        for f in (1, 2, 4):
            tw.write(RGB[::f, ::f], tile=(128, 128), photometric="rgb", metadata=None)
    check_slide(open_image(path), ["Red", "Green", "Blue"], (0.5, 0.5), np.moveaxis(RGB, -1, 0))


def test_akoya_qptiff_channel_names(tmp_path):
    names = ["DAPI", "CD8", "PanCK"]

    def desc(kind, name, biomarker=None):
        extra = f"<Biomarker>{biomarker}</Biomarker>" if biomarker else ""
        return ('<?xml version="1.0" encoding="utf-8"?><PerkinElmer-QPI-ImageDescription>'
                f"<DescriptionVersion>2</DescriptionVersion><ImageType>{kind}</ImageType><Name>{name}</Name>"
                f"{extra}</PerkinElmer-QPI-ImageDescription>")

    path = tmp_path / "panel.qptiff"
    common = dict(photometric="minisblack", software="PerkinElmer-QPI", metadata=None)
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for c, n in enumerate(names):  # newer scanners name the marker in <Biomarker>, the filter in <Name>
            tw.write(FLUO[c], tile=(128, 128), description=desc("FullResolution", "Opal " + n, n), **common,
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
        tw.write(np.zeros((32, 48, 3), np.uint8), photometric="rgb", software="PerkinElmer-QPI",
                 metadata=None, description=desc("Thumbnail", "thumb"))
        for f in (2, 4):
            for c, n in enumerate(names):
                tw.write(FLUO[c, ::f, ::f], tile=(128, 128), description=desc("ReducedResolution", n), **common)
    check_slide(open_image(path), names, (0.5, 0.5), FLUO)


def test_ome_rgb_pyramid_with_subifds(tmp_path):
    # The layout QuPath / bfconvert write: samples interleaved, reduced levels as SubIFDs.
    path = tmp_path / "rgb.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(RGB, tile=(128, 128), photometric="rgb", subifds=2,
                 metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
        for f in (2, 4):
            tw.write(RGB[::f, ::f], tile=(128, 128), photometric="rgb", subfiletype=1)
    check_slide(open_image(path), ["Red", "Green", "Blue"], (0.25, 0.25), np.moveaxis(RGB, -1, 0))


def test_ome_fluorescence_pyramid(tmp_path):
    write_ome_tiff(tmp_path / "f.ome.tif", FLUO, ["DAPI", "CD8", "PanCK"], pixel_size=0.5, tile=128)
    img = open_image(tmp_path / "f.ome.tif")
    assert img.levels[1].shape == (3, 256, 384) and img.channel_names == ["DAPI", "CD8", "PanCK"]


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr(tmp_path, version):
    import warnings

    import zarr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.format import FormatV04, FormatV05
        from ome_zarr.writer import write_multiscale

    path = tmp_path / "img.ome.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    pyramid = [FLUO[:, ::f, ::f] for f in (1, 2, 4)]
    transforms = [[{"type": "scale", "scale": [1.0, 0.5 * f, 0.5 * f]}] for f in (1, 2, 4)]
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        write_multiscale(pyramid, group, fmt=FormatV04() if version == "0.4" else FormatV05(), axes=axes,
                         coordinate_transformations=transforms, storage_options={"chunks": (1, 128, 128)})
    omero = {"channels": [{"label": n} for n in ["DAPI", "CD8", "PanCK"]]}
    if version == "0.4":
        group.attrs["omero"] = omero
    else:
        group.attrs["ome"] = {**group.attrs["ome"], "omero": omero}
    check_slide(open_image(path), ["DAPI", "CD8", "PanCK"], (0.5, 0.5), FLUO)


def test_ome_zarr_written_by_pixlab_reads_back(tmp_path):
    from pixlab.inference.outputs import RasterWriter

    probs = RNG.random((2, 300, 280)).astype(np.float32)
    with RasterWriter(tmp_path / "p.ome.zarr", probs.shape, np.float32, ["bg", "fg"], pixel_size=(0.5, 0.5),
                      tile=128) as w:
        w.write(probs)
    img = open_image(tmp_path / "p.ome.zarr")
    assert img.channel_names == ["bg", "fg"] and img.pixel_size == (0.5, 0.5) and len(img.levels) == 3
    np.testing.assert_array_equal(img.read(), probs)


def test_folder_that_is_not_an_image(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(ValueError, match="is a folder, not an image file"):
        open_image(tmp_path / "stuff")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(ValueError, match="cannot read image .*empty.zarr"):
        open_image(tmp_path / "empty.zarr")


# -- vendor formats through bioio (pixlab[formats]) ---------------------------------------------------
@pytest.mark.parametrize("suffix, plugin", [(".czi", "bioio_czi"), (".nd2", "bioio_nd2"), (".lif", "bioio_lif")])
def test_vendor_format_without_the_extra_names_it(tmp_path, monkeypatch, suffix, plugin):
    path = tmp_path / f"scan{suffix}"
    path.write_bytes(b"\0" * 64)
    monkeypatch.setitem(sys.modules, "bioio", None)  # as if bioio were not installed
    with pytest.raises(ImportError, match=r"pip install 'pixlab\[formats\]'.*" + plugin.replace("_", "-")):
        open_image(path)


@pytest.mark.parametrize("suffix", [".czi", ".nd2", ".lif"])
def test_vendor_formats_need_a_sample_file(suffix):
    pytest.skip(f"no {suffix} writer is available here and no {suffix} sample is in the repo; reading goes "
                f"through bioio's plugin (tested upstream), pixlab's adapter is tested on OME-TIFF below")


@pytest.mark.slow  # importing bioio and ome-types takes ~10 s
@pytest.mark.skipif(importlib.util.find_spec("bioio") is None or importlib.util.find_spec("bioio_ome_tiff") is None,
                    reason="bioio and bioio-ome-tiff are not installed (pip install 'pixlab[formats]')")
def test_bioio_adapter_on_an_ome_tiff(tmp_path):
    from bioio_ome_tiff import Reader

    from pixlab.image.bioio_reader import open_bioio

    write_ome_tiff(tmp_path / "f.ome.tif", FLUO, ["DAPI", "CD8", "PanCK"], pixel_size=0.5, tile=128)
    img = open_bioio(str(tmp_path / "f.ome.tif"), reader=Reader)
    assert img.is_lazy and img.channel_names == ["DAPI", "CD8", "PanCK"] and img.pixel_size == (0.5, 0.5)
    np.testing.assert_array_equal(img.read((100, 140, 200, 260)), FLUO[:, 100:140, 200:260])


# -- bad slides ---------------------------------------------------------------------------------------
def test_levels_that_disagree_in_shape(tmp_path):
    path = tmp_path / "bad.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(RGB, tile=(128, 128), photometric="rgb", subifds=1, metadata={"axes": "YXS"})
        tw.write(RGB[:400, :100], tile=(128, 128), photometric="rgb", subfiletype=1)  # not a downsample
    with pytest.raises(ValueError, match=r"pyramid levels of image '.*bad.ome.tif' disagree in shape: level 1 "
                                         r"is \(Y=400, X=100\).*convert it"):
        open_image(path)


def test_truncated_slide(tmp_path):
    raw = aperio(tmp_path).read_bytes()
    (tmp_path / "cut.svs").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"cannot read image '.*cut.svs': .*truncated"):
        open_image(tmp_path / "cut.svs")


@pytest.mark.parametrize("mpp", ["0", "-0.25"])
def test_zero_mpp_in_an_svs(tmp_path, mpp):
    path = aperio(tmp_path, mpp=mpp)
    with pytest.raises(ValueError, match=r"declares a pixel size of .*Aperio.*pixel_size="):
        open_image(path)
    assert open_image(path, pixel_size=0.25).pixel_size == (0.25, 0.25)


def test_missing_pixel_size_is_none_not_an_error(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", FLUO, photometric="minisblack")
    assert open_image(tmp_path / "plain.tif").pixel_size is None


def test_predict_lists_ome_zarr_and_slide_inputs(tmp_path):
    from pixlab.inference.predict import list_images
    from pixlab.inference.outputs import RasterWriter

    with RasterWriter(tmp_path / "a.ome.zarr", (1, 32, 32), np.uint8, ["x"], tile=32) as w:
        w.write(np.zeros((1, 32, 32), np.uint8))
    aperio(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in list_images(tmp_path)] == ["a.ome.zarr", "slide.svs"]
    assert list_images(tmp_path / "a.ome.zarr") == [tmp_path / "a.ome.zarr"]  # one image, not a folder


def test_one_folder_listing_rule_for_every_folder_input(tmp_path):
    """Project images, prediction inputs and annotation folders all list a folder with
    formats.list_image_folder: images (an OME-Zarr folder is one), no hidden or labels files."""
    from pixlab.annotation.sources import list_folder
    from pixlab.app.runner import Project
    from pixlab.image.formats import list_image_folder
    from pixlab.inference.folders import list_images

    for name in ("b.tif", "a.ome.tif", "c.svs", ".hidden.tif", "a.labels.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "d.ome.zarr").mkdir()
    (tmp_path / "a.labels.zarr").mkdir()
    want = [tmp_path / n for n in ("a.ome.tif", "b.tif", "c.svs", "d.ome.zarr")]
    assert list_image_folder(tmp_path) == want
    assert list_images(tmp_path) == want
    assert list_folder(tmp_path) == want
    project = Project(tmp_path / "run")
    assert [p for p, _ in project.prediction_jobs([tmp_path])] == want
