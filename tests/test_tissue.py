import dask.array as da
import numpy as np
import pytest

from pixlab.image.io import Image, open_image, write_ome_tiff
from pixlab.image.tissue import TissueMask, tissue_mask


def _he_like(ny=768, nx=1024, seed=0):
    """White glass with two pink/purple tissue blobs and a few dark dust specks."""
    rng = np.random.default_rng(seed)
    img = np.full((ny, nx, 3), 235, np.float32) + rng.normal(0, 4, (ny, nx, 3))
    yy, xx = np.mgrid[:ny, :nx]
    blob1 = (yy - 250) ** 2 / 150 ** 2 + (xx - 300) ** 2 / 200 ** 2 < 1
    blob2 = (yy - 550) ** 2 / 120 ** 2 + (xx - 800) ** 2 / 100 ** 2 < 1
    tissue = blob1 | blob2
    img[tissue] = np.array([190, 90, 170]) + rng.normal(0, 15, (tissue.sum(), 3))
    img[700:703, 100:103] = (120, 40, 110)  # a 3x3 saturated speck: removed by min_area_px
    return np.clip(img, 0, 255).astype(np.uint8), tissue


def test_brightfield_otsu_finds_the_tissue():
    rgb, truth = _he_like()
    tm = tissue_mask(open_image(rgb), dilate_px=0)
    assert tm.mask.shape == truth.shape and tm.downsample == pytest.approx(1.0)
    agree = (tm.mask == truth).mean()
    assert agree > 0.99
    assert tm.fraction == pytest.approx(truth.mean(), abs=0.01)
    assert not tm.mask[695:708, 95:108].any()  # the speck is below min_area_px
    assert tm.covers(240, 260, 290, 310) and not tm.covers(0, 50, 0, 50)


def test_dilation_grows_the_mask_in_level0_pixels():
    rgb, truth = _he_like()
    tight = tissue_mask(rgb, dilate_px=0)
    wide = tissue_mask(rgb, dilate_px=40)
    assert wide.mask[tight.mask].all() and wide.fraction > tight.fraction
    # A box 30 px left of blob 1's edge (x = 100 at y = 250) is covered only thanks to the margin.
    assert wide.covers(245, 255, 65, 75) and not tight.covers(245, 255, 65, 75)


def test_fluorescence_uses_intensity():
    rng = np.random.default_rng(1)
    img = rng.normal(100, 5, (2, 400, 400)).clip(0)
    img[1, 100:250, 150:300] += 2000  # tissue bright only in channel 2
    tm = tissue_mask(Image(img.astype(np.uint16), ["DAPI", "CD3"]), dilate_px=0, min_area_px=0)
    truth = np.zeros((400, 400), bool)
    truth[100:250, 150:300] = True
    assert (tm.mask == truth).mean() > 0.99


def test_uses_a_small_level_and_never_reads_level_0():
    rgb, truth = _he_like()
    small = np.moveaxis(rgb, -1, 0)
    big_shape = (3, small.shape[1] * 16, small.shape[2] * 16)

    def boom(block):
        raise AssertionError("level 0 was read")

    level0 = da.zeros(big_shape, np.uint8, chunks=(3, 4096, 4096)).map_blocks(boom, dtype=np.uint8)
    levels = [level0, da.zeros((3, big_shape[1] // 4, big_shape[2] // 4), np.uint8).map_blocks(boom, dtype=np.uint8),
              small]
    img = Image(level0, levels=levels)
    tm = tissue_mask(img, dilate_px=0)
    assert tm.mask.shape == truth.shape and tm.downsample == pytest.approx(16.0)
    assert (tm.mask == truth).mean() > 0.99
    # covers() answers in level-0 coordinates
    assert tm.covers(250 * 16, 250 * 16 + 256, 300 * 16, 300 * 16 + 256)
    assert not tm.covers(0, 256, 0, 256)
    np.testing.assert_array_equal(tm.region(0, big_shape[1], 0, big_shape[2], truth.shape), tm.mask)
    # The same mask in the coordinates of the 4x level (a prediction's working image)
    at4 = tm.for_shape(levels[1].shape[1:])
    assert at4.downsample == pytest.approx(4.0) and at4.covers(250 * 4, 250 * 4 + 64, 300 * 4, 300 * 4 + 64)
    assert not at4.covers(0, 64, 0, 64)


def test_pyramid_file_uses_the_level_within_budget(tmp_path):
    rgb, truth = _he_like()
    write_ome_tiff(tmp_path / "s.ome.tif", rgb, tile=128)  # levels 768, 384, 192, 96
    tm = tissue_mask(tmp_path / "s.ome.tif", dilate_px=0, max_pixels=200 * 260)
    assert tm.mask.shape == (192, 256) and tm.downsample == pytest.approx(4.0)
    assert (tm.mask == truth[::4, ::4]).mean() > 0.97


def test_user_threshold_and_user_mask():
    rgb, truth = _he_like()
    none = tissue_mask(rgb, method="threshold", threshold=0.99, dilate_px=0)
    assert not none.mask.any() and not none.covers(0, 768, 0, 1024)
    with pytest.raises(ValueError, match="threshold= between 0 and 1"):
        tissue_mask(rgb, method="threshold")
    with pytest.raises(ValueError, match="method must be one of"):
        tissue_mask(rgb, method="magic")
    user = np.zeros((96, 128), bool)
    user[10:20, 30:40] = True
    tm = tissue_mask(rgb, mask=user)
    assert tm.method == "mask" and tm.downsample == pytest.approx(8.0)
    assert tm.covers(80, 90, 240, 250) and not tm.covers(250, 260, 300, 310)
    with pytest.raises(ValueError, match="aspect ratio"):
        tissue_mask(rgb, mask=np.ones((100, 20), bool))


def test_user_mask_file(tmp_path):
    from PIL import Image as PILImage

    rgb, _ = _he_like()
    m = np.zeros((192, 256), np.uint8)
    m[:96] = 255
    PILImage.fromarray(m).save(tmp_path / "mask.png")
    tm = tissue_mask(rgb, mask=tmp_path / "mask.png")
    assert tm.fraction == pytest.approx(0.5) and tm.covers(0, 10, 0, 10) and not tm.covers(700, 760, 0, 10)


def test_no_contrast_keeps_everything_with_a_warning():
    flat = np.full((256, 256, 3), 240, np.uint8)
    with pytest.warns(UserWarning, match="no tissue/background contrast"):
        tm = tissue_mask(flat)
    assert tm.mask.all() and tm.fraction == 1.0


def test_from_array_for_hand_built_masks():
    tm = TissueMask.from_array(np.eye(4, dtype=bool), (400, 400))
    assert tm.downsample == 100 and tm.covers(0, 1, 0, 1) and not tm.covers(0, 100, 300, 400)
    with pytest.raises(ValueError, match="2-D"):
        TissueMask.from_array(np.ones((2, 3, 4)), (10, 10))
