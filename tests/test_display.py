import numpy as np
import pytest

from pixlab.image import display
from pixlab.image.io import Image, open_image


# ---------------------------------------------------------------------------------------------- colours
def test_channel_colours_follow_microscopy_conventions():
    assert display.channel_colours(4) == [[0, 0, 255], [0, 255, 0], [255, 0, 0], [255, 0, 255]]
    # A nuclear stain gets blue wherever it is; the others take green, red, ... in order.
    assert display.channel_colours(3, ["CD3", "DAPI", "CD8"]) == [[0, 255, 0], [0, 0, 255], [255, 0, 0]]
    assert display.channel_colours(3, ["Red", "Green", "Blue"]) == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    assert display.channel_colours(1) == [[255, 255, 255]]


def test_many_channels_get_distinct_bright_colours():
    colours = display.channel_colours(45)
    assert len({tuple(c) for c in colours}) == 45
    assert all(max(c) >= 200 for c in colours)  # additive mixing needs bright colours, never black


def test_auto_range_uses_percentiles_and_never_returns_an_empty_range():
    arr = np.arange(1000, dtype=np.uint16).reshape(1, 10, 100)
    lo, hi = display.auto_range(arr, 0, (1, 99))
    assert lo == pytest.approx(9.99) and hi == pytest.approx(989.01)
    flat = np.full((1, 8, 8), 7, np.uint16)
    lo, hi = display.auto_range(flat, 0)
    assert hi > lo


# ---------------------------------------------------------------------------------------------- composite
def test_rgb_photograph_is_shown_unchanged():
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(display.composite(rgb), rgb)


def test_fluorescence_channels_add_in_their_colours_and_clip():
    data = np.zeros((2, 4, 4), np.uint16)
    data[0, 0, 0] = 100          # channel 0 at its top -> blue
    data[1, 0, 1] = 100          # channel 1 at its top -> green
    data[:, 0, 2] = 100          # both -> cyan
    data[0, 0, 3] = 50           # half way -> half blue
    out = display.composite(data, ranges=[(0, 100), (0, 100)])
    assert out.dtype == np.uint8 and out.shape == (4, 4, 3)
    assert out[0, 0].tolist() == [0, 0, 255]
    assert out[0, 1].tolist() == [0, 255, 0]
    assert out[0, 2].tolist() == [0, 255, 255]
    assert out[0, 3].tolist() == [0, 0, 128]
    assert out[1, 1].tolist() == [0, 0, 0]
    # Selecting one channel and recolouring it.
    red = display.composite(data, channels=[1], ranges=[(0, 100)], colours=["#ff0000"])
    assert red[0, 1].tolist() == [255, 0, 0] and red[0, 0].tolist() == [0, 0, 0]


def _pyramid():
    """A 2-level image whose levels differ on purpose, to see which one is read."""
    full = np.full((1, 64, 64), 10, np.uint16)
    half = np.full((1, 32, 32), 200, np.uint16)
    return Image(full, ["DAPI"], levels=[full, half])


def test_composite_reads_the_pyramid_level_matching_the_downsample():
    img = _pyramid()
    kw = dict(ranges=[(0, 255)], colours=["#ffffff"])
    assert display.composite(img, **kw).shape == (64, 64, 3)
    assert display.composite(img, **kw)[0, 0, 0] == 10
    at2 = display.composite(img, downsample=2, **kw)
    assert at2.shape == (32, 32, 3) and at2[0, 0, 0] == 200      # level 1, not a stride of level 0
    at4 = display.composite(img, downsample=4, **kw)
    assert at4.shape == (16, 16, 3) and at4[0, 0, 0] == 200      # level 1 strided by 2
    region = display.composite(img, region=(8, 24, 0, 16), downsample=2, **kw)
    assert region.shape == (8, 8, 3)


def test_lazy_image_composite_equals_in_memory():
    import dask.array as da

    data = np.random.default_rng(1).integers(0, 4000, (5, 40, 50)).astype(np.uint16)
    lazy = Image(da.from_array(data, chunks=(1, 16, 16)))
    eager = Image(data)
    kw = dict(channels=[3, 1], ranges=[(0, 4000), (100, 3000)], region=(5, 30, 10, 45))
    np.testing.assert_array_equal(display.composite(lazy, **kw), display.composite(eager, **kw))


@pytest.mark.parametrize("kwargs, match", [
    ({"ranges": [(0, 1)]}, "ranges"),
    ({"colours": ["#ff0000"]}, "colours"),
    ({"region": (100, 200, 0, 5)}, "does not overlap"),
    ({"downsample": 0.5}, "downsample"),
    ({"channels": ["nope"]}, "not found"),
    ({"ranges": [(5, 5), (0, 1)]}, "lo < hi"),
])
def test_composite_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        display.composite(np.zeros((2, 8, 8), np.uint16), **kwargs)


# ---------------------------------------------------------------------------------------------- overlays
def test_label_overlay_is_transparent_where_unlabelled():
    labels = np.array([[0, 1], [2, 0]])
    out = display.label_overlay(labels, [[255, 0, 0], "#00ff00"], opacity=0.5)
    assert out.shape == (2, 2, 4)
    assert out[0, 0].tolist() == [0, 0, 0, 0]
    assert out[0, 1].tolist() == [255, 0, 0, 128]
    assert out[1, 0].tolist() == [0, 255, 0, 128]
    with pytest.raises(ValueError, match="class id 2"):
        display.label_overlay(labels, [[255, 0, 0]])
    with pytest.raises(ValueError, match="opacity"):
        display.label_overlay(labels, [[1, 2, 3], [4, 5, 6]], opacity=2)


