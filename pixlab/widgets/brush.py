"""BrushAnnotator: paint class labels on images in JupyterLab (ipycanvas), with an instant preview.

The widget only translates: canvas coordinates -> :class:`pixlab.image.display.Viewport` -> image
coordinates -> :class:`pixlab.annotation.AnnotationSession`. Each mouse move paints one segment in the
session and redraws only the canvas pixels that segment changed; nothing here holds labels or logic.

Handlers are plain methods (``on_mouse_down(x, y)``, ``on_mouse_move``, ``on_mouse_up``,
``handle_event(event_dict)``) so tests and scripts can drive the widget without a browser.
"""

from __future__ import annotations

import html
import threading
import time

import ipywidgets as widgets
from ipycanvas import MultiCanvas, hold_canvas

from pixlab.image import display
from pixlab.annotation import AnnotationSession, Change
from pixlab.widgets.guide import GuidePanel
from pixlab.widgets.shape_tools import SHAPE_TOOLS, ShapeTools
from pixlab.widgets.snapshot_tool import PolygonTool

__all__ = ["BrushAnnotator", "PolygonTool"]  # PolygonTool lives in pixlab.widgets.snapshot_tool

# ipycanvas batches drawing through one global manager (hold_canvas flips a global flag), and the
# preview is drawn from its worker thread: one lock keeps each batch whole.
_DRAW_LOCK = threading.RLock()

# Canvas layers, bottom to top; MultiCanvas hands mouse events to the top one. The preview layer also
# shows the guided panel's diagnostic maps; the guide layer holds box outlines (suggestions, review);
# the shape layer the polygon or box being drawn.
_IMAGE, _PREVIEW, _LABELS, _GUIDE, _SHAPE = 0, 1, 2, 3, 4
_PAN_RENDER_INTERVAL = 0.05  # s: while dragging the view, re-render at most 20 times a second
_TOOLS = ("brush", "eraser", "pan") + SHAPE_TOOLS
_TOOL_KEYS = {"b": "brush", "e": "eraser", "p": "pan", "g": "polygon", "r": "box", ".": "points"}


def _hex(colour) -> str:
    r, g, b = (int(v) for v in colour)
    return f"#{r:02x}{g:02x}{b:02x}"


def _error(text: str) -> str:
    return f"<span style='color:#b00'>{html.escape(str(text))}</span>"


def _note(text: str) -> str:
    return f"<span style='color:#555'>{html.escape(str(text))}</span>"


