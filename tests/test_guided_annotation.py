"""Guided annotation in the brush annotator (issue 6): suggested regions, map overlays, review lists.

The annotator is driven from Python as in test_widgets.py; every expected value is computed
independently with the core functions (pixlab.analysis.active / pixlab.analysis.diagnostics) on the same data.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

import pixlab
from pixlab.analysis import active
import pixlab.analysis.diagnostics as dx
import pixlab.analysis.maps
from pixlab.annotation import AnnotationGuide, AnnotationSession
from pixlab.datasets import strokes_from_mask, synthetic_fluorescence
from pixlab.image.display import Viewport
from pixlab.image.io import Image
from pixlab.widgets import BrushAnnotator

NAMES = ["background", "nuclei"]
CANVAS = (64, 48)  # (width, height): smaller than the 96 x 128 images, so the view starts zoomed out


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: one intra-op thread


@pytest.fixture(scope="module")
def data():
    """Two labelled synthetic images (the second with a 2x pyramid level) and a tiny, confident model."""
    img, truth = synthetic_fluorescence(shape=(96, 128), n_channels=2, n_nuclei=10, seed=1)
    labels = strokes_from_mask(truth, strokes_per_class=6, radius=2, length=(6, 12), seed=1)
    img2, truth2 = synthetic_fluorescence(shape=(96, 128), n_channels=2, n_nuclei=10, seed=2)
    img2 = Image(img2.data, img2.channel_names, levels=[img2.data, img2.data[:, ::2, ::2]], name="second")
    labels2 = strokes_from_mask(truth2, strokes_per_class=6, radius=2, length=(6, 12), seed=2)
    # A high learning rate makes the tiny net confident (max probability ~1) in two seconds, which the
    # label-mistake check (confidence >= 0.9) needs.
    cfg = pixlab.TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=64, epochs=12, batch_size=4,
                             patches_per_epoch=16, learning_rate=1e-2, recipe="standard", device="cpu",
                             early_stopping=False, loss="ce", scheduler="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = pixlab.train([(img, labels)], cfg, class_names=NAMES, progress=False)
    return model, (img, labels, truth), (img2, labels2, truth2)


def _annotator(data, model=True, images=1):
    m, (img, labels, _), (img2, labels2, _) = data
    a = BrushAnnotator([img, img2][:images], NAMES, canvas_size=CANVAS, preview=False, channel_picker=False,
                       autosave=False)
    a.session.set_labels(labels, image=0)
    if images > 1:
        a.session.set_labels(labels2, image=1)
    if model:
        a.set_model(m)
    return a


def _record(layer, method):
    """Replace a canvas layer's drawing method with a recorder of its arguments."""
    calls = []
    setattr(layer, method, lambda *args, **kw: calls.append(args))
    return calls


def _assert_centred(view, box):
    y0, y1, x0, x1 = box
    vy0, vy1, vx0, vx1 = view.visible_region()
    assert vy0 <= y0 and y1 <= vy1 and vx0 <= x0 and x1 <= vx1, (box, view.visible_region())
    h, w = view.canvas_shape
    cy, cx = view.canvas_to_image((h - 1) / 2, (w - 1) / 2)  # image point at the canvas centre
    assert cy == pytest.approx((y0 + y1 - 1) / 2) and cx == pytest.approx((x0 + x1 - 1) / 2)


# ---------------------------------------------------------------------------------------------- viewport
def test_center_on_centres_and_fits_a_box_at_any_zoom():
    v = Viewport((1000, 800), (60, 80))
    for box in [(10, 30, 700, 790), (0, 1000, 0, 800), (500, 501, 400, 401)]:
        v.fit().zoom(0.5)
        v.center_on(*box)
        _assert_centred(v, box)
        assert v.scale >= 1 / 8  # a one-pixel box is not blown up beyond max_zoom
    top, bottom, left, right = v.canvas_box((500, 501, 400, 401))
    assert (bottom - top, right - left) == pytest.approx((8, 8))  # one image pixel = 8 canvas pixels
    with pytest.raises(ValueError, match="y1 > y0"):
        v.center_on(5, 5, 0, 10)


