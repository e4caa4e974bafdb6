import os
import tracemalloc

import dask.array as da
import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from pixlab.image.io import Image, open_image, write_ome_tiff


@pytest.fixture
def stack():
    rng = np.random.default_rng(0)
    return rng.integers(0, 4000, size=(2, 600, 530)).astype(np.uint16)


# -- OME-TIFF round trip --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_ome_tiff_round_trip(tmp_path, stack, dtype):
    data = stack.astype(dtype) if dtype != np.uint8 else (stack % 256).astype(np.uint8)
    path = tmp_path / "img.ome.tif"
    write_ome_tiff(path, data, channel_names=["DAPI", "GFP"], pixel_size=(0.25, 0.5), tile=256)
    assert sorted(os.listdir(tmp_path)) == ["img.ome.tif"]  # no temp file left behind

    img = open_image(path)
    assert isinstance(img.data, da.Array)
    assert img.channel_names == ["DAPI", "GFP"]
    assert img.pixel_size == pytest.approx((0.25, 0.5))
    assert img.shape == (2, 600, 530) and img.dtype == dtype
    assert img.name == "img" and img.path == str(path)
    np.testing.assert_array_equal(img.read(), data)
    # Pyramid: factor 2 until the level fits in one 256 tile (600 -> 300 -> 150).
    assert [lv.shape for lv in img.levels] == [(2, 600, 530), (2, 300, 265), (2, 150, 132)]
    expected = data[:, :600, :530].astype(np.float64).reshape(2, 300, 2, 265, 2).mean(axis=(2, 4))
    if np.issubdtype(dtype, np.integer):
        expected = np.round(expected)
    np.testing.assert_allclose(img.read(level=1), expected.astype(dtype), rtol=1e-6)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        assert page.is_tiled and page.tilewidth == 256
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE


def test_write_dask_input_and_image_metadata_reused(tmp_path, stack):
    src = Image(da.from_array(stack, chunks=(1, 100, 100)), ["a", "b"], pixel_size=0.3)
    write_ome_tiff(tmp_path / "d.ome.tif", src, pyramid=False)
    img = open_image(tmp_path / "d.ome.tif")
    assert img.channel_names == ["a", "b"] and img.pixel_size == pytest.approx((0.3, 0.3))
    assert len(img.levels) == 1
    np.testing.assert_array_equal(img.read(), stack)


def test_write_rejects_bad_arguments(tmp_path, stack):
    with pytest.raises(ValueError, match="channel_names has 1 names"):
        write_ome_tiff(tmp_path / "x.ome.tif", stack, channel_names=["only"])
    with pytest.raises(ValueError, match="multiple of 16"):
        write_ome_tiff(tmp_path / "x.ome.tif", stack, tile=100)
    with pytest.raises(ValueError, match="compression='bogus'"):
        write_ome_tiff(tmp_path / "x.ome.tif", stack, compression="bogus")
    with pytest.raises(ValueError, match="pixel_size"):
        write_ome_tiff(tmp_path / "x.ome.tif", stack, pixel_size=-1)
    assert not os.listdir(tmp_path)