class BrushAnnotator(widgets.VBox):
    """Brush annotation of one or several images, with zoom/pan, undo, autosave and a live preview.

    Parameters
    ----------
    images : path, folder, Image, array, list of them, or AnnotationSession
        What to annotate (see :class:`pixlab.annotation.AnnotationSession`).
    class_names, colours, labels_dir :
        Passed to the session when ``images`` is not a session already.
    canvas_size : (int, int)
        ``(width, height)`` of the canvas in screen pixels.
    brush_size : int
        Brush diameter in *screen* pixels: the same on-screen size at every zoom (painted at full
        image resolution, so zoom in for fine work).
    opacity, preview_opacity : float
        Label and preview overlay opacity.
    preview : bool
        Refit the preview after each stroke.
    channel_picker : bool
        Show a :class:`~pixlab.widgets.ChannelPicker` for the image display (and the channels used).
    **session_kwargs
        Other :class:`~pixlab.annotation.AnnotationSession` options (``autosave_delay``, ...).

    Notes
    -----
    Once a model is set (:meth:`set_model`, or training through a TrainPanel), the "Guided annotation"
    panel under the canvas (:class:`~pixlab.widgets.GuidePanel`, ``self.guide``) outlines regions to
    brush next, shows diagnostic maps in the overlay layer and lists possible label mistakes and
    confused tiles; its buttons centre the view on them (:meth:`go_to`).

    Region tools (``self.shapes``, :class:`~pixlab.widgets.shape_tools.ShapeTools`): polygon (click the
    corners, close on the first one or with Enter), box (drag corner to corner) and points (a disc of the
    brush size per click); polygons and boxes fill the selected class, erase, or take the model's
    confident prediction ("accept prediction", also for the whole view). Each is one undo step.

    Keyboard, with the pointer over the canvas: b brush, e eraser, p pan, g polygon, r box, . points,
    1-9 class, ctrl+z undo, ctrl+y / ctrl+shift+z redo, + / - zoom, 0 fit, arrows pan, [ / ] brush size;
    with a polygon open: Enter closes it, Backspace removes its last corner, Escape drops it. The mouse
    wheel zooms at the pointer.
    """

    def __init__(self, images, class_names=None, colours=None, labels_dir=None, *, canvas_size=(720, 540),
                 brush_size: int = 10, opacity: float = 0.5, preview: bool = True, preview_opacity: float = 0.4,
                 channel_picker: bool = True, **session_kwargs):
        if isinstance(images, AnnotationSession):
            self.session = images
        else:
            self.session = AnnotationSession(images, class_names, colours, labels_dir, **session_kwargs)
        s = self.session
        width, height = (int(v) for v in canvas_size)
        self.canvas = MultiCanvas(5, width=width, height=height,
                                  layout=widgets.Layout(width=f"{width}px", height=f"{height}px"))
        self.view = display.Viewport(s.image.shape, (height, width))
        self._drawing = False
        self._last = None
        self._pan_from = None
        self._last_pan_render = 0.0
        self._preview_future = None
        self._preview_result = None
        self._dl_model = None
        self.guide = None  # the GuidePanel, made once the controls it reads exist
        self._guide_drawn = False
        self.stroke_times: list[float] = []  # Python-side seconds per mouse-move event (for bench/)

        # -- tools
        self.tool = widgets.ToggleButtons(options=list(_TOOLS), value="brush", description="Tool",
                                          tooltips=["b: paint the selected class", "e: erase labels",
                                                    "p: drag to move the view",
                                                    "g: click corners, close on the first one or with Enter",
                                                    "r: drag from one corner to the opposite one",
                                                    ". : each click marks a disc of the brush size"],
                                          style={"button_width": "76px"})
        self.brush_size = widgets.IntSlider(value=int(brush_size), min=1, max=200, description="Brush",
                                            tooltip="brush diameter in screen pixels", continuous_update=False)
        self.opacity = widgets.FloatSlider(value=float(opacity), min=0, max=1, step=0.05, description="Labels",
                                           tooltip="label opacity", continuous_update=False)
        self.preview_opacity = widgets.FloatSlider(value=float(preview_opacity), min=0, max=1, step=0.05,
                                                   description="Preview", tooltip="preview opacity",
                                                   continuous_update=False)
        self.preview_enabled = widgets.Checkbox(value=bool(preview), description="instant preview", indent=False)
        self.preview_source = widgets.ToggleButtons(options=["features", "model"], value="features",
                                                    description="Preview from", disabled=True,
                                                    tooltips=["random forest refitted after each stroke",
                                                              "the trained deep-learning model"],
                                                    style={"button_width": "80px"})
        small = widgets.Layout(width="auto")
        self.undo_button = widgets.Button(description="undo", icon="undo", tooltip="ctrl+z", layout=small)
        self.redo_button = widgets.Button(description="redo", icon="repeat", tooltip="ctrl+y", layout=small)
        self.clear_button = widgets.Button(description="clear class", icon="trash",
                                           tooltip="erase every pixel of the selected class in this image",
                                           layout=small)
        self.zoom_in_button = widgets.Button(icon="search-plus", tooltip="zoom in (+)", layout=small)
        self.zoom_out_button = widgets.Button(icon="search-minus", tooltip="zoom out (-)", layout=small)
        self.fit_button = widgets.Button(icon="expand", tooltip="fit the image (0)", layout=small)
        self.undo_button.on_click(lambda _: self.undo())
        self.redo_button.on_click(lambda _: self.redo())
        self.clear_button.on_click(lambda _: self.clear_class())
        self.zoom_in_button.on_click(lambda _: self.zoom(2.0))
        self.zoom_out_button.on_click(lambda _: self.zoom(0.5))
        self.fit_button.on_click(lambda _: self.fit())

        # -- images
        self.image_select = widgets.Dropdown(options=[(n, i) for i, n in enumerate(s.names)], value=s.index,
                                             description="Image", layout=widgets.Layout(width="320px"))
        self.image_select.observe(self._on_image_select, names="value")

        # -- classes
        self.class_select = widgets.RadioButtons(description="Class")
        self.class_name = widgets.Text(placeholder="class name", layout=widgets.Layout(width="160px"))
        self.class_colour = widgets.ColorPicker(concise=True, layout=widgets.Layout(width="32px"))
        self.add_button = widgets.Button(description="add", icon="plus", layout=small)
        self.rename_button = widgets.Button(description="rename", layout=small)
        self.recolour_button = widgets.Button(description="recolour", layout=small)
        self.delete_button = widgets.Button(description="delete", icon="times", layout=small)
        self.delete_mode = widgets.Dropdown(description="its pixels", layout=widgets.Layout(width="260px"),
                                            tooltip="what to do with the labelled pixels of a deleted class")
        self.add_button.on_click(lambda _: self.add_class())
        self.rename_button.on_click(lambda _: self.rename_class())
        self.recolour_button.on_click(lambda _: self.recolour_class())
        self.delete_button.on_click(lambda _: self.delete_class())
        self.class_select.observe(self._on_class_select, names="value")

        # -- feedback
        self.counts = widgets.HTML()
        self.message = widgets.HTML()
        self.status = widgets.HTML()

        # -- channels
        self.channel_picker = None
        if channel_picker:
            from pixlab.widgets.channels import ChannelPicker

            self.channel_picker = ChannelPicker(s)
            self.channel_picker.on_change(lambda _p: self._on_display_change())

        # -- events: ipycanvas for the mouse, ipyevents for keys and the wheel. The Event widget is
        # kept as an attribute, never placed among the children (it has no view: it would show an error).
        self.canvas.on_mouse_down(self.on_mouse_down)
        self.canvas.on_mouse_move(self.on_mouse_move)
        self.canvas.on_mouse_up(self.on_mouse_up)
        self.canvas.on_mouse_out(self.on_mouse_out)
        self.events = None
        try:
            from ipyevents import Event

            self.events = Event(source=self.canvas, watched_events=["keydown", "wheel"],
                                prevent_default_action=True)
            self.events.on_dom_event(self.handle_event)
        except ImportError:  # keyboard shortcuts are a convenience; buttons do the same
            pass
        self.canvas.on_client_ready(self.render)  # a new browser view starts blank: redraw it

        for w in (self.opacity,):
            w.observe(lambda _c: self._draw_labels(), names="value")
        self.preview_opacity.observe(lambda _c: self._draw_preview(), names="value")
        self.preview_enabled.observe(self._on_preview_toggle, names="value")
        self.preview_source.observe(self._on_preview_source, names="value")
        self.brush_size.observe(lambda _c: self._update_status(), names="value")
        s.subscribe(self._on_session_event)

        # -- region tools (polygon, box, points) and "accept the prediction"
        self.shapes = ShapeTools(self)
        self.tool.observe(self._on_tool, names="value")

        # -- guided annotation (suggested regions, diagnostic overlays, review), under the canvas
        self.guide = GuidePanel(self)
        self.guide_accordion = widgets.Accordion(children=[self.guide], titles=("Guided annotation",))
        self.guide_accordion.selected_index = None

        toolbar = widgets.HBox([self.tool, self.undo_button, self.redo_button, self.clear_button,
                                self.zoom_in_button, self.zoom_out_button, self.fit_button])
        sliders = widgets.HBox([self.brush_size, self.opacity, self.preview_opacity])
        class_edit = widgets.VBox([
            widgets.HBox([self.class_name, self.class_colour, self.add_button, self.rename_button,
                          self.recolour_button]),
            widgets.HBox([self.delete_button, self.delete_mode])])
        side = widgets.VBox([self.image_select, self.class_select, class_edit, self.counts],
                            layout=widgets.Layout(margin="0 0 0 12px"))
        parts = [toolbar, self.shapes.controls, sliders, widgets.HBox([self.preview_enabled, self.preview_source]),
                 widgets.HBox([self.canvas, side]), self.status, self.message, self.guide_accordion]
        if self.channel_picker is not None:
            acc = widgets.Accordion(children=[self.channel_picker], titles=("Channels & display",))
            acc.selected_index = None
            parts.insert(0, acc)
        super().__init__(parts)
        self._refresh_classes()
        self.render()
        self._update_counts()
        if s.model is not None:  # a session that already previews a model: guide with it too
            self.set_model(s.model)
        if self.preview_enabled.value:
            s.warm_preview()

    # ------------------------------------------------------------------------------------------
    # Small helpers
    # ------------------------------------------------------------------------------------------

    @property
    def current_class(self) -> int:
        """The class id painted by the brush."""
        return int(self.class_select.value or 1)

    @current_class.setter
    def current_class(self, value) -> None:
        self.class_select.value = self.session.class_id(value)

    @property
    def radius(self) -> float:
        """Brush radius in full-resolution image pixels at the current zoom."""
        return self.brush_size.value / 2 * self.view.scale

    def _say(self, text: str | None, error: bool = False) -> None:
        self.message.value = "" if not text else (_error(text) if error else _note(text))

    def _layer(self, k):
        return self.canvas[k]

    # ------------------------------------------------------------------------------------------
    # Rendering
    # ------------------------------------------------------------------------------------------

    def render(self) -> None:
        """Redraw every layer for the current view."""
        self._draw_image()
        self._draw_labels()
        self._draw_preview()
        if self.guide is not None:
            self.guide.draw()
        self.shapes.draw()
        self._update_status()

    def _display_settings(self):
        p = self.channel_picker
        if p is None:
            return None, None, None
        return p.selected, p.ranges, p.colours

    def _draw_image(self) -> None:
        channels, ranges, colours = self._display_settings()
        layer = self._layer(_IMAGE)
        h, w = self.view.canvas_shape
        rgb, rect = (None, None)
        if channels is None or channels:
            rgb, rect = self.view.render_image(self.session.image, channels, ranges, colours)
        with _DRAW_LOCK, hold_canvas():
            layer.clear()
            layer.fill_style = "#202020"
            layer.fill_rect(0, 0, w, h)
            if rgb is not None:
                layer.put_image_data(rgb, rect[2], rect[0])

    def _draw_labels(self, region=None) -> None:
        """Redraw the label layer where ``region`` (full-res) is shown; everything when None."""
        s = self.session
        with s.lock:  # the store, not an array copy: whole slides redraw only their painted chunks
            rgba, rect = self.view.render_labels(s.label_store(), s.colours, self.opacity.value, region)
        layer = self._layer(_LABELS)
        with _DRAW_LOCK, hold_canvas():
            if region is None:
                layer.clear()
            if rgba is not None:
                i0, i1, j0, j1 = rect
                if region is not None:
                    layer.clear_rect(j0, i0, j1 - j0, i1 - i0)
                layer.put_image_data(rgba, j0, i0)

    def _draw_preview(self) -> None:
        """The overlay layer: the guided panel's chosen map when there is one, else the preview."""
        layer = self._layer(_PREVIEW)
        res = self._preview_result
        rgba = rect = None
        shown = self.guide.overlay_view(self.view) if self.guide is not None else None
        if shown is not None:
            rgba, rect = shown
        elif (res is not None and res.probs is not None and res.image == self.session.index
                and self.preview_enabled.value):
            colours = self.session.colours
            if len(colours) >= res.probs.shape[0]:
                rgba, rect = self.view.render_probabilities(res.probs, colours, res.origin, res.factor,
                                                            self.preview_opacity.value)
        with _DRAW_LOCK, hold_canvas():
            layer.clear()
            if rgba is not None:
                layer.put_image_data(rgba, rect[2], rect[0])

    def _draw_guide(self, boxes) -> None:
        """Outline full-res boxes ``[(region, colour, text), ...]`` on the guide layer (text at the corner)."""
        if not boxes and not self._guide_drawn:
            return  # nothing shown and nothing to show: spare the browser a message per pan step
        self._guide_drawn = bool(boxes)
        layer = self._layer(_GUIDE)
        h, w = self.view.canvas_shape
        with _DRAW_LOCK, hold_canvas():
            layer.clear()
            for region, colour, text in boxes:
                top, bottom, left, right = self.view.canvas_box(region)
                if bottom < 0 or top > h or right < 0 or left > w:
                    continue
                layer.stroke_style = colour
                layer.line_width = 2
                layer.stroke_rect(left, top, right - left, bottom - top)
                if text:
                    layer.fill_style = colour
                    layer.font = "bold 13px sans-serif"
                    layer.fill_text(text, max(left, 0) + 3, max(top, 0) + 15)

    def _draw_shape(self, points, closed: bool, corners, colour: str) -> None:
        """The shape layer: a polyline through canvas ``(row, col)`` points, and the corners as dots."""
        layer = self._layer(_SHAPE)
        with _DRAW_LOCK, hold_canvas():
            layer.clear()
            if len(points) >= 2:
                layer.stroke_style = colour
                layer.line_width = 2
                layer.set_line_dash([6, 4])
                layer.begin_path()
                layer.move_to(points[0][1], points[0][0])
                for i, j in points[1:]:
                    layer.line_to(j, i)
                if closed:
                    layer.close_path()
                layer.stroke()
                layer.set_line_dash([])
            for n, (i, j) in enumerate(corners):
                layer.fill_style = "#ff3030" if n == 0 else colour  # the first corner closes the polygon
                layer.fill_rect(j - 3, i - 3, 6, 6)

    def _update_status(self) -> None:
        s = self.session
        zoom = 100.0 / self.view.scale
        parts = [f"zoom {zoom:.0f}%", f"brush ≈ {2 * self.radius:.1f} image px"]
        res = self._preview_result
        if res is not None and res.image == s.index:
            parts.append(f"preview ({res.source}): {res.message}" if res.probs is None
                         else f"preview ({res.source}) {res.elapsed_s:.2f} s")
        if s.autosave:
            parts.append(f"autosave to {s.labels_dir}")
        else:
            parts.append("autosave off (pass labels_dir= to save labels)")
        if s.last_error:
            parts.append(f"last error: {s.last_error}")
        self.status.value = _note(" · ".join(parts))

    def _update_counts(self) -> None:
        s = self.session
        here, total = s.stats(), s.total_stats()
        rows = "".join(
            f"<tr><td><span style='background:{_hex(s.colours[k])};display:inline-block;width:12px;"
            f"height:12px'></span> {k + 1}. {html.escape(a['class'])}</td>"
            f"<td align='right'>{a['strokes']}</td><td align='right'>{a['pixels']}</td>"
            f"<td align='right'>{b['strokes']}</td><td align='right'>{b['pixels']}</td></tr>"
            for k, (a, b) in enumerate(zip(here, total)))
        head = ("<tr><th>class</th><th colspan=2>this image<br>strokes · px</th>"
                f"<th colspan=2>all {s.n_images} image(s)<br>strokes · px</th></tr>")
        warn = "".join(f"<li>{html.escape(w)}</li>" for w in s.warnings())
        warn_html = f"<ul style='color:#a60;margin:4px 0'>{warn}</ul>" if warn else ""
        self.counts.value = f"<table style='font-size:90%'>{head}{rows}</table>{warn_html}"

    # ------------------------------------------------------------------------------------------
    # Mouse (ipycanvas calls these with canvas coordinates x = column, y = row)
    # ------------------------------------------------------------------------------------------

    def on_mouse_down(self, x: float, y: float) -> None:
        """Start a stroke (brush/eraser) or a pan drag; polygon, box and points go to ``self.shapes``."""
        if self.tool.value in SHAPE_TOOLS:
            self.shapes.on_mouse_down(x, y)
            return
        if self.tool.value == "pan":
            self._pan_from = (y, x)
            return
        self.session.begin_stroke()
        self._drawing = True
        self._last = self.view.canvas_to_image(y, x)
        self._paint([self._last])

    def on_mouse_move(self, x: float, y: float) -> None:
        """Paint the segment from the previous point to this one (or drag the view)."""
        if self._pan_from is not None:
            self._pan_to(y, x)
            return
        if self.tool.value in SHAPE_TOOLS:
            self.shapes.on_mouse_move(x, y)
            return
        if not self._drawing:
            return
        t0 = time.perf_counter()
        point = self.view.canvas_to_image(y, x)
        self._paint([self._last, point])
        self._last = point
        self.stroke_times.append(time.perf_counter() - t0)

    def on_mouse_up(self, x: float, y: float) -> None:
        """Finish the stroke: one undo step, counts, autosave (scheduled by the session), preview."""
        if self._pan_from is not None:
            self._pan_to(y, x)
            self._pan_from = None
            self.render()
            self.request_preview()
            return
        if self.tool.value in SHAPE_TOOLS:
            self.shapes.on_mouse_up(x, y)
            return
        if not self._drawing:
            return
        point = self.view.canvas_to_image(y, x)
        if point != self._last:
            self._paint([self._last, point])
        self._drawing = False
        change = self.session.end_stroke()
        if change is not None and change.n_changed:
            self._update_counts()
            self.guide.labels_changed()
            self.request_preview()

    def on_mouse_out(self, x: float, y: float) -> None:
        """Leaving the canvas ends the stroke (the button may be released outside)."""
        self.on_mouse_up(x, y)

    def _paint(self, points) -> None:
        s = self.session
        if self.tool.value == "eraser":
            change = s.erase(points, self.radius)
        else:
            change = s.paint(points, self.current_class, self.radius)
        if change.message:
            self._say(change.message)
        elif change.region is not None:
            self._draw_labels(change.region)

    def _pan_to(self, y: float, x: float) -> None:
        y0, x0 = self._pan_from
        self.view.pan(y - y0, x - x0)
        self._pan_from = (y, x)
        now = time.monotonic()
        if now - self._last_pan_render >= _PAN_RENDER_INTERVAL:
            self._last_pan_render = now
            self.render()

    # ------------------------------------------------------------------------------------------
    # Keyboard and wheel (ipyevents calls this with the browser event as a dict)
    # ------------------------------------------------------------------------------------------

    def handle_event(self, event: dict) -> None:
        """Keyboard shortcuts and wheel zoom; ``event`` is an ipyevents event dict."""
        kind = event.get("type")
        if kind == "wheel":
            cy = event.get("relativeY", event.get("offsetY", self.view.canvas_shape[0] / 2))
            cx = event.get("relativeX", event.get("offsetX", self.view.canvas_shape[1] / 2))
            self.zoom(1.25 if event.get("deltaY", 0) < 0 else 0.8, at=(cy, cx))
            return
        if kind != "keydown":
            return
        key = str(event.get("key", ""))
        ctrl = bool(event.get("ctrlKey") or event.get("metaKey"))
        low = key.lower()
        if not ctrl and self.tool.value in SHAPE_TOOLS and self.shapes.handle_key(key):
            return
        if ctrl and low == "z":
            self.redo() if event.get("shiftKey") else self.undo()
        elif ctrl and low == "y":
            self.redo()
        elif ctrl:
            return
        elif low in _TOOL_KEYS:
            self.tool.value = _TOOL_KEYS[low]
        elif key.isdigit() and key != "0":
            k = int(key)
            if k <= self.session.n_classes:
                self.current_class = k
        elif key in ("+", "="):
            self.zoom(2.0)
        elif key == "-":
            self.zoom(0.5)
        elif key == "0":
            self.fit()
        elif key == "[":
            self.brush_size.value = max(self.brush_size.min, round(self.brush_size.value / 1.25))
        elif key == "]":
            self.brush_size.value = min(self.brush_size.max, round(self.brush_size.value * 1.25) + 1)
        elif key in ("ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown"):
            step = self.view.canvas_shape[0] / 4
            dy = {"ArrowUp": step, "ArrowDown": -step}.get(key, 0)
            dx = {"ArrowLeft": step, "ArrowRight": -step}.get(key, 0)
            self.view.pan(dy, dx)
            self.render()
            self.request_preview()

    # ------------------------------------------------------------------------------------------
    # Actions (buttons and keys)
    # ------------------------------------------------------------------------------------------

    def zoom(self, factor: float, at=None) -> None:
        """Zoom by ``factor`` around canvas point ``at`` (row, col; default the centre)."""
        self.view.zoom(factor, at)
        self.render()
        self.request_preview()

    def fit(self) -> None:
        """Show the whole image."""
        self.view.fit()
        self.render()
        self.request_preview()

    def go_to(self, region, image=None) -> None:
        """Centre the view on a full-res box ``(y0, y1, x0, x1)``, zoomed so all of it shows.

        ``image`` (index or name) switches image first when it is not the current one.
        """
        s = self.session
        if image is not None and image not in (s.index, s.names[s.index]):
            self.select_image(image)
            if image not in (s.index, s.names[s.index]):
                return  # the switch failed; the message says why
        self.view.center_on(*region)
        self.render()
        self.request_preview()

    def _after_edit(self, change) -> None:
        if change.message and not change.n_changed:
            self._say(change.message)
            return
        self._say(None)
        self._draw_labels(change.region)
        self._update_counts()
        self.guide.labels_changed()
        self.request_preview()

    def undo(self) -> None:
        """Undo the last stroke of this image."""
        self._after_edit(self.session.undo())

    def redo(self) -> None:
        """Redo the last undone stroke."""
        self._after_edit(self.session.redo())

    def clear_class(self, cls=None) -> None:
        """Erase the selected class (or ``cls``) in this image (undoable)."""
        self._after_edit(self.session.clear_class(self.current_class if cls is None else cls))

    def _class_action(self, fn, *args, **kwargs) -> bool:
        try:
            fn(*args, **kwargs)
        except ValueError as e:
            self._say(str(e), error=True)
            return False
        self._say(None)
        return True

    def add_class(self, name=None, colour=None) -> None:
        """Add a class named ``name`` (default: the name box) with ``colour`` (default: the colour box)."""
        name = self.class_name.value if name is None else name
        if self._class_action(self.session.add_class, name, colour):
            self.class_name.value = ""
            self.current_class = self.session.n_classes

    def rename_class(self, name=None) -> None:
        """Rename the selected class to ``name`` (default: the name box)."""
        name = self.class_name.value if name is None else name
        if self._class_action(self.session.rename_class, self.current_class, name):
            self.class_name.value = ""

    def recolour_class(self, colour=None) -> None:
        """Give the selected class ``colour`` (default: the colour box)."""
        self._class_action(self.session.recolour_class, self.current_class, colour or self.class_colour.value)

    def delete_class(self, migrate_to=None, drop=None) -> None:
        """Delete the selected class; its pixels go where the "its pixels" menu (or the arguments) say.

        Without ``migrate_to`` or ``drop`` a class that has labelled pixels is refused with a message.
        """
        if migrate_to is None and drop is None:
            mode = self.delete_mode.value
            drop = mode == "drop"
            migrate_to = self.session.class_names[mode - 1] if isinstance(mode, int) else None
        self._class_action(self.session.delete_class, self.current_class, migrate_to=migrate_to, drop=bool(drop))

    def set_model(self, model) -> None:
        """Show a trained deep-learning model's prediction as the overlay (None: back to the features),
        and guide annotation with it (the "Guided annotation" panel)."""
        self._dl_model = model
        self.preview_source.disabled = model is None
        self.guide.set_model(model)
        if model is not None and self.guide_accordion.selected_index is None:
            self.guide_accordion.selected_index = 0  # show what the model offers next
        if model is None:
            self.preview_source.value = "features"
            self.session.set_model(None)
            self.request_preview()
        elif self.preview_source.value == "model":
            self.session.set_model(model)
            self.request_preview()
        else:
            self.preview_source.value = "model"  # the observer sets it on the session and refreshes

    def select_image(self, image) -> None:
        """Switch to another image (index or name); a problem (e.g. its labels file) becomes a message."""
        try:
            self.session.select(image)
        except (ValueError, FileNotFoundError) as e:
            self._say(str(e), error=True)

    # ------------------------------------------------------------------------------------------
    # Preview
    # ------------------------------------------------------------------------------------------

    def request_preview(self) -> None:
        """Ask the session for a new preview of the visible region (drawn when ready)."""
        if not self.preview_enabled.value:
            return
        region = self.view.visible_region()
        if region is None:
            return
        self._preview_future = self.session.preview_async(region, callback=self._on_preview)

    def wait_preview(self, timeout: float = 60):
        """Block until the last requested preview is drawn; returns its PreviewResult (None if none)."""
        fut = self._preview_future
        return None if fut is None else fut.result(timeout)

    def _on_preview(self, result) -> None:
        # Runs in the session's preview thread.
        self._preview_result = result
        self._draw_preview()
        self._update_status()

    def _on_preview_toggle(self, change) -> None:
        if change["new"]:
            self.request_preview()
        else:
            self._draw_preview()

    def _on_preview_source(self, change) -> None:
        self.session.set_model(self._dl_model if change["new"] == "model" else None)
        self.request_preview()

    # ------------------------------------------------------------------------------------------
    # Session / control events
    # ------------------------------------------------------------------------------------------

    def _on_display_change(self) -> None:
        if self.view.image_shape != tuple(self.session.image.shape[-2:]):
            return  # mid image switch: the picker follows first, the full render comes after
        self._draw_image()
        self.request_preview()  # the channel selection or normalization feeds the preview

    def _set_dropdown(self, value) -> None:
        self.image_select.unobserve(self._on_image_select, names="value")
        self.image_select.value = value
        self.image_select.observe(self._on_image_select, names="value")

    def _on_image_select(self, change) -> None:
        try:
            self.session.select(change["new"])  # its "image" event redraws (see _on_session_event)
        except (ValueError, FileNotFoundError) as e:
            self._say(str(e), error=True)
            self._set_dropdown(change["old"])

    def _show_current_image(self) -> None:
        s = self.session
        if self.image_select.value != s.index:
            self._set_dropdown(s.index)  # switched from Python: keep the menu in step
        self._say(None)
        self.view = display.Viewport(s.image.shape, self.view.canvas_shape)
        self.shapes.cancel()
        self._preview_result = None
        self.guide.image_changed()
        self.render()
        self._update_counts()
        self.request_preview()

    def _on_session_event(self, event, **info) -> None:
        if event == "image":
            self._show_current_image()
        elif event == "labels":
            if info.get("image") == self.session.index:
                self._after_edit(Change(info["image"], info.get("region"), 1))
        elif event == "classes":
            self._refresh_classes()
            self._draw_labels()
            self._update_counts()
            self.guide.labels_changed()  # deleting a class relabels pixels
            self.request_preview()
        elif event == "error":
            self._say(info.get("message", ""), error=True)

    def _on_tool(self, change) -> None:
        # An open polygon survives a switch to pan (move the view, then go on clicking corners).
        if change["new"] not in ("polygon", "pan"):
            self.shapes.cancel()

    def _refresh_classes(self) -> None:
        self.shapes.refresh_classes()
        s = self.session
        current = self.class_select.value
        self.class_select.unobserve(self._on_class_select, names="value")
        self.class_select.options = [(f"{k}. {n}", k) for k, n in enumerate(s.class_names, start=1)]
        self.class_select.value = current if current in range(1, s.n_classes + 1) else 1
        self.class_select.observe(self._on_class_select, names="value")
        self._on_class_select(None)

    def _on_class_select(self, _change) -> None:
        s = self.session
        k = self.current_class
        self.class_colour.value = _hex(s.colours[k - 1])
        others = [(f"move to '{n}'", j) for j, n in enumerate(s.class_names, start=1) if j != k]
        self.delete_mode.options = [("refuse if labelled", "refuse"), ("erase them", "drop")] + others
        self.delete_mode.value = "refuse"