# ---------------------------------------------------------------------------------------------- no model
def test_without_a_model_the_panel_says_so_and_its_controls_are_disabled(data):
    a = _annotator(data, model=False)
    g = a.guide
    assert "Train or set a model first" in g.message.value
    assert all(w.disabled for w in (g.overlay, g.refresh_button, g.check_button, g.confusion, g.n, g.box))
    g.refresh_suggestions()
    g.check_labels()
    g.go_to_suggestion(1)
    assert g.suggestions is None and g.mistakes is None and g.overlay_view(a.view) is None
    assert "Train or set a model first" in g.message.value
    with pytest.raises(ValueError, match="set_model"):
        g.guide.suggestions()
    a.set_model(data[0])
    assert not any(w.disabled for w in (g.overlay, g.refresh_button, g.check_button, g.confusion))
    assert a.guide_accordion.selected_index == 0
    a.set_model(None)
    assert g.refresh_button.disabled and g.overlay.disabled and "Train or set a model first" in g.message.value


# ---------------------------------------------------------------------------------------------- suggestions
def test_suggestions_equal_the_core_ranking_and_each_button_centres_its_box(data):
    model, (img, labels, _), _ = data
    a = _annotator(data)
    g = a.guide
    assert a.view.scale > 1                             # zoomed out: downsampled display
    rects = _record(a.canvas[3], "stroke_rect")
    g.n.value, g.box.value = 4, 32
    g.refresh_button.click()
    expected = active.suggest_regions(model, img, labels, box=32, n=4)
    pd.testing.assert_frame_equal(g.suggestions, expected)
    assert len(g.suggestion_buttons.children) == 4
    # The outlines drawn are the boxes, through the view's image -> canvas mapping.
    assert rects[-4:] == [(l, t, r - l, b - t) for t, b, l, r in
                          (a.view.canvas_box((row.y0, row.y1, row.x0, row.x1)) for row in expected.itertuples())]
    for k in (3, 1, 4):
        button = g.suggestion_buttons.children[k - 1]
        assert button.description.startswith(f"{k} (")
        button.click()
        row = expected.iloc[k - 1]
        _assert_centred(a.view, (row.y0, row.y1, row.x0, row.x1))
        assert a.view.scale == pytest.approx(32 / 24)  # zoomed in until the box spans half the canvas
        assert g.focus == (0, (row.y0, row.y1, row.x0, row.x1))
    # New strokes: the refreshed ranking is the core's on the new labels.
    a.current_class = 2
    cy, cx = a.view.image_to_canvas((row.y0 + row.y1) / 2, (row.x0 + row.x1) / 2)
    a.on_mouse_down(cx, cy)
    a.on_mouse_up(cx + 5, cy)
    assert "Labels changed" in g.message.value
    g.refresh_suggestions()
    pd.testing.assert_frame_equal(g.suggestions, active.suggest_regions(model, img, a.session.labels, box=32, n=4))


