"""Array layouts (issue 17) and empty arrays (issue 19): guess only what cannot be read two ways."""

import dask.array as da
import numpy as np
import pytest
from PIL import Image as PILImage

from pixlab.image.io import open_image


def test_yx5_is_refused_not_read_as_512_channels():
    arr = np.zeros((512, 512, 5), np.float32)
    with pytest.raises(ValueError, match=r"shape \(512, 512, 5\).*axes='YXC'"):
        open_image(arr)
    img = open_image(arr, axes="YXC")
    assert img.shape == (5, 512, 512)


def test_yx4_uint16_keeps_its_4th_channel_or_asks():
    arr = np.arange(64 * 48 * 4, dtype=np.uint16).reshape(64, 48, 4)
    with pytest.raises(ValueError, match="does not drop the 4th as alpha.*axes="):
        open_image(arr)
    img = open_image(arr, axes="YXC")
    assert img.shape == (4, 64, 48)
    np.testing.assert_array_equal(img.read()[3], arr[..., 3])


def test_rgba_uint8_photo_still_works_and_says_alpha_is_dropped():
    arr = np.zeros((40, 60, 4), np.uint8)
    arr[..., 0] = 200
    with pytest.warns(UserWarning, match="alpha.*axes='YXC'"):
        img = open_image(arr)
    assert img.shape == (3, 40, 60) and img.channel_names == ["Red", "Green", "Blue"]
    assert open_image(arr, axes="YXC").shape == (4, 40, 60)


@pytest.mark.parametrize("shape, axes, expected", [
    ((3, 40, 60), None, (3, 40, 60)),      # (C, Y, X) small C
    ((40, 60, 3), None, (3, 40, 60)),      # RGB samples last
    ((40, 60), None, (1, 40, 60)),
    ((60, 900, 800), None, (60, 900, 800)),  # a multiplexed panel: 60 channels first
    ((40, 60, 7), "YXC", (7, 40, 60)),
    ((7, 40, 60), "CYX", (7, 40, 60)),
    ((40, 7, 60), "YCX", (7, 40, 60)),
    ((1, 3, 1, 40, 60), "TCZYX", (3, 40, 60)),
    ((40, 60), "YX", (1, 40, 60)),
])
def test_unambiguous_and_explicit_layouts(shape, axes, expected):
    arr = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    img = open_image(arr, axes=axes)
    assert img.shape == expected
    # The pixel at (y=1, x=2) of channel 0 is the same number whatever the layout.
    letters = axes or ("YX" if len(shape) == 2 else "YXC" if shape[-1] == 3 and shape[0] > 3 else "CYX")
    index = tuple(1 if a == "Y" else 2 if a == "X" else 0 for a in letters)
    assert img.read()[0, 1, 2] == arr[index]


def test_dask_arrays_follow_the_same_rules():
    arr = da.zeros((300, 200, 5), np.uint16, chunks=100)
    with pytest.raises(ValueError, match="axes="):
        open_image(arr)
    img = open_image(arr, axes="YXC")
    assert img.is_lazy and img.shape == (5, 300, 200)


@pytest.mark.parametrize("shape", [(100, 200, 300), (3, 3, 3)])
def test_other_3d_layouts_are_refused(shape):
    with pytest.raises(ValueError, match="cannot tell which axis"):
        open_image(np.zeros(shape, np.uint8))


def test_bad_axes_strings():
    arr = np.zeros((40, 60, 5))
    with pytest.raises(ValueError, match="one distinct letter per axis"):
        open_image(arr, axes="YX")
    with pytest.raises(ValueError, match="not supported"):
        open_image(np.zeros((4, 2, 40, 60)), axes="ZCYX")  # Z > 1 is not a channel
    with pytest.raises(ValueError, match="cannot be used with"):
        PILImage.fromarray(np.zeros((8, 8), np.uint8)).save("/tmp/_pixlab_axes.png")
        open_image("/tmp/_pixlab_axes.png", axes="YX")


@pytest.mark.parametrize("shape", [(0, 0), (0, 10), (3, 0, 10), (0, 10, 10)])
def test_empty_arrays_are_rejected_with_the_image_and_a_fix(shape):
    with pytest.raises(ValueError, match=r"image 'image' has no pixels.*at least one"):
        open_image(np.zeros(shape))


def test_16bit_rgb_png_keeps_16_bits(tmp_path):
    import imagecodecs

    arr = (np.arange(20 * 30 * 3).reshape(20, 30, 3) * 70 % 65536).astype(np.uint16)
    (tmp_path / "rgb16.png").write_bytes(imagecodecs.png_encode(arr))
    img = open_image(tmp_path / "rgb16.png")
    assert img.dtype == np.uint16 and img.channel_names == ["Red", "Green", "Blue"]
    np.testing.assert_array_equal(img.read(), np.moveaxis(arr, -1, 0))
    rgba = np.concatenate([arr, np.full((20, 30, 1), 65535, np.uint16)], axis=-1)
    (tmp_path / "rgba16.png").write_bytes(imagecodecs.png_encode(rgba))
    np.testing.assert_array_equal(open_image(tmp_path / "rgba16.png").read(), np.moveaxis(arr, -1, 0))
