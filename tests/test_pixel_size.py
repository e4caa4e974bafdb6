"""Pixel size from TIFF resolution tags, ImageJ and PNG metadata (issue 19), and bad pixel sizes (issue 14)."""

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from pixlab.image.io import open_image, write_ome_tiff


@pytest.fixture
def plane():
    return np.random.default_rng(0).integers(0, 255, (64, 80)).astype(np.uint8)


@pytest.mark.parametrize("unit, per_unit_um", [("CENTIMETER", 1e4), ("MILLIMETER", 1e3), ("MICROMETER", 1.0)])
def test_plain_tiff_resolution_tags(tmp_path, plane, unit, per_unit_um):
    # 0.5 µm/px in x, 0.25 µm/px in y, as a scanner writes it: pixels per unit.
    res = (per_unit_um / 0.5, per_unit_um / 0.25)
    tifffile.imwrite(tmp_path / "s.tif", plane, resolution=res, resolutionunit=unit)
    assert open_image(tmp_path / "s.tif").pixel_size == pytest.approx((0.25, 0.5))


def test_inch_resolution_trusted_only_for_microscope_pixels(tmp_path, plane):
    tifffile.imwrite(tmp_path / "fine.tif", plane, resolution=(50800, 50800), resolutionunit="INCH")
    assert open_image(tmp_path / "fine.tif").pixel_size == pytest.approx((0.5, 0.5))
    tifffile.imwrite(tmp_path / "dpi.tif", plane, resolution=(300, 300), resolutionunit="INCH")
    with pytest.warns(UserWarning, match="300 dpi.*ignores"):
        assert open_image(tmp_path / "dpi.tif").pixel_size is None
    tifffile.imwrite(tmp_path / "none.tif", plane)
    assert open_image(tmp_path / "none.tif").pixel_size is None


@pytest.mark.parametrize("unit, factor", [("micron", 1.0), ("um", 1.0), ("\\u00B5m", 1.0), ("nm", 1e-3), ("mm", 1e3)])
def test_imagej_unit_and_resolution(tmp_path, plane, unit, factor):
    # Fiji: resolution = pixels per unit, ResolutionUnit NONE, unit in the ImageJ description.
    tifffile.imwrite(tmp_path / "ij.tif", plane, imagej=True, resolution=(1 / 0.65, 1 / 0.65),
                     metadata={"unit": unit, "spacing": 2.0})
    assert open_image(tmp_path / "ij.tif").pixel_size == pytest.approx((0.65 * factor, 0.65 * factor))


def test_imagej_stack_channel_labels(tmp_path):
    stack = np.zeros((2, 32, 40), np.uint16)
    tifffile.imwrite(tmp_path / "ij.tif", stack, imagej=True, metadata={"axes": "CYX", "Labels": ["DAPI", "CD8"]})
    assert open_image(tmp_path / "ij.tif").channel_names == ["DAPI", "CD8"]


def test_ome_pixel_size_wins_over_resolution_tags(tmp_path, plane):
    write_ome_tiff(tmp_path / "o.ome.tif", plane, pixel_size=0.3)
    assert open_image(tmp_path / "o.ome.tif").pixel_size == pytest.approx((0.3, 0.3))


def test_area_um2_is_filled_from_resolution_tags(tmp_path, plane):
    from pixlab.inference.outputs import measurements_table

    tifffile.imwrite(tmp_path / "s.tif", plane, resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    img = open_image(tmp_path / "s.tif")
    table = measurements_table(np.array([0, 100, 300]), ["bg", "fg"], img.name, img.pixel_size)
    assert table["area_um2"].tolist() == pytest.approx([25.0, 75.0])


def test_png_phys_chunk(tmp_path, plane):
    PILImage.fromarray(plane).save(tmp_path / "p.png", dpi=(50800, 50800))
    assert open_image(tmp_path / "p.png").pixel_size == pytest.approx((0.5, 0.5), rel=1e-3)
    PILImage.fromarray(plane).save(tmp_path / "q.png", dpi=(72, 72))
    assert open_image(tmp_path / "q.png").pixel_size is None


def test_pixel_size_argument_overrides_and_names_the_file_value(tmp_path, plane):
    write_ome_tiff(tmp_path / "o.ome.tif", plane, pixel_size=0.3)
    with pytest.warns(UserWarning, match="replaces the 0.3 µm"):
        img = open_image(tmp_path / "o.ome.tif", pixel_size=0.6)
    assert img.pixel_size == (0.6, 0.6) and len(img.levels) == 1
    assert open_image(plane, pixel_size=(0.2, 0.4)).pixel_size == (0.2, 0.4)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "x"])
def test_bad_user_pixel_size(plane, bad):
    with pytest.raises(ValueError, match="pixel_size must be a positive number"):
        open_image(plane, pixel_size=bad)


def test_zero_pixel_size_in_ome_metadata_is_one_clear_error(tmp_path, plane):
    tifffile.imwrite(tmp_path / "z.ome.tif", plane, metadata={"axes": "YX", "PhysicalSizeX": 0.0,
                                                               "PhysicalSizeY": 0.0})
    with pytest.raises(ValueError, match=r"declares a pixel size of 0.*OME.*pixel_size="):
        open_image(tmp_path / "z.ome.tif")
    assert open_image(tmp_path / "z.ome.tif", pixel_size=0.5).pixel_size == (0.5, 0.5)
