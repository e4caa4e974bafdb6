"""Region tools of the brush annotator (polygon, box, points, accept the prediction, relabel a mistake),
driven from Python the way ipycanvas / ipyevents / button clicks drive them; no browser.

Expected pixels come from an independent reference (GEOS point predicates per pixel centre, numpy
slices and distances), never from the code under test.
"""

import numpy as np
import pytest

from pixlab.annotation import AnnotationSession
from pixlab.labels.masks import load_labels
from pixlab.widgets import BrushAnnotator, PolygonTool
from pixlab.widgets.shape_tools import NO_MODEL_TO_ACCEPT

NAMES = ["bg", "fg", "other"]


def _annotator(shape=(60, 80), canvas=(80, 60), tmp_path=None, **kw):
    kw.setdefault("preview", False)
    kw.setdefault("channel_picker", False)
    if tmp_path is None:
        kw.setdefault("autosave", False)
    else:
        kw.setdefault("labels_dir", tmp_path)
        kw.setdefault("autosave_delay", 60.0)   # written by flush() in the tests, not by the timer
    img = (np.random.default_rng(0).random((3,) + shape) * 255).astype(np.uint8)
    return BrushAnnotator(img, NAMES, canvas_size=canvas, **kw)


def _click(a, y, x):
    """A mouse click at full-res image point (y, x), through the annotator's current view."""
    cy, cx = a.view.image_to_canvas(y, x)
    a.on_mouse_down(cx, cy)
    a.on_mouse_up(cx, cy)


def _key(a, key):
    a.handle_event({"type": "keydown", "key": key})


def _inside(vertices, shape):
    import shapely
    from shapely.geometry import Polygon

    yy, xx = np.mgrid[:shape[0], :shape[1]]
    poly = Polygon([(x, y) for y, x in vertices])
    return shapely.intersects_xy(poly, xx.ravel().astype(float), yy.ravel().astype(float)).reshape(shape)


def _error_text(a):
    assert "#b00" in a.message.value, f"expected an error message, got {a.message.value!r}"
    return a.message.value


