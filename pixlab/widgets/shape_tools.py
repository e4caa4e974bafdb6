"""Region tools of the brush annotator: polygon, box and points, and "accept the prediction".

The tools draw on the annotator's own ipycanvas canvas, not in an ipyannotations annotator:
ipyannotations' Polygon/Box/PointAnnotator draw on their own canvas over a fixed snapshot, in that
snapshot's coordinates, and know nothing of our :class:`~pixlab.image.display.Viewport` (zoom, pan,
pyramid level). Here every click goes through the same ``Viewport.canvas_to_image`` as a brush stroke,
so a polygon is filled at full resolution whatever the zoom, and the view can be zoomed or panned
while a polygon is open. (``PolygonTool`` in :mod:`pixlab.widgets.brush` keeps the ipyannotations
annotators for a snapshot of the view, with their corner editing.)

The widget only translates: clicks -> full-res coordinates -> :mod:`pixlab.annotation.shapes` and the
session's ``fill_shape`` / ``accept_prediction``; errors (bad shapes, no model) become the
annotator's message line, and the labels stay as they were.
"""

from __future__ import annotations

import time

import ipywidgets as widgets

from pixlab.annotation import shapes

__all__ = ["ShapeTools", "SHAPE_TOOLS", "NO_MODEL_TO_ACCEPT"]

SHAPE_TOOLS = ("polygon", "box", "points")
NO_MODEL_TO_ACCEPT = ("no model to accept a prediction from: train one (notebook 02 or the training panel) "
                      "or call annotator.set_model(model) first")
_CLOSE_PX = 8            # canvas pixels: a click this close to the first corner closes the polygon
_MOVE_INTERVAL = 0.05    # s: redraw the rubber band at most 20 times a second
_OUTLINE = "#ffffff"


