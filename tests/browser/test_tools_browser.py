"""Region tools in real JupyterLab + Chromium: polygon, box and points with the mouse, undo, accepting
the prediction in a box, the guided panel's "annotate here next", keyboard focus, no error boxes.

The notebook is the real ``notebooks/01_annotate.ipynb`` (papermill-style parameters: a synthetic
256 x 256 image without labels) plus one cell showing the ipyannotations tool (``PolygonTool``). The
model is a stand-in defined in the kernel whose probabilities are known, so the expected labels are
exact. Expected pixels are computed here, per pixel centre with GEOS predicates / numpy, from the
shape corners the kernel received (read through a second jupyter_client), never by the code under
test; the labels file on disk is what is compared.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from labtools import REPO, Notebook, canvas_pixels, drag, poll

CLASSES = ["background", "nuclei"]
SHAPE = (256, 256)
# Canvas points (x, y) of the 720 x 540 canvas; the image is fitted in columns 90..630.
POLYGON = [(150, 80), (300, 70), (330, 200), (220, 160), (160, 230)]     # class 1, not convex
BOX = [(400, 300), (560, 420)]                                            # class 2
POINTS = [(200, 420), (260, 470)]                                         # class 2
ACCEPT_BOX = [(120, 180), (600, 300)]     # over both model halves and over the polygon drawn first
# The stand-in model: class 2 at 0.95 left of image column 128, class 1 at 0.7 on the right, and an
# uncertain (0.5 / 0.5) block where "annotate here next" must send the view.
UNSURE = (200, 240, 170, 210)
MODEL_CODE = f"""
import numpy as _np
class StandInModel:
    class_names = {CLASSES!r}
    colours = [[80, 80, 80], [255, 0, 255]]
    def predict(self, image):
        ny, nx = image.shape[1:]
        p = _np.zeros((2, ny, nx), _np.float32)
        p[1, :, : nx // 2] = 0.95
        p[0, :, nx // 2:] = 0.7
        p[0] = _np.where(p[0] == 0, 1 - p[1], p[0]); p[1] = 1 - p[0]
        y0, y1, x0, x1 = {UNSURE!r}
        p[:, y0:y1, x0:x1] = 0.5
        return p
annotator.set_model(StandInModel())
True"""


def _read_labels(path):
    from pixlab.labels.masks import load_labels

    for _ in range(20):  # replaced atomically; a read may race the rename on some filesystems
        try:
            return load_labels(path)
        except (OSError, ValueError):
            time.sleep(0.1)
    return load_labels(path)


def _on_disk(env, expected, what: str, timeout: float = 30.0):
    """Poll until the labels file holds exactly ``expected`` (autosave follows each edit)."""
    def ok():
        if not env.labels_file.is_file():
            return not expected.any()
        return np.array_equal(_read_labels(env.labels_file), expected)

    try:
        poll(ok, timeout=timeout, what=what)
    except AssertionError:
        got = _read_labels(env.labels_file) if env.labels_file.is_file() else np.zeros(SHAPE, np.uint8)
        diff = np.argwhere(got != expected)
        raise AssertionError(f"{what}: {len(diff)} pixel(s) differ, e.g. (y, x) {diff[:5].tolist()}") from None


def _inside(vertices):
    """Pixel centres inside or on the polygon (GEOS point predicates)."""
    import shapely
    from shapely.geometry import Polygon

    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    poly = Polygon([(x, y) for y, x in vertices])
    return shapely.intersects_xy(poly, xx.ravel().astype(float), yy.ravel().astype(float)).reshape(SHAPE)


def _box(corners):
    (ay, ax), (by, bx) = corners
    out = np.zeros(SHAPE, bool)
    out[int(np.ceil(min(ay, by))):int(np.floor(max(ay, by))) + 1,
        int(np.ceil(min(ax, bx))):int(np.floor(max(ax, bx))) + 1] = True
    return out


def _disc(centre, radius):
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    out = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2
    out[int(np.floor(centre[0] + 0.5)), int(np.floor(centre[1] + 0.5))] = True
    return out


def _click(page, canvas, x, y):
    canvas.scroll_into_view_if_needed()   # a click on a widget button may have scrolled the notebook
    box = canvas.bounding_box()
    sx = box["width"] / float(canvas.evaluate("c => c.width"))
    sy = box["height"] / float(canvas.evaluate("c => c.height"))
    page.mouse.click(box["x"] + x * sx, box["y"] + y * sy)


def _select_tool(env, name: str) -> None:
    env.page.locator(".widget-toggle-buttons button", has_text=name).first.click()
    poll(lambda: env.nb.eval("annotator.tool.value") == name, what=f"the {name} tool")


def _select_class(env, k: int) -> None:
    env.page.get_by_label(f"{k}. {CLASSES[k - 1]}", exact=True).check()
    poll(lambda: env.nb.eval("annotator.current_class") == k, what=f"class {k}")


def _last_shape(env, n_before: int):
    """Corners and radius of the shape the kernel filled last, once its undo step exists."""
    poll(lambda: env.nb.eval("annotator.shapes.n_filled") > n_before, what="the shape to be filled")
    return env.nb.eval("[annotator.shapes.last_shape.vertices.tolist(), annotator.shapes.last_shape.radius]")


def _n_filled(env) -> int:
    return env.nb.eval("annotator.shapes.n_filled")


def _near_clicks(env, vertices, clicks) -> None:
    """The corners the kernel got are where the mouse clicked (within a canvas pixel)."""
    expected = env.nb.eval(f"[annotator.view.canvas_to_image(y, x) for x, y in {clicks!r}]")
    scale = env.nb.eval("annotator.view.scale")
    assert np.abs(np.array(vertices) - np.array(expected)).max() <= 1.5 * scale, (vertices, expected)


@pytest.fixture(scope="module")
def env(lab, page):
    """Notebook 01 (plus a cell with the ipyannotations tool) after Run All; a small namespace."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    from pixlab.datasets import synthetic_fluorescence
    from pixlab.image.io import write_ome_tiff

    img, _ = synthetic_fluorescence(shape=SHAPE, n_channels=2, n_nuclei=10, seed=7)
    image = lab.root / "tools.ome.tif"
    write_ome_tiff(image, img.read(), channel_names=img.channel_names)
    run_dir = lab.root / "tools-run"
    nb_node = parameterize_notebook(load_notebook_node(str(REPO / "notebooks" / "01_annotate.ipynb")),
                                    {"run_dir": str(run_dir), "images": [str(image)], "class_names": CLASSES,
                                     "preview": False})
    nb_node.cells.append(nbformat.v4.new_code_cell(
        "from pixlab.widgets import PolygonTool\npolygon_tool = PolygonTool(annotator)\npolygon_tool"))
    nbformat.write(nb_node, lab.root / "tools.ipynb")
    nb = Notebook(lab, page, "tools.ipynb", "tools").open()
    nb.run_all()
    assert nb.errors() == []
    canvas = page.locator(".jupyter-widgets canvas").first
    canvas.wait_for(state="visible")
    canvas.scroll_into_view_if_needed()
    yield SimpleNamespace(nb=nb, page=page, canvas=canvas, labels_file=run_dir / "labels" / "tools.labels.png")
    nb.close()


def test_polygon_box_and_points_drawn_with_the_mouse_are_the_labels_on_disk_and_undo_removes_each(env):
    page, nb, canvas = env.page, env.nb, env.canvas
    assert not env.labels_file.exists(), "the test image must start without labels"
    nb.screenshot("annotator-with-region-tools")

    # A click without a drag is a box of zero area: refused in the message line, nothing labelled.
    _select_tool(env, "box")
    _click(page, canvas, 300, 300)
    poll(lambda: page.get_by_text("has zero area").count() > 0, what="the zero-area message in the widget")
    assert nb.eval("int(annotator.session.labels.any())") == 0
    page.get_by_text("has zero area").first.evaluate("e => e.scrollIntoView({block: 'end'})")
    nb.screenshot("zero-area-box-refused")

    # Polygon, class 1: click the corners, then the first corner again to close it.
    _select_tool(env, "polygon")
    n = _n_filled(env)
    for x, y in POLYGON:
        _click(page, canvas, x, y)
    poll(lambda: len(nb.eval("annotator.shapes.vertices")) == len(POLYGON), what="the polygon's corners")
    nb.screenshot("polygon-open")
    _click(page, canvas, POLYGON[0][0] + 2, POLYGON[0][1] + 2)
    corners, _ = _last_shape(env, n)
    _near_clicks(env, corners, POLYGON)
    expected = np.zeros(SHAPE, np.uint8)
    expected[_inside(corners)] = 1
    _on_disk(env, expected, "the polygon")
    steps = [expected.copy()]

    # Box, class 2: press on one corner, drag, release on the opposite one.
    _select_class(env, 2)
    _select_tool(env, "box")
    n = _n_filled(env)
    canvas.scroll_into_view_if_needed()
    drag(page, canvas, BOX, steps=8)
    corners, _ = _last_shape(env, n)
    _near_clicks(env, corners, BOX)
    expected[_box(corners)] = 2
    _on_disk(env, expected, "the box")
    steps.append(expected.copy())

    # Points, class 2: one disc of the brush radius per click.
    _select_tool(env, "points")
    for x, y in POINTS:
        n = _n_filled(env)
        _click(page, canvas, x, y)
        (centre,), radius = _last_shape(env, n)
        _near_clicks(env, [centre], [(x, y)])
        expected[_disc(centre, radius)] = 2
        steps.append(expected.copy())
    _on_disk(env, expected, "the points")
    stats = nb.eval("annotator.session.stats()")
    assert [s["strokes"] for s in stats] == [1, 3]          # a polygon, a box, two points
    assert [s["pixels"] for s in stats] == [int((expected == k).sum()) for k in (1, 2)]
    nb.screenshot("polygon-box-points")

    # Undo removes each, last first: the file goes back through every earlier state to nothing.
    for previous in reversed([np.zeros(SHAPE, np.uint8)] + steps[:-1]):
        page.locator("button", has_text="undo").first.click()
        _on_disk(env, previous, "an undo")
    nb.screenshot("all-undone")


def test_accepting_the_prediction_in_a_box_fills_only_unlabelled_pixels_above_the_threshold(env):
    page, nb, canvas = env.page, env.nb, env.canvas
    assert nb.eval(MODEL_CODE)
    canvas.scroll_into_view_if_needed()
    _select_class(env, 1)
    _select_tool(env, "polygon")
    n = _n_filled(env)
    for x, y in POLYGON + [POLYGON[0]]:
        _click(page, canvas, x, y)
    corners, _ = _last_shape(env, n)
    before = np.zeros(SHAPE, np.uint8)
    before[_inside(corners)] = 1
    _on_disk(env, before, "the polygon under the accepted box")

    page.locator(".widget-toggle-buttons button", has_text="prediction").first.click()
    poll(lambda: nb.eval("annotator.shapes.fill.value") == "prediction", what="fill with the prediction")
    assert nb.eval("annotator.shapes.threshold.value") == 0.9
    _select_tool(env, "box")
    n = _n_filled(env)
    canvas.scroll_into_view_if_needed()
    drag(page, canvas, ACCEPT_BOX, steps=8)
    corners, _ = _last_shape(env, n)
    in_box = _box(corners)
    assert in_box[:, :128].any() and in_box[:, 128:].any() and (in_box & (before > 0)).any()
    expected = before.copy()
    left = np.zeros(SHAPE, bool)
    left[:, :128] = True
    unsure = np.zeros(SHAPE, bool)
    unsure[UNSURE[0]:UNSURE[1], UNSURE[2]:UNSURE[3]] = True
    # Only unlabelled pixels with probability >= 0.9: class 2 on the left; the right (0.7) stays empty.
    expected[in_box & left & ~unsure & (before == 0)] = 2
    _on_disk(env, expected, "the accepted prediction")
    assert (expected[in_box] == 0).any() and (expected[in_box & (before > 0)] == 1).all()
    poll(lambda: page.get_by_text("accepted the prediction for").count() > 0, what="the accept message")
    nb.screenshot("prediction-accepted-in-box")

    page.locator("button", has_text="undo").first.click()  # one undo step takes it all back
    _on_disk(env, before, "undoing the accepted prediction")
    page.locator(".widget-toggle-buttons button", has_text="class").first.click()


def test_annotate_here_next_pans_the_view_to_the_suggested_box(env):
    page, nb, canvas = env.page, env.nb, env.canvas
    if not nb.eval("annotator.guide.ready"):
        assert nb.eval(MODEL_CODE)
    nb.eval("annotator.fit()\nTrue")          # start from the whole image
    page.locator("button", has_text="Refresh suggestions").click()
    poll(lambda: nb.eval("annotator.guide.suggestions is not None"), what="the suggestions")
    best = nb.eval("annotator.guide.suggestions.iloc[0][['y0', 'y1', 'x0', 'x1']].astype(int).tolist()")
    assert best[0] < UNSURE[1] and UNSURE[0] < best[1] and best[2] < UNSURE[3] and UNSURE[2] < best[3]
    before = nb.eval("[annotator.view.y0, annotator.view.x0, annotator.view.scale]")
    nb.screenshot("suggestions")

    page.locator(".widget-button", has_text="1 (").first.click()   # "1 (score)": the best box
    poll(lambda: nb.eval("[annotator.view.y0, annotator.view.x0, annotator.view.scale]") != before,
         what="the view to move")
    # The view is centred on the box and shows all of it, zoomed in from the whole-image view.
    y0, y1, x0, x1 = best
    view = nb.eval("[annotator.view.visible_region(), annotator.view.canvas_to_image(270, 360), annotator.view.scale]")
    (vy0, vy1, vx0, vx1), (cy, cx), scale = view
    assert vy0 <= y0 and y1 <= vy1 and vx0 <= x0 and x1 <= vx1
    assert abs(cy - (y0 + y1) / 2) <= 2 * scale + 1 and abs(cx - (x0 + x1) / 2) <= 2 * scale + 1
    assert scale < before[2]
    # What the browser shows: the focus outline (cyan) around the box, on the canvas.
    top, bottom, left, right = nb.eval(f"list(annotator.view.canvas_box({best!r}))")
    canvas.scroll_into_view_if_needed()

    def outlined():
        px = canvas_pixels(canvas)[..., :3].astype(int)
        rows = px[int(round(top)) - 1:int(round(top)) + 2, int(left) + 3:int(right) - 3]
        return max((np.abs(r - [0, 229, 255]).max(-1) <= 40).mean() for r in rows) > 0.8

    poll(outlined, timeout=20, what="the cyan outline of the box on the canvas")
    canvas.evaluate("c => c.scrollIntoView({block: 'center'})")
    nb.screenshot("panned-to-suggestion")


def test_keys_reach_the_widgets_and_no_javascript_error_box_shows_anywhere(env):
    page, nb, canvas = env.page, env.nb, env.canvas
    canvas.scroll_into_view_if_needed()
    n_cells = page.locator(".jp-Notebook .jp-Cell").count()
    canvas.hover()
    for key, tool in (("g", "polygon"), ("r", "box"), ("b", "brush")):  # b is also JupyterLab's "cell below"
        page.keyboard.press(key)
        poll(lambda: nb.eval("annotator.tool.value") == tool, what=f"key {key!r} to select the {tool} tool")
    assert page.locator(".jp-Notebook .jp-Cell").count() == n_cells, "JupyterLab took the key, not the widget"
    # With a polygon open, Backspace removes its last corner and Enter closes it (JupyterLab's own Enter,
    # "edit the cell", must not fire).
    page.keyboard.press("g")
    poll(lambda: nb.eval("annotator.tool.value") == "polygon", what="key 'g'")
    n = _n_filled(env)
    for x, y in POLYGON[:4]:
        _click(page, canvas, x, y)
    poll(lambda: len(nb.eval("annotator.shapes.vertices")) == 4, what="four corners")
    canvas.hover()
    page.keyboard.press("Backspace")
    poll(lambda: len(nb.eval("annotator.shapes.vertices")) == 3, what="Backspace to remove a corner")
    page.keyboard.press("Enter")
    poll(lambda: nb.eval("annotator.shapes.n_filled") == n + 1, what="Enter to close the polygon")
    assert not page.evaluate("() => !!document.querySelector('.jp-Notebook.jp-mod-editMode')")
    page.locator("button", has_text="undo").first.click()

    # The ipyannotations tool: shown, and its keyboard shortcuts (1-9 pick a class) work.
    tool_canvas = page.locator(".jupyter-widgets canvas").last
    tool_canvas.scroll_into_view_if_needed()
    tool_canvas.hover()
    page.keyboard.press("2")
    poll(lambda: nb.eval("polygon_tool.polygons.class_selector.value") == CLASSES[1],
         what="the ipyannotations tool to take key 2")
    nb.screenshot("ipyannotations-tool")

    boxes = page.locator(".jupyter-widgets-error-widget").count()
    texts = page.evaluate("""() => ['javascript error', 'Error displaying widget', 'Failed to create view']
                                   .filter(t => document.body.innerText.includes(t))""")
    assert boxes == 0 and texts == [], f"{boxes} widget error box(es), texts {texts}"