class FakeModel:
    """A model whose prediction is known: class 2 with probability ``p2`` on the left half, class 3 with
    0.6 on the right half (the rest of the probability on class 1)."""

    class_names = NAMES

    def __init__(self, p2=0.95):
        self.p2 = p2

    def predict(self, image):
        ny, nx = image.shape[1:]
        p = np.zeros((3, ny, nx), np.float32)
        p[1, :, : nx // 2], p[0, :, : nx // 2] = self.p2, 1 - self.p2
        p[2, :, nx // 2:], p[0, :, nx // 2:] = 0.6, 0.4
        return p


# ---------------------------------------------------------------------------------------------- polygon
def test_polygon_clicks_on_a_zoomed_out_view_fill_the_polygon_at_full_resolution(tmp_path):
    a = _annotator(shape=(900, 1200), canvas=(120, 90), tmp_path=tmp_path)
    assert a.view.scale == 10                            # 10 image pixels per canvas pixel
    a.tool.value = "polygon"
    a.current_class = 2
    canvas_corners = [(12.3, 20.0), (15.0, 80.2), (70.0, 95.0), (40.0, 55.0), (75.5, 22.0)]
    for cy, cx in canvas_corners:
        a.on_mouse_down(cx, cy)
        a.on_mouse_up(cx, cy)
    assert len(a.shapes.vertices) == 5 and not a.session.labels.any()   # nothing filled while open
    _key(a, "Enter")
    vertices = [a.view.canvas_to_image(cy, cx) for cy, cx in canvas_corners]
    expected = _inside(vertices, (900, 1200))
    np.testing.assert_array_equal(a.session.labels == 2, expected)   # every full-res pixel, not 10x10 blocks
    assert a.shapes.vertices == []
    st = a.session.stats()
    assert st[1]["pixels"] == expected.sum() and st[1]["strokes"] == 1   # a polygon is one annotation
    a.session.flush()
    np.testing.assert_array_equal(load_labels(a.session.labels_path()), a.session.labels)
    a.undo()                                             # one undo step removes the whole polygon
    assert not a.session.labels.any()


def test_a_box_on_a_pyramid_image_shown_from_a_low_resolution_level_is_filled_at_full_resolution():
    from pixlab.image.io import Image

    data = (np.random.default_rng(1).random((2, 800, 1000)) * 1000).astype(np.uint16)
    img = Image(data, ["a", "b"], levels=[data, data[:, ::4, ::4]], name="pyramid")
    a = BrushAnnotator(img, NAMES, canvas_size=(100, 80), preview=False, channel_picker=False, autosave=False)
    reads = []
    original = img.read
    img.read = lambda *args, **kw: (reads.append(kw.get("level", args[1] if len(args) > 1 else 0)),
                                    original(*args, **kw))[1]
    a.render()
    assert a.view.scale == 10 and reads and set(reads) == {1}   # the canvas shows the 4x level
    a.tool.value = "box"
    (ay, ax), (by, bx) = (12.5, 20.3), (47.0, 61.8)            # canvas points
    a.on_mouse_down(ax, ay)
    a.on_mouse_up(bx, by)
    (y0, x0), (y1, x1) = a.view.canvas_to_image(ay, ax), a.view.canvas_to_image(by, bx)
    expected = np.zeros((800, 1000), bool)
    expected[int(np.ceil(y0)):int(np.floor(y1)) + 1, int(np.ceil(x0)):int(np.floor(x1)) + 1] = True
    np.testing.assert_array_equal(a.session.labels == 1, expected)   # full-res edges, not 4x or 10x blocks
    assert int(np.ceil(y0)) % 4 != 0 or int(np.ceil(x0)) % 4 != 0


def test_clicking_the_first_corner_closes_the_polygon_and_zoom_or_pan_may_happen_in_between():
    a = _annotator()
    a.tool.value = "polygon"
    _click(a, 10, 10)
    _click(a, 10, 40)
    a.zoom(2.0, at=(30, 40))                            # the open corners stay put in image coordinates
    a.tool.value = "pan"
    a.on_mouse_down(40, 30)
    a.on_mouse_move(45, 35)
    a.on_mouse_up(45, 35)
    a.tool.value = "polygon"
    assert len(a.shapes.vertices) == 2
    _click(a, 40, 40)
    _click(a, 10.5, 10.5)                                # within a few canvas pixels of the first corner
    expected = _inside([(10, 10), (10, 40), (40, 40)], (60, 80))
    np.testing.assert_array_equal(a.session.labels == 1, expected)


@pytest.mark.parametrize("corners, match", [
    ([(10, 10), (10, 40), (40, 10), (40, 40)], "cross each other"),     # a bow tie
    ([(10, 10), (30, 30)], "at least 3 distinct corners"),
    ([(10, 10), (20, 20), (30, 30)], "no area"),
])
def test_a_bad_polygon_leaves_the_labels_and_says_what_to_fix(corners, match):
    a = _annotator()
    a.session.paint([(5, 5)], 1, radius=2)
    before = a.session.labels.copy()
    a.tool.value = "polygon"
    for y, x in corners:
        _click(a, y, x)
    _key(a, "Enter")
    assert match in _error_text(a) and "Backspace" in a.message.value
    np.testing.assert_array_equal(a.session.labels, before)
    assert len(a.shapes.vertices) == len(corners)        # kept: fix them rather than start again
    _key(a, "Escape")
    assert a.shapes.vertices == []


def test_backspace_removes_the_last_corner_of_the_open_polygon():
    a = _annotator()
    a.tool.value = "polygon"
    for y, x in [(10, 10), (10, 40), (50, 10), (40, 40)]:   # the last corner makes the edges cross
        _click(a, y, x)
    _key(a, "Backspace")
    _key(a, "Enter")
    np.testing.assert_array_equal(a.session.labels == 1, _inside([(10, 10), (10, 40), (50, 10)], (60, 80)))


# ---------------------------------------------------------------------------------------------- box, points
def test_box_drag_fills_the_rectangle_and_erase_mode_clears_one():
    a = _annotator()
    a.tool.value = "box"
    a.current_class = 3
    (ay, ax), (by, bx) = a.view.image_to_canvas(30, 50), a.view.image_to_canvas(10, 20)
    a.on_mouse_down(ax, ay)
    a.on_mouse_move((ax + bx) / 2, (ay + by) / 2)
    a.on_mouse_up(bx, by)
    expected = np.zeros((60, 80), bool)
    expected[10:31, 20:51] = True
    np.testing.assert_array_equal(a.session.labels == 3, expected)
    assert a.session.stats()[2]["strokes"] == 1
    a.shapes.fill.value = "erase"
    a.shapes.add_box((15, 25), (20, 30))
    expected[15:21, 25:31] = False
    np.testing.assert_array_equal(a.session.labels == 3, expected)
    a.undo()
    a.undo()
    assert not a.session.labels.any()


def test_each_point_click_is_a_disc_of_the_brush_radius_and_one_undo_step():
    a = _annotator(brush_size=8)                         # scale 1: radius 4 image pixels
    a.tool.value = "points"
    a.current_class = 2
    _click(a, 20, 20)
    _click(a, 40, 60)
    yy, xx = np.mgrid[:60, :80]
    discs = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 16) | ((yy - 40) ** 2 + (xx - 60) ** 2 <= 16)
    np.testing.assert_array_equal(a.session.labels == 2, discs)
    assert a.session.stats()[1]["strokes"] == 2
    a.undo()
    np.testing.assert_array_equal(a.session.labels == 2, (yy - 20) ** 2 + (xx - 20) ** 2 <= 16)


def test_zero_area_box_and_a_click_outside_the_image_are_refused_with_a_message():
    a = _annotator(canvas=(120, 60))                     # the 80 px wide image leaves margins left and right
    a.session.paint([(5, 5)], 1, radius=2)
    before = a.session.labels.copy()
    a.tool.value = "box"
    cy, cx = a.view.image_to_canvas(20, 20)
    a.on_mouse_down(cx, cy)
    a.on_mouse_up(cx, cy)
    assert "zero area" in _error_text(a)
    a.tool.value = "points"
    a.on_mouse_down(2, 30)                               # canvas margin: image x < 0
    assert "outside the image" in _error_text(a)
    np.testing.assert_array_equal(a.session.labels, before)
    a.undo()                                             # no empty undo steps were added: this is the stroke
    assert not a.session.labels.any() and not a.session.can_undo


def test_tool_keys_select_the_region_tools():
    a = _annotator()
    for key, tool in [("g", "polygon"), ("r", "box"), (".", "points"), ("b", "brush")]:
        _key(a, key)
        assert a.tool.value == tool


def test_switching_to_the_brush_drops_an_open_polygon():
    a = _annotator()
    a.tool.value = "polygon"
    _click(a, 10, 10)
    a.tool.value = "brush"
    assert a.shapes.vertices == []


# ---------------------------------------------------------------------------------------------- prediction
def test_accepting_the_prediction_in_a_box_fills_only_unlabelled_confident_pixels_of_chosen_classes():
    a = _annotator()
    a.session.paint([(20, 20), (20, 60)], 1, radius=2)   # a stroke across both halves
    before = a.session.labels.copy()
    a.set_model(FakeModel(p2=0.95))
    a.shapes.fill.value = "prediction"
    a.shapes.threshold.value = 0.9
    a.tool.value = "box"
    assert a.shapes.add_box((10, 10), (40, 70))
    lab = a.session.labels
    box = np.zeros((60, 80), bool)
    box[10:41, 10:71] = True
    left = np.zeros_like(box)
    left[:, :40] = True
    # Class 2 (0.95 >= 0.9) on the unlabelled left part of the box; class 3 (0.6) is below the threshold.
    np.testing.assert_array_equal(lab == 2, box & left & (before == 0))
    np.testing.assert_array_equal(lab[before > 0], before[before > 0])   # the stroke is kept
    assert not (lab == 3).any()
    a.undo()                                             # one undo step
    np.testing.assert_array_equal(a.session.labels, before)

    a.shapes.threshold.value = 0.55
    a.shapes.accept_classes.value = (3,)                 # only class 3 this time
    a.shapes.accept_prediction()                         # the whole view
    np.testing.assert_array_equal(a.session.labels == 3, ~left & (before == 0))
    assert not (a.session.labels == 2).any()


def test_accepting_the_prediction_in_a_polygon_stays_inside_it():
    a = _annotator()
    a.set_model(FakeModel())
    a.shapes.fill.value = "prediction"
    a.tool.value = "polygon"
    corners = [(5, 5), (5, 35), (50, 20)]
    for y, x in corners:
        _click(a, y, x)
    _key(a, "Enter")
    np.testing.assert_array_equal(a.session.labels == 2, _inside(corners, (60, 80)))


def test_accepting_a_prediction_without_a_model_changes_nothing_and_says_why():
    a = _annotator()
    a.session.paint([(5, 5)], 1, radius=2)
    before = a.session.labels.copy()
    a.shapes.fill.value = "prediction"
    assert not a.shapes.add_box((10, 10), (40, 40))
    assert NO_MODEL_TO_ACCEPT.split(":")[0] in _error_text(a)
    a.shapes.accept_view_button.click()     # the button, as a person would press it
    assert NO_MODEL_TO_ACCEPT.split(":")[0] in _error_text(a)
    np.testing.assert_array_equal(a.session.labels, before)


def test_relabel_button_of_a_possible_mistake_gives_the_flagged_pixels_the_models_class():
    a = _annotator()
    a.session.paint([(30, 5), (30, 30)], 3, radius=2)    # class 3 brushed where the model says class 2
    a.session.paint([(30, 50), (30, 70)], 1, radius=2)   # right half: the model says class 3 at 0.6
    before = a.session.labels.copy()
    a.set_model(FakeModel(p2=0.95))
    panel = a.guide
    panel.mistakes = panel.guide.refinements(0.9)        # what "Check labels" lists for this image
    assert len(panel.mistakes) == 1 and panel.mistakes.iloc[0]["class"] == "other"
    panel._show_mistakes()
    relabel = panel.relabel_buttons.children[0]
    assert "relabel as 'fg'" in relabel.description
    relabel.click()
    flagged = (before == 3)                              # all of that stroke is on the left half
    np.testing.assert_array_equal(a.session.labels == 2, flagged)
    np.testing.assert_array_equal(a.session.labels[~flagged], before[~flagged])
    assert len(panel.mistakes) == 0
    a.undo()
    np.testing.assert_array_equal(a.session.labels, before)


# ---------------------------------------------------------------------------------------------- ipyannotations
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside ipyannotations 0.5.1
def test_ipyannotations_tool_fills_boxes_and_points_and_reports_a_bad_polygon():
    from ipyevents import Event

    a = _annotator(brush_size=4)
    for kind in ("polygon", "box", "points"):
        tool = PolygonTool(a, kind)
        assert not any(isinstance(c, Event) for c in tool.polygons.children)   # no view-less child
    tool = PolygonTool(a, "box")
    n = tool.submit([{"type": "box", "label": "fg", "xyxy": (10, 5, 30, 15)},
                     {"type": "point", "label": "other", "coordinates": (50, 40)},
                     {"type": "polygon", "label": "fg", "points": [(0, 0), (20, 20), (0, 20), (20, 0)]}])
    assert n == 2
    assert (a.session.labels[5:16, 10:31] == 2).all() and a.session.labels[4, 10] == 0
    assert a.session.labels[40, 50] == 3
    assert "shape 3" in tool.message.value and "cross each other" in tool.message.value
    with pytest.raises(ValueError, match="kind"):
        PolygonTool(a, "circle")


# ---------------------------------------------------------------------------------------------- session
def test_session_region_methods_are_one_undo_step_each_and_validate_the_image():
    s = AnnotationSession(np.zeros((30, 40), np.uint8), ["a", "b"], autosave=False)
    s.fill_polygon([(2, 2), (2, 10), (10, 10), (10, 2)], "a")
    s.fill_box((12, 12), (20, 30), "b")
    s.paint_point((25, 35), "a", radius=1.5)
    assert [st["strokes"] for st in s.stats()] == [2, 1]
    for _ in range(3):
        s.undo()
    assert not s.labels.any()
    from pixlab.annotation.shapes import box

    with pytest.raises(ValueError, match="made for an image of size"):
        s.fill_shape(box((0, 0), (5, 5), (50, 50)), "a")
    with pytest.raises(ValueError, match="outside the image"):
        s.paint_point((30, 5), "a")
    with pytest.raises(ValueError, match="has 3 classes but the session has 2"):
        s.accept_prediction(np.full((3, 30, 40), 1 / 3, np.float32))