# -- laziness ---------------------------------------------------------------------------------------
def test_big_tiled_tiff_opens_lazily(tmp_path):
    ny, nx, t = 8192, 8192, 512  # 128 MB of uint16 if it were loaded

    def tiles():  # written tile by tile: each tile holds its own index, so regions are checkable
        for ty in range(ny // t):
            for tx in range(nx // t):
                yield np.full((t, t), ty * 100 + tx, np.uint16)

    path = tmp_path / "big.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(tiles(), shape=(ny, nx), dtype=np.uint16, tile=(t, t), compression="zlib")
    tracemalloc.start()
    img = open_image(path)
    region = img.read((t * 3 - 2, t * 3 + 2, t * 5 - 1, t * 5 + 1))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert isinstance(img.data, da.Array)
    assert img.shape == (1, ny, nx) and img.channel_names == ["Channel 1"]
    expected = np.array([[204, 205]] * 2 + [[304, 305]] * 2, np.uint16)[None]
    np.testing.assert_array_equal(region, expected)
    assert peak < 20e6  # a few tiles, not the 128 MB image


def test_read_region_is_clipped_and_checked(stack):
    img = open_image(stack)
    np.testing.assert_array_equal(img.read((-5, 3, 520, 999)), stack[:, 0:3, 520:530])
    with pytest.raises(ValueError, match="empty or outside"):
        img.read((700, 800, 0, 10))
    with pytest.raises(ValueError, match="level=3 does not exist"):
        img.read(level=3)


# -- layouts ----------------------------------------------------------------------------------------
@pytest.fixture
def rgb():
    rng = np.random.default_rng(1)
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[..., 0] = 200  # red everywhere
    arr[:10, :, 2] = 255  # blue band at the top rows
    arr[..., 1] = rng.integers(0, 50, (40, 60))
    return arr


@pytest.mark.parametrize("suffix", [".tif", ".png", ".jpg"])
def test_rgb_files_are_channels_first_and_not_transposed(tmp_path, rgb, suffix):
    path = tmp_path / f"rgb{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, rgb, photometric="rgb")
    else:
        PILImage.fromarray(rgb).save(path, quality=95)
    img = open_image(path)
    assert img.shape == (3, 40, 60) and img.is_rgb
    assert img.channel_names == ["Red", "Green", "Blue"]
    data = img.read().astype(int)
    tol = 0 if suffix != ".jpg" else 30
    assert np.abs(data[0] - 200).max() <= tol
    assert np.abs(data[2, :8] - 255).max() <= tol and data[2, 12:].max() <= tol
    if suffix != ".jpg":
        np.testing.assert_array_equal(img.read(), np.moveaxis(rgb, -1, 0))


def test_grey_and_16bit_png(tmp_path):
    arr = (np.arange(20 * 30).reshape(20, 30) * 50).astype(np.uint16)
    PILImage.fromarray(arr).save(tmp_path / "g.png")
    img = open_image(tmp_path / "g.png")
    assert img.shape == (1, 20, 30) and img.dtype == np.uint16
    np.testing.assert_array_equal(img.read()[0], arr)


@pytest.mark.parametrize("shape, expected", [
    ((20, 30), (1, 20, 30)),
    ((20, 30, 3), (3, 20, 30)),
    ((3, 20, 30), (3, 20, 30)),  # first dim small: already channels first
    ((5, 20, 30), (5, 20, 30)),
])
def test_array_layouts(shape, expected):
    arr = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    img = open_image(arr)
    assert img.shape == expected
    if len(shape) == 3 and shape[-1] == 3 and shape[0] > 4:
        np.testing.assert_array_equal(img.read()[1], arr[..., 1])
    with pytest.raises(ValueError, match="must be"):
        open_image(np.zeros((2, 3, 4, 5)))


def test_tiff_axes(tmp_path):
    planes = np.random.default_rng(2).integers(0, 100, (3, 32, 40)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "cyx.tif", planes, photometric="minisblack")
    np.testing.assert_array_equal(open_image(tmp_path / "cyx.tif").read(), planes)

    tifffile.imwrite(tmp_path / "t.ome.tif", planes[None, :, None], metadata={"axes": "TCZYX"})
    img = open_image(tmp_path / "t.ome.tif")
    assert img.shape == (3, 32, 40)
    np.testing.assert_array_equal(img.read(), planes)

    tifffile.imwrite(tmp_path / "z.tif", np.zeros((4, 2, 32, 40), np.uint16), imagej=True,
                     metadata={"axes": "ZCYX"})
    with pytest.raises(ValueError, match="axes 'ZCYX'.*not supported"):
        open_image(tmp_path / "z.tif")


# -- channels, downsampling, finiteness --------------------------------------------------------------
def test_select_channels_by_name_and_index(tmp_path, stack):
    write_ome_tiff(tmp_path / "c.ome.tif", stack, channel_names=["DAPI", "GFP"])
    img = open_image(tmp_path / "c.ome.tif", channels=["GFP"])
    assert img.channel_names == ["GFP"] and img.shape == (1, 600, 530)
    assert [lv.shape[0] for lv in img.levels] == [1, 1, 1]
    np.testing.assert_array_equal(img.read(), stack[1:2])
    np.testing.assert_array_equal(open_image(tmp_path / "c.ome.tif").select_channels([1, 0]).read(),
                                  stack[::-1])
    with pytest.raises(ValueError, match=r"channel 'RFP' not found.*\['DAPI', 'GFP'\]"):
        img = open_image(tmp_path / "c.ome.tif", channels="RFP")
    with pytest.raises(ValueError, match="out of range"):
        open_image(stack).select_channels(2)


def test_downsampled_uses_pyramid_or_block_mean(tmp_path, stack):
    write_ome_tiff(tmp_path / "p.ome.tif", stack, pixel_size=0.5)
    img = open_image(tmp_path / "p.ome.tif")
    half = img.downsampled(2)
    assert half.data is img.levels[1]  # the stored level, nothing recomputed
    assert half.pixel_size == pytest.approx((1.0, 1.0)) and len(half.levels) == 2
    third = img.downsampled(3)
    expected = np.round(stack[:, :600, :528].reshape(2, 200, 3, 176, 3).mean(axis=(2, 4)))
    np.testing.assert_array_equal(third.read(), expected.astype(np.uint16))
    assert third.pixel_size == pytest.approx((1.5, 1.5))
    assert img.downsampled(1) is img
    with pytest.raises(ValueError, match="whole number"):
        img.downsampled(1.5)


def test_check_finite_names_the_channel():
    data = np.zeros((2, 10, 10), np.float32)
    open_image(data).check_finite()
    data[1, 4, 4] = np.inf
    img = Image(data, ["a", "b"])
    with pytest.raises(ValueError, match=r"\['b'\]"):
        img.check_finite()
    img.check_finite(max_pixels=4)  # sampled grid misses the one bad pixel: documented trade-off


# -- bad files ----------------------------------------------------------------------------------------
def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        open_image("nope.tif")


def test_unsupported_suffix(tmp_path):
    (tmp_path / "a.bmp").write_bytes(b"BM")
    with pytest.raises(ValueError, match=r"unsupported image file type '.bmp'.*\.tif"):
        open_image(tmp_path / "a.bmp")


@pytest.mark.parametrize("name, content", [
    ("empty.tif", b""),
    ("random.tif", bytes(np.random.default_rng(3).integers(0, 256, 2000, dtype=np.uint8))),
    ("random.png", bytes(np.random.default_rng(3).integers(0, 256, 2000, dtype=np.uint8))),
])
def test_unreadable_files(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"cannot read image '.*{name}': .*; check the file is a complete"):
        open_image(path)


def test_truncated_tiff(tmp_path, stack):
    write_ome_tiff(tmp_path / "full.ome.tif", stack, pyramid=False)
    raw = (tmp_path / "full.ome.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(ValueError, match=r"cannot read image '.*cut.tif': .*truncated"):
        open_image(tmp_path / "cut.tif")


def test_truncated_png(tmp_path, rgb):
    PILImage.fromarray(rgb).save(tmp_path / "full.png")
    raw = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="cannot read image"):
        open_image(tmp_path / "cut.png")


def test_close_releases_the_file(tmp_path, stack):
    write_ome_tiff(tmp_path / "c.ome.tif", stack, pyramid=False)
    with open_image(tmp_path / "c.ome.tif") as img:
        assert img.read((0, 2, 0, 2)).shape == (2, 2, 2)
    with pytest.raises(ValueError, match="was closed; open it again"):
        img.read()


def test_downsampled_by_a_multiple_of_a_level_never_reads_level_0():
    # A slide with 1x, 2x, 4x levels asked for 8x: block means of the 4x level, not of level 0.
    import dask.array as da

    def boom(block):
        raise AssertionError("level 0 was read")

    small = np.arange(3 * 64 * 96, dtype=np.uint16).reshape(3, 64, 96)
    level0 = da.zeros((3, 256, 384), np.uint16, chunks=128).map_blocks(boom, dtype=np.uint16)
    level1 = da.zeros((3, 128, 192), np.uint16, chunks=128).map_blocks(boom, dtype=np.uint16)
    img = Image(level0, levels=[level0, level1, small], pixel_size=0.25)
    eighth = img.downsampled(8)
    assert eighth.shape == (3, 32, 48) and eighth.pixel_size == (2.0, 2.0)
    expected = np.round(small.reshape(3, 32, 2, 48, 2).mean(axis=(2, 4))).astype(np.uint16)
    np.testing.assert_array_equal(eighth.read(), expected)
