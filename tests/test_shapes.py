"""pixlab.annotation.shapes and pixlab.annotation.adjust: region shapes and edits from the prediction."""

import doctest

import numpy as np
import pytest

from pixlab.annotation import adjust, shapes
from pixlab.annotation.adjust import accept_prediction, relabel_mistake
from pixlab.annotation.shapes import box, disc, polygon


def _centres_inside(vertices, shape):
    """Reference: pixel centres inside (or on) the polygon, by GEOS point predicates, pixel by pixel."""
    import shapely
    from shapely.geometry import Polygon

    poly = Polygon([(x, y) for y, x in vertices])
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return shapely.intersects_xy(poly, xx.ravel().astype(float), yy.ravel().astype(float)).reshape(shape)


def _full(shape_obj):
    ny, nx = shape_obj.image_shape
    out = np.zeros((ny, nx), bool)
    for (y0, y1, x0, x1), m in shape_obj.tiles(tile=7):   # small tiles: the pieces must fit together
        assert m.shape == (y1 - y0, x1 - x0) and m.any()
        out[y0:y1, x0:x1] |= m
    return out


def test_docstring_examples_run():
    for module in (shapes, adjust):
        assert doctest.testmod(module, raise_on_error=False).failed == 0


def test_polygon_covers_exactly_the_pixel_centres_inside_it_including_its_edges():
    vertices = [(3.2, 4.0), (5.0, 30.5), (20.7, 33.0), (12.0, 18.0), (27.5, 9.3), (9.0, 2.0)]   # not convex
    p = polygon(vertices, (32, 40))
    np.testing.assert_array_equal(_full(p), _centres_inside(vertices, (32, 40)))
    np.testing.assert_array_equal(p.mask(), _centres_inside(vertices, (32, 40))[slice(*p.region[:2]),
                                                                                 slice(*p.region[2:])])
    # Integer corners: every pixel centre on the outline is inside, on all four sides.
    sq = polygon([(2, 2), (2, 6), (5, 6), (5, 2)], (10, 10))
    assert sq.region == (2, 6, 2, 7) and sq.mask().all()


def test_polygon_is_clipped_at_the_border_and_a_closing_click_or_double_click_is_harmless():
    vertices = [(-10, -10), (-10, 8), (5, 8), (5, -10)]
    p = polygon(vertices + [vertices[0]], (20, 20))          # closed by clicking the first corner again
    q = polygon([vertices[0], vertices[1], vertices[1], vertices[2], vertices[3]], (20, 20))   # double click
    expected = np.zeros((20, 20), bool)
    expected[:6, :9] = True
    np.testing.assert_array_equal(_full(p), expected)
    np.testing.assert_array_equal(_full(q), expected)
    assert p.region == (0, 6, 0, 9)


def test_a_polygon_on_a_whole_slide_sized_image_touches_only_its_own_tiles():
    big = (200_000, 150_000)                                  # 30 gigapixels: no array of that size exists
    p = polygon([(100_000, 70_000), (100_000, 70_050), (100_040, 70_050)], big)
    assert p.region == (100_000, 100_041, 70_000, 70_051)
    pieces = list(p.tiles())
    assert len(pieces) == 1 and pieces[0][1].sum() == _centres_inside(
        [(0, 0), (0, 50), (40, 50)], (41, 51)).sum()


@pytest.mark.parametrize("vertices, match", [
    ([(0, 0), (5, 5)], "at least 3 distinct corners, got 2"),
    ([(0, 0), (5, 5), (5, 5), (0, 0)], "at least 3 distinct corners, got 2"),
    ([(0, 0), (0, 5), (5, 0), (5, 5)], r"edges cross each other at \(y=2.5, x=2.5\)"),
    ([(0, 0), (2, 2), (4, 4)], "no area"),
    ([(20, 20), (20, 30), (30, 30)], "outside the image"),
    ([(1, 1), (float("nan"), 2), (3, 3)], "NaN"),
    ([1, 2, 3], r"\(y, x\) pairs"),
])
def test_bad_polygons_raise_one_clear_error(vertices, match):
    with pytest.raises(ValueError, match=match):
        polygon(vertices, (10, 10))


def test_box_fills_the_rectangle_between_the_corners_whichever_way_it_was_dragged():
    b = box((6.4, 9.0), (2.0, 3.6), (10, 12))
    assert b.region == (2, 7, 4, 10)
    expected = np.zeros((10, 12), bool)
    expected[2:7, 4:10] = True
    np.testing.assert_array_equal(_full(b), expected)
    assert box((-5, -5), (3, 30), (10, 12)).region == (0, 4, 0, 12)   # clipped


