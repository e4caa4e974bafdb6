"""BrushAnnotator: paint class labels on images in JupyterLab (ipycanvas), with an instant preview.

The widget only translates (drawing is :mod:`pixlab.widgets.brush_layers`, mouse and keys
:mod:`pixlab.widgets.brush_input`, the class controls :mod:`pixlab.widgets.brush_classes`): canvas coordinates -> :class:`pixlab.image.display.Viewport` -> image
coordinates -> :class:`pixlab.annotation.AnnotationSession`. Each mouse move paints one segment in the
session and redraws only the canvas pixels that segment changed; nothing here holds labels or logic.

Handlers are plain methods (``on_mouse_down(x, y)``, ``on_mouse_move``, ``on_mouse_up``,
``handle_event(event_dict)``) so tests and scripts can drive the widget without a browser.
"""

from __future__ import annotations

import ipywidgets as widgets
from ipycanvas import MultiCanvas

from pixlab.image import display
from pixlab.annotation import AnnotationSession, Change
from pixlab.widgets.brush_input import BrushInput
from pixlab.widgets.brush_classes import BrushClasses
from pixlab.widgets.brush_layers import BrushLayers, _error, _note
from pixlab.widgets.guide import GuidePanel
from pixlab.widgets.shape_tools import SHAPE_TOOLS, ShapeTools
from pixlab.widgets.snapshot_tool import PolygonTool

__all__ = ["BrushAnnotator", "PolygonTool"]  # PolygonTool lives in pixlab.widgets.snapshot_tool

_TOOLS = ("brush", "eraser", "pan") + SHAPE_TOOLS


class BrushAnnotator(BrushLayers, BrushInput, BrushClasses, widgets.VBox):
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

        class_edit = self._build_class_controls()  # brush_classes.BrushClasses

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
    def radius(self) -> float:
        """Brush radius in full-resolution image pixels at the current zoom."""
        return self.brush_size.value / 2 * self.view.scale

    def _say(self, text: str | None, error: bool = False) -> None:
        self.message.value = "" if not text else (_error(text) if error else _note(text))

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