class ShapeTools:
    """Polygon / box / points input on a :class:`~pixlab.widgets.BrushAnnotator` canvas, and the
    "accept prediction" controls.

    Polygon: click the corners; close it by clicking the first corner again, pressing Enter or
    "close polygon" (Backspace removes the last corner, Escape drops the polygon). Box: press on one
    corner, release on the opposite one. Points: each click marks a disc of the brush size. What a
    polygon or box fills is chosen with "Shapes fill": the selected class, nothing (erase), or the
    model's prediction (confident pixels of the chosen classes, unlabelled ones only by default).
    Each polygon, box or point is one undo step.

    Parameters
    ----------
    annotator : BrushAnnotator
        The annotator whose canvas, view, session and message line the tools use (it creates them).
    """

    def __init__(self, annotator):
        self.annotator = annotator
        self.vertices: list[tuple[float, float]] = []   # full-res (y, x) corners of the open polygon
        self.box_start = None                            # full-res (y, x) where the box drag began
        self._pointer = None                             # full-res (y, x) of the pointer while drawing
        self._last_move = 0.0
        self.last_shape = None                           # the last shape filled (a Shape)
        self.n_filled = 0                                # shapes filled so far (each one undo step)

        small = widgets.Layout(width="auto")
        self.fill = widgets.ToggleButtons(options=[("class", "class"), ("erase", "erase"),
                                                   ("prediction", "prediction")],
                                          value="class", description="Shapes fill",
                                          tooltips=["polygons and boxes get the selected class",
                                                    "polygons and boxes erase labels",
                                                    "polygons and boxes take the model's confident prediction"],
                                          style={"button_width": "90px"})
        self.close_button = widgets.Button(description="close polygon", icon="check", layout=small,
                                           tooltip="Enter; or click the first corner again")
        self.cancel_button = widgets.Button(description="drop polygon", icon="times", layout=small,
                                            tooltip="Escape")
        self.close_button.on_click(lambda _b: self.close_polygon())
        self.cancel_button.on_click(lambda _b: self.cancel())

        self.threshold = widgets.FloatSlider(value=0.9, min=0.5, max=1.0, step=0.01, description="prob ≥",
                                             continuous_update=False, readout_format=".2f",
                                             tooltip="smallest probability of the predicted class accepted",
                                             layout=widgets.Layout(width="260px"))
        self.accept_classes = widgets.SelectMultiple(description="classes", rows=3,
                                                     tooltip="classes whose prediction is accepted",
                                                     layout=widgets.Layout(width="260px"))
        self.only_unlabelled = widgets.Checkbox(value=True, description="only unlabelled pixels", indent=False,
                                                layout=small)
        self.accept_view_button = widgets.Button(description="accept prediction in view", icon="magic",
                                                 layout=small,
                                                 tooltip="label the visible region with the model's confident "
                                                         "prediction (one undo step)")
        self.accept_view_button.on_click(lambda _b: self.accept_prediction())
        self.controls = widgets.VBox([
            widgets.HBox([self.fill, self.close_button, self.cancel_button]),
            widgets.HBox([self.accept_view_button, self.threshold, self.accept_classes, self.only_unlabelled]),
        ])
        self.refresh_classes()

    # ------------------------------------------------------------------------------------------
    @property
    def tool(self) -> str:
        return self.annotator.tool.value

    def refresh_classes(self) -> None:
        """Follow the session's classes (names, additions, deletions) in the class choice."""
        s = self.annotator.session
        chosen = set(self.accept_classes.value)
        options = [(f"{k}. {n}", k) for k, n in enumerate(s.class_names, start=1)]
        self.accept_classes.options = options
        keep = tuple(k for _, k in options if k in chosen)
        self.accept_classes.value = keep or tuple(k for _, k in options)   # default: every class

    def _image_point(self, x: float, y: float):
        return self.annotator.view.canvas_to_image(y, x)

    def _fail(self, error) -> None:
        self.annotator._say(str(error), error=True)

    # ------------------------------------------------------------------------------------------
    # Mouse (the annotator forwards its canvas events while a region tool is selected)
    # ------------------------------------------------------------------------------------------

    def on_mouse_down(self, x: float, y: float) -> None:
        """Polygon: add a corner (or close on the first one). Box: start. Points: mark a disc."""
        point = self._image_point(x, y)
        if self.tool == "points":
            self.add_point(point)
        elif self.tool == "box":
            self.box_start, self._pointer = point, point
            self.draw()
        elif self.tool == "polygon":
            if len(self.vertices) >= 3:
                fy, fx = self.annotator.view.image_to_canvas(*self.vertices[0])
                if abs(fy - y) <= _CLOSE_PX and abs(fx - x) <= _CLOSE_PX:
                    self.close_polygon()
                    return
            self.vertices.append(point)
            self._pointer = point
            self.draw()

    def on_mouse_move(self, x: float, y: float) -> None:
        """Rubber band: the open polygon's next edge, or the box being dragged."""
        if not self.vertices and self.box_start is None:
            return
        self._pointer = self._image_point(x, y)
        now = time.monotonic()
        if now - self._last_move >= _MOVE_INTERVAL:
            self._last_move = now
            self.draw()

    def on_mouse_up(self, x: float, y: float) -> None:
        """Box: fill it between the press and this point."""
        if self.tool == "box" and self.box_start is not None:
            start, self.box_start, self._pointer = self.box_start, None, None
            self.draw()
            self.add_box(start, self._image_point(x, y))

    def handle_key(self, key: str) -> bool:
        """Enter closes the polygon, Backspace removes its last corner, Escape drops it; True if used."""
        if key == "Enter" and self.vertices:
            self.close_polygon()
        elif key == "Backspace" and self.vertices:
            self.vertices.pop()
            self.draw()
        elif key == "Escape" and (self.vertices or self.box_start is not None):
            self.cancel()
        else:
            return False
        return True

    # ------------------------------------------------------------------------------------------
    # Actions (plain methods: the mouse, the buttons and tests call them)
    # ------------------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Drop the open polygon or box."""
        self.vertices, self.box_start, self._pointer = [], None, None
        self.draw()

    def close_polygon(self, vertices=None) -> bool:
        """Fill the open polygon (or full-res ``vertices``) as "Shapes fill" says; True when filled.

        A bad polygon (fewer than 3 corners, crossing edges, outside the image) leaves the labels and
        the open corners as they are, and the message says what to fix.
        """
        own = vertices is None
        pts = list(self.vertices) if own else [tuple(v) for v in vertices]
        try:
            shape = shapes.polygon(pts, self.annotator.session.image.shape[-2:])
        except ValueError as e:
            hint = "; Backspace removes the last corner, Escape drops the polygon" if own and pts else ""
            self._fail(f"{e}{hint}")
            return False
        if self._fill(shape):
            if own:
                self.vertices, self._pointer = [], None
            self.draw()
            return True
        return False

    def add_box(self, corner_a, corner_b) -> bool:
        """Fill the box between two full-res corners as "Shapes fill" says; True when filled."""
        try:
            shape = shapes.box(corner_a, corner_b, self.annotator.session.image.shape[-2:])
        except ValueError as e:
            self._fail(e)
            return False
        return self._fill(shape)

    def add_point(self, centre) -> bool:
        """Mark a disc of the brush radius with the selected class at full-res ``centre``; True when done."""
        ann = self.annotator
        try:
            shape = shapes.disc(centre, ann.radius, ann.session.image.shape[-2:])
            change = ann.session.fill_shape(shape, ann.current_class)
        except ValueError as e:
            self._fail(e)
            return False
        self._filled(shape)
        ann._after_edit(change)
        return change.message is None

    def _filled(self, shape) -> None:
        self.last_shape = shape
        self.n_filled += 1

    def _fill(self, shape) -> bool:
        ann = self.annotator
        mode = self.fill.value
        if mode == "prediction":
            return self.accept_prediction(shape)
        try:
            change = ann.session.fill_shape(shape, 0 if mode == "erase" else ann.current_class)
        except ValueError as e:
            self._fail(e)
            return False
        self._filled(shape)
        ann._after_edit(change)
        return change.message is None

    def accept_prediction(self, shape=None) -> bool:
        """Label the model's confident prediction inside ``shape`` (a Shape; default the visible region).

        Uses the threshold, classes and "only unlabelled pixels" controls; one undo step. Without a
        model, or for a region too large to predict at once, the message says so and nothing changes.
        """
        ann = self.annotator
        guide = ann.guide.guide
        if guide.model is None:
            self._fail(NO_MODEL_TO_ACCEPT)
            return False
        if not self.accept_classes.value:
            self._fail("choose at least one class whose prediction to accept")
            return False
        target = shape.region if shape is not None else ann.view.visible_region()
        if target is None:
            self._fail("the image is not in view; press 'fit' (0) and try again")
            return False
        try:
            # The guide's prediction (the whole image when it fits its budget, cached and the one its
            # overlays show); a region outside what it analysed is predicted on its own.
            analysed = guide.analysis_region(ann.view.visible_region())
            if analysed is not None and not _contains(analysed, target):
                analysed = target
            probs = guide.probabilities(region=analysed)
            origin = (0, 0) if analysed is None else (analysed[0], analysed[2])
            change = ann.session.accept_prediction(probs, self.accept_classes.value, self.threshold.value,
                                                   origin=origin, region=target, shape=shape,
                                                   only_unlabelled=self.only_unlabelled.value)
        except ValueError as e:
            self._fail(e)
            return False
        self._filled(shape)
        if not change.n_changed and change.message is None:
            change.message = (f"no pixel in the {'shape' if shape is not None else 'view'} is predicted with "
                              f"probability ≥ {self.threshold.value:.2f} for the chosen classes"
                              + (" and unlabelled" if self.only_unlabelled.value else ""))
        ann._after_edit(change)
        if change.n_changed:
            ann._say(f"accepted the prediction for {change.n_changed} px (one undo step)")
        return bool(change.n_changed)

    # ------------------------------------------------------------------------------------------
    # Drawing (the annotator's shape layer)
    # ------------------------------------------------------------------------------------------

    def draw(self) -> None:
        """Redraw the open polygon / the box being dragged for the current view."""
        ann = self.annotator
        to_canvas = ann.view.image_to_canvas
        lines, closed = [], False
        if self.vertices:
            lines = [to_canvas(*p) for p in self.vertices]
            if self._pointer is not None:
                lines.append(to_canvas(*self._pointer))
        elif self.box_start is not None and self._pointer is not None:
            (ay, ax), (by, bx) = to_canvas(*self.box_start), to_canvas(*self._pointer)
            lines, closed = [(ay, ax), (ay, bx), (by, bx), (by, ax)], True
        ann._draw_shape(lines, closed, [to_canvas(*p) for p in self.vertices], _OUTLINE)


def _contains(outer, inner) -> bool:
    return outer[0] <= inner[0] and inner[1] <= outer[1] and outer[2] <= inner[2] and inner[3] <= outer[3]