@pytest.mark.parametrize("a, b, match", [
    ((3, 3), (3, 8), "zero area"),
    ((3, 3), (3, 3), "zero area"),
    ((20, 20), (30, 30), "outside the image"),
    ((3.2, 3.2), (3.6, 3.6), "covers no pixel centre"),
])
def test_bad_boxes_raise_one_clear_error(a, b, match):
    with pytest.raises(ValueError, match=match):
        box(a, b, (10, 10))


def test_disc_covers_the_pixels_within_its_radius_and_always_the_one_clicked():
    d = disc((5.0, 6.0), 2.0, (12, 12))
    yy, xx = np.mgrid[:12, :12]
    np.testing.assert_array_equal(_full(d), (yy - 5) ** 2 + (xx - 6) ** 2 <= 4)
    tiny = disc((3.4, 7.6), 0.1, (12, 12))
    assert np.argwhere(_full(tiny)).tolist() == [[3, 8]]
    edge = disc((0, 0), 3, (12, 12))
    assert edge.region[0] == 0 and _full(edge)[0, 0]


@pytest.mark.parametrize("centre, radius, match", [
    ((-3, 4), 2, "outside the image"),
    ((4, 12), 2, "outside the image"),
    ((4, 4), -1, "radius"),
    ((4, 4), "big", "radius"),
])
def test_bad_points_raise_one_clear_error(centre, radius, match):
    with pytest.raises(ValueError, match=match):
        disc(centre, radius, (12, 12))


# ---------------------------------------------------------------------------------------------- adjust
def _probs():
    rng = np.random.default_rng(0)
    p = rng.random((3, 16, 20)).astype(np.float32) ** 4
    return p / p.sum(0)


def test_accept_prediction_takes_only_confident_unlabelled_pixels_of_the_chosen_classes():
    p = _probs()
    labels = np.zeros((16, 20), np.uint8)
    labels[:4] = 3
    pred, conf = p.argmax(0) + 1, p.max(0)
    out = accept_prediction(p, labels, classes=[1, 2], threshold=0.8)
    take = (labels == 0) & np.isin(pred, [1, 2]) & (conf >= 0.8)
    assert 0 < take.sum() < (labels == 0).sum()
    np.testing.assert_array_equal(out[take], pred[take])
    np.testing.assert_array_equal(out[~take], labels[~take])  # labelled pixels and the rest untouched
    assert out.dtype == labels.dtype and not np.shares_memory(out, labels)

    inside = np.zeros_like(labels, bool)
    inside[:, :10] = True
    only_left = accept_prediction(p, labels, classes=[1, 2], threshold=0.8, inside=inside)
    np.testing.assert_array_equal(only_left[:, :10], out[:, :10])
    np.testing.assert_array_equal(only_left[:, 10:], labels[:, 10:])

    over = accept_prediction(p, labels, threshold=0.8, only_unlabelled=False)
    sure = conf >= 0.8
    np.testing.assert_array_equal(over[sure], pred[sure])   # labelled pixels may be overwritten now


@pytest.mark.parametrize("kwargs, match", [
    ({"threshold": 0}, r"threshold must be a probability in \(0, 1\]"),
    ({"threshold": 1.5}, "threshold"),
    ({"classes": [4]}, r"class id\(s\) \[4\] are not among the model's classes 1..3"),
    ({"classes": []}, "at least one class"),
])
def test_accept_prediction_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        accept_prediction(_probs(), np.zeros((16, 20), np.uint8), **kwargs)


def test_accept_prediction_needs_matching_crops():
    with pytest.raises(ValueError, match="same region"):
        accept_prediction(_probs(), np.zeros((16, 21), np.uint8))


def test_relabel_mistake_changes_only_the_flagged_pixels():
    p = _probs()
    labels = np.full((16, 20), 1, np.uint8)
    labels[:, 15:] = 2
    out = relabel_mistake(p, labels, 1, 3, min_confidence=0.7)
    flagged = (labels == 1) & (p.argmax(0) == 2) & (p[2] >= 0.7)
    assert flagged.any()
    assert (out[flagged] == 3).all()
    np.testing.assert_array_equal(out[~flagged], labels[~flagged])
    with pytest.raises(ValueError, match="same"):
        relabel_mistake(p, labels, 2, 2)
