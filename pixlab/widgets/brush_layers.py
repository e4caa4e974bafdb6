"""Drawing the brush annotator's canvas layers (image, preview/maps, labels, guide boxes, shape).

A mixin of :class:`pixlab.widgets.brush.BrushAnnotator`: it reads the annotator's view, session and
controls and only draws; the annotator owns the state. Each layer is redrawn from the session's
label store for the part of the image in view, never from a copy of the labels.
"""

from __future__ import annotations

import html
import threading

from ipycanvas import hold_canvas

__all__ = ["BrushLayers"]

# ipycanvas batches drawing through one global manager (hold_canvas flips a global flag), and the
# preview is drawn from its worker thread: one lock keeps each batch whole.
_DRAW_LOCK = threading.RLock()

# Canvas layers, bottom to top; MultiCanvas hands mouse events to the top one. The preview layer also
# shows the guided panel's diagnostic maps; the guide layer holds box outlines (suggestions, review);
# the shape layer the polygon or box being drawn.
_IMAGE, _PREVIEW, _LABELS, _GUIDE, _SHAPE = 0, 1, 2, 3, 4


def _hex(colour) -> str:
    r, g, b = (int(v) for v in colour)
    return f"#{r:02x}{g:02x}{b:02x}"


def _error(text: str) -> str:
    return f"<span style='color:#b00'>{html.escape(str(text))}</span>"


def _note(text: str) -> str:
    return f"<span style='color:#555'>{html.escape(str(text))}</span>"


class BrushLayers:
    """Rendering of :class:`~pixlab.widgets.brush.BrushAnnotator` (mixin; no state of its own)."""

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