# ---------------------------------------------------------------------------------------------- overlays
def test_overlay_menu_shows_the_exact_map_overlay_at_every_zoom_and_caches_the_maps(data, monkeypatch):
    model, (img, labels, _), _ = data
    a = _annotator(data)
    g = a.guide
    calls = {"maps": 0}
    real = dx.pixel_maps

    def counting(*args, **kw):
        calls["maps"] += 1
        return real(*args, **kw)

    monkeypatch.setattr(pixlab.analysis.maps, "pixel_maps", counting)  # where the guide looks it up
    drawn = []
    a.canvas[1].put_image_data = lambda data, x=0, y=0: drawn.append((data.copy(), x, y))
    maps = real(model, img, labels)
    a.preview_opacity.value = 0.7
    for name, cmap, hi in (("entropy", "magma", 1.0), ("disagreement", "coolwarm", 1.0)):
        g.overlay.value = name
        expected = dx.map_overlay(maps[name], cmap, 0.0, hi, opacity=0.7)
        rgba, origin = g.overlay_rgba()
        np.testing.assert_array_equal(rgba, expected)
        assert origin == (0, 0)
        # What reaches the overlay layer is that RGBA sampled for the canvas, zoomed out and zoomed in.
        for zoom in (None, 4.0):
            if zoom:
                a.zoom(zoom, at=(10, 20))
            view_rgba, rect = a.view.render_overlay(expected)
            data_, x, y = drawn[-1]
            np.testing.assert_array_equal(data_, view_rgba)
            assert (x, y) == (rect[2], rect[0])
        a.fit()
    assert calls["maps"] == 1                           # one per model and labels version, not per redraw
    g.overlay.value = "prediction"
    np.testing.assert_array_equal(
        g.overlay_rgba()[0], pixlab.image.display.label_overlay(maps["prediction"], model.colours, 0.7))
    a.preview_opacity.value = 0.3                       # the opacity slider recolours the overlay
    assert (g.overlay_rgba()[0][..., 3] == round(0.3 * 255)).all()
    g.overlay.value = "none"
    assert g.overlay_rgba() is None and g.overlay_view(a.view) is None