def test_probability_overlay_colours_the_winner_and_fades_uncertain_pixels():
    probs = np.array([[[1.0, 0.5, 0.1]], [[0.0, 0.5, 0.9]]], np.float32)
    out = display.probability_overlay(probs, [[255, 0, 0], [0, 0, 255]], opacity=1.0)
    assert out[0, 0].tolist() == [255, 0, 0, 255]
    assert out[0, 1, 3] == 0                       # 50/50: invisible
    assert out[0, 2, :3].tolist() == [0, 0, 255] and 190 < out[0, 2, 3] < 215
    flat = display.probability_overlay(probs, [[255, 0, 0], [0, 0, 255]], 0.5, by_confidence=False)
    assert (flat[..., 3] == 128).all()


# ---------------------------------------------------------------------------------------------- viewport
def test_viewport_fit_and_round_trip_mapping():
    v = display.Viewport((100, 200), (25, 50))
    assert v.scale == 4 and v.visible_region() == (0, 100, 0, 200)
    assert display.Viewport((100, 200), (50, 50)).visible_region()[::3] == (0, 200)
    for cy, cx in [(0, 0), (10.5, 33), (49, 49)]:
        y, x = v.canvas_to_image(cy, cx)
        assert v.image_to_canvas(y, x) == pytest.approx((cy, cx))


def test_zoom_keeps_the_point_under_the_cursor():
    v = display.Viewport((512, 512), (256, 256))
    before = v.canvas_to_image(40, 200)
    v.zoom(4, at=(40, 200))
    assert v.scale == pytest.approx(0.5)
    assert v.canvas_to_image(40, 200) == pytest.approx(before, abs=1e-9)
    v.zoom(1e-6)
    assert v.scale == v.max_scale                  # zoom out is bounded
    v.zoom(1e9)
    assert v.scale == v.MIN_SCALE


def test_pan_cannot_lose_the_image():
    v = display.Viewport((100, 100), (100, 100))
    v.pan(1e6, 1e6)
    cy, cx = v.canvas_to_image(50, 50)
    assert -1 <= cy <= 100 and -1 <= cx <= 100
    assert v.canvas_rect() is not None


def test_render_labels_at_scale_one_is_the_label_overlay():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, (40, 60)).astype(np.uint8)
    v = display.Viewport((40, 60), (40, 60))
    rgba, rect = v.render_labels(labels, [[255, 0, 0], [0, 0, 255]], 0.5)
    assert rect == (0, 40, 0, 60)
    np.testing.assert_array_equal(rgba, display.label_overlay(labels, [[255, 0, 0], [0, 0, 255]], 0.5))
    # A region maps to just the canvas pixels that show it.
    part, rect = v.render_labels(labels, [[255, 0, 0], [0, 0, 255]], 0.5, region=(10, 12, 20, 25))
    assert rect == (10, 12, 20, 25) and part.shape == (2, 5, 4)


def test_zoomed_in_rendering_repeats_pixels_and_matches_the_mapping():
    labels = np.zeros((32, 32), np.uint8)
    labels[3, 5] = 1
    v = display.Viewport((32, 32), (64, 64))
    v.zoom(4, at=(0, 0))                           # 8 canvas pixels per image pixel
    rgba, rect = v.render_labels(labels, [[255, 255, 255]], 1.0)
    lit = np.argwhere(rgba[..., 3] > 0) + [rect[0], rect[2]]
    assert len(lit) == 64
    for cy, cx in lit:
        y, x = v.canvas_to_image(cy, cx)
        assert (np.floor(y + 0.5), np.floor(x + 0.5)) == (3, 5)   # pixel centres at whole numbers


def test_render_image_zoomed_out_reads_the_coarse_level():
    img = _pyramid()
    v = display.Viewport((64, 64), (32, 32))       # scale 2: level 1 is exact
    rgb, rect = v.render_image(img, ranges=[(0, 255)], colours=["#ffffff"])
    assert rect == (0, 32, 0, 32) and (rgb[..., 0] == 200).all()
    v.zoom(2)                                      # scale 1: level 0
    rgb, _ = v.render_image(img, ranges=[(0, 255)], colours=["#ffffff"])
    assert (rgb[..., 0] == 10).all()


def test_render_probabilities_places_a_downsampled_result():
    probs = np.zeros((2, 4, 4), np.float32)
    probs[1] = 1.0
    v = display.Viewport((16, 16), (16, 16))
    rgba, rect = v.render_probabilities(probs, [[255, 0, 0], [0, 255, 0]], origin=(8, 8), factor=2, opacity=1.0)
    assert rect == (8, 16, 8, 16) and rgba.shape == (8, 8, 4)
    assert (rgba[..., 1] == 255).all() and (rgba[..., 3] == 255).all()


def test_encode_png_round_trips():
    from io import BytesIO

    from PIL import Image as PILImage

    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    back = np.asarray(PILImage.open(BytesIO(display.encode_png(arr))))
    np.testing.assert_array_equal(back, arr)


def test_thumbnail_is_small():
    img = open_image(np.random.default_rng(0).integers(0, 100, (3, 300, 200)).astype(np.uint16))
    t = display.thumbnail(img, 1, size=50)
    assert max(t.shape[:2]) <= 50 and t.dtype == np.uint8
