"""Mouse, keyboard and wheel input of the brush annotator: events -> view and session calls.

A mixin of :class:`pixlab.widgets.brush.BrushAnnotator`. Handlers are plain methods
(``on_mouse_down(x, y)``, ``handle_event(event_dict)``) so tests drive them without a browser.
"""

from __future__ import annotations

import time

from pixlab.widgets.shape_tools import SHAPE_TOOLS

__all__ = ["BrushInput"]

_PAN_RENDER_INTERVAL = 0.05  # s: while dragging the view, re-render at most 20 times a second
_TOOL_KEYS = {"b": "brush", "e": "eraser", "p": "pan", "g": "polygon", "r": "box", ".": "points"}


class BrushInput:
    """Pointer and key handling of :class:`~pixlab.widgets.brush.BrushAnnotator` (mixin)."""

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