def test_new_strokes_invalidate_the_cached_maps(data):
    a = _annotator(data)
    g = a.guide
    g.overlay.value = "loss"
    lab = a.session.labels
    ys, xs = np.nonzero(lab == 0)
    far = [(y, x) for y, x in zip(ys, xs) if 6 < y < 90 and 6 < x < 122 and not lab[y - 6:y + 7, x - 6:x + 7].any()]
    y, x = far[len(far) // 2]
    probs_before, maps_before = g.guide.probabilities(), g.guide.maps()
    rgba_before = g.overlay_rgba()[0]
    assert np.isnan(maps_before["loss"][y, x]) and rgba_before[y, x, 3] == 0   # unlabelled: no loss
    a.zoom(4, at=a.view.image_to_canvas(y, x))
    cy, cx = a.view.image_to_canvas(y, x)
    a.current_class = 1
    a.on_mouse_down(cx, cy)
    a.on_mouse_up(cx, cy)
    assert a.session.labels[y, x] == 1
    maps_after = g.guide.maps()
    assert maps_after is not maps_before and np.isfinite(maps_after["loss"][y, x])
    assert g.overlay_rgba()[0][y, x, 3] > 0
    assert g.guide.probabilities() is probs_before     # the model did not run again for a stroke
    a.undo()
    assert np.isnan(g.guide.maps()["loss"][y, x])


# ---------------------------------------------------------------------------------------------- review
def test_a_planted_wrong_stroke_is_listed_as_a_possible_label_mistake(data):
    model, (img, _, _), _ = data
    a = _annotator(data)
    g = a.guide
    probs = model.predict(img)
    lab = a.session.labels
    # Plant 'nuclei' strokes where the model is sure it is background and nothing is labelled yet.
    sure_bg = (probs[0] > 0.97) & (lab == 0)
    ok = [(y, x) for y, x in zip(*np.nonzero(sure_bg))
          if 4 <= y < 92 and 4 <= x < 124 and sure_bg[y - 4:y + 5, x - 4:x + 5].all()]
    py, px = ok[len(ok) // 2]
    a.fit()
    a.current_class = 2
    a.brush_size.value = max(1, round(4 / a.view.scale))   # ~4 image pixels wide
    a.on_mouse_down(*a.view.image_to_canvas(py, px)[::-1])
    a.on_mouse_up(*a.view.image_to_canvas(py, px)[::-1])
    assert a.session.labels[py, px] == 2
    g.check_button.click()
    df = g.mistakes
    labels = a.session.labels
    pred, conf = probs.argmax(0) + 1, probs.max(0)
    suspect = (labels > 0) & (pred != labels) & (conf >= g.min_confidence.value)
    # Every entry points at labelled pixels the model confidently calls another class ...
    assert len(df) >= 1
    for r in df.itertuples():
        assert suspect[r.y0:r.y1, r.x0:r.x1].sum() >= r.pixels
    # ... and the planted stroke is one of them.
    hits = [k for k, (_, r) in enumerate(df.iterrows(), start=1)
            if r.y0 <= py < r.y1 and r.x0 <= px < r.x1 and r["class"] == "nuclei" and r.predicted == "background"]
    assert hits, df
    pd.testing.assert_frame_equal(df, active.label_refinements(model, img, labels, min_confidence=0.9))
    g.mistake_buttons.children[hits[0] - 1].click()
    r = df.iloc[hits[0] - 1]
    _assert_centred(a.view, (r.y0, r.y1, r.x0, r.x1))


def test_choosing_a_confusion_lists_exactly_its_tiles_and_pans_across_images(data):
    model, (img, labels, _), (img2, labels2, _) = data
    a = _annotator(data, images=2)
    g = a.guide
    g.check_labels()
    report = dx.evaluate(model, [(img, labels), (img2, labels2)])
    top = report.top_confusions("all", n=10)
    cells = [v for _, v in g.confusion.options if v is not None]
    assert cells == list(zip(top["true"], top["predicted"])) and cells
    cols = ["image", "split", "y0", "y1", "x0", "x1", "cell_pixels"]
    for cell in cells:
        g.confusion.value = cell
        expected = report.tiles_with_confusion(*cell)
        pd.testing.assert_frame_equal(g.tiles[cols].reset_index(drop=True), expected[cols].reset_index(drop=True))
        assert len(g.tile_buttons.children) == len(expected)
    # A tile of the other image: its button switches image and centres the tile.
    cell, k = next((c, k) for c in cells for k, i in enumerate(report.tiles_with_confusion(*c)["image"], 1)
                   if i == 1)
    g.select_confusion(cell)
    assert g.confusion.value == cell
    g.tile_buttons.children[k - 1].click()
    r = g.tiles.iloc[k - 1]
    assert a.session.index == 1 and a.image_select.value == 1
    _assert_centred(a.view, (r.y0, r.y1, r.x0, r.x1))
    assert g.boxes()[-1][0] == (r.y0, r.y1, r.x0, r.x1)      # the tile is outlined


# ---------------------------------------------------------------------------------------------- large images
def test_images_beyond_the_budget_are_analysed_in_the_visible_region(data):
    model, (img, labels, _), _ = data
    s = AnnotationSession(img, NAMES, autosave=False)
    s.set_labels(labels)
    guide = AnnotationGuide(s, model, max_pixels=48 * 64)
    with pytest.raises(ValueError, match="zoom in"):
        guide.analysis_region(None)
    region = guide.analysis_region((20, 68, 40, 104))
    probs = model.predict(Image(img.read(region), img.channel_names))
    got = guide.suggestions(n=2, box=16, region=region)
    want = active.suggest_regions(None, None, labels[20:68, 40:104], box=16, n=2, probs=probs)
    assert got[["y0", "y1"]].to_numpy().tolist() == (want[["y0", "y1"]].to_numpy() + 20).tolist()
    assert got[["x0", "x1"]].to_numpy().tolist() == (want[["x0", "x1"]].to_numpy() + 40).tolist()
    # In the annotator: zoomed out, a clear message; zoomed in, suggestions inside the view.
    a = _annotator(data)
    a.guide.guide.max_pixels = 48 * 64
    a.guide.refresh_suggestions()
    assert a.guide.suggestions is None and "zoom in" in a.guide.message.value
    a.zoom(4)
    a.guide.refresh_suggestions()
    vy0, vy1, vx0, vx1 = a.view.visible_region()
    assert a.guide.region == (vy0, vy1, vx0, vx1)
    for r in a.guide.suggestions.itertuples():
        assert vy0 <= r.y0 and r.y1 <= vy1 and vx0 <= r.x0 and r.x1 <= vx1
