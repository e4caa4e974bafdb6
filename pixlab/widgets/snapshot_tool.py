"""PolygonTool: ipyannotations' polygon, box and point annotators on a snapshot of the brush annotator's view.

The annotator's own region tools (:mod:`pixlab.widgets.shape_tools`) draw on the live canvas; this is
the ipyannotations alternative (its "Edit" mode moves corners before submitting). Handlers are plain
methods: :meth:`PolygonTool.submit` takes ipyannotations' list of dicts, so tests call it directly.
"""

from __future__ import annotations

import html

import ipywidgets as widgets

from pixlab.image import display

__all__ = ["PolygonTool"]


def _error(text: str) -> str:
    return f"<span style='color:#b00'>{html.escape(str(text))}</span>"


def _note(text: str) -> str:
    return f"<span style='color:#555'>{html.escape(str(text))}</span>"


class PolygonTool(widgets.VBox):
    """Polygons, boxes or points drawn with ipyannotations on a snapshot of the current view, filled as labels.

    The annotator's own polygon/box/points tools (``annotator.shapes``) work on the live canvas at any
    zoom; this tool is the ipyannotations alternative, whose "Edit" mode moves corners before
    submitting. The shapes are drawn on a snapshot of the annotator's current view and mapped back to
    full-resolution image coordinates through the same :class:`~pixlab.image.display.Viewport`;
    "Submit" fills them into the session (one undo step per shape).

    Parameters
    ----------
    annotator : BrushAnnotator
    kind : {"polygon", "box", "points"}
        Which ipyannotations annotator: ``PolygonAnnotator``, ``BoxAnnotator`` or ``PointAnnotator``.
    """

    _ANNOTATORS = {"polygon": "PolygonAnnotator", "box": "BoxAnnotator", "points": "PointAnnotator"}

    def __init__(self, annotator, kind: str = "polygon"):
        if kind not in self._ANNOTATORS:
            raise ValueError(f"kind={kind!r} is not known; choose one of {', '.join(self._ANNOTATORS)}")
        try:
            from ipyannotations import images as ipyannotations_images
        except ImportError:
            raise ImportError("the polygon tool needs ipyannotations (part of pixlab[lab]); install it with "
                              "'pip install ipyannotations' or use the annotator's own polygon tool") from None
        from ipyevents import Event

        self.annotator = annotator
        self.kind = kind
        s = annotator.session
        h, w = annotator.view.canvas_shape
        cls = getattr(ipyannotations_images, self._ANNOTATORS[kind])
        self.polygons = cls(options=list(s.class_names), canvas_size=(w, h))
        # ipyannotations puts its ipyevents.Event (keyboard shortcuts) among its children. An Event has
        # no view, so JupyterLab would draw a red "javascript error" box there. The Event keeps
        # listening to its source widget without being displayed, so it only leaves the layout.
        self.polygons.children = tuple(c for c in self.polygons.children if not isinstance(c, Event))
        self.polygons.on_submit(lambda _data: self.submit())
        self.message = widgets.HTML()
        super().__init__([self.polygons, self.message])
        self.refresh()

    def refresh(self) -> None:
        """Show the annotator's current view (call after zooming or panning the brush canvas)."""
        ann = self.annotator
        channels, ranges, colours = ann._display_settings()
        rgb, rect = ann.view.render_image(ann.session.image, channels, ranges, colours)
        self._rect = rect
        self.polygons.display(display.encode_png(rgb))

    def _to_image(self, x, y):
        # Points are (x, y) in the snapshot, whose pixel (0, 0) is canvas pixel (i0, j0).
        i0, _, j0, _ = self._rect
        return self.annotator.view.canvas_to_image(i0 + y, j0 + x)

    def _shape(self, item):
        from pixlab.annotation import shapes

        image_shape = self.annotator.session.image.shape[-2:]
        kind = item.get("type")
        if kind == "polygon":
            return shapes.polygon([self._to_image(x, y) for x, y in item.get("points", ())], image_shape)
        if kind == "box":
            x0, y0, x1, y1 = item["xyxy"]
            return shapes.box(self._to_image(x0, y0), self._to_image(x1, y1), image_shape)
        if kind == "point":
            return shapes.disc(self._to_image(*item["coordinates"]), self.annotator.radius, image_shape)
        raise ValueError(f"unknown shape type {kind!r} (expected polygon, box or point)")

    def submit(self, data=None) -> int:
        """Fill the drawn shapes (default: ``self.polygons.data``) into the labels; returns how many.

        ``data`` is ipyannotations' list of dicts (``{"type": "polygon", "label", "points": [(x, y), ...]}``,
        ``{"type": "box", "label", "xyxy"}``, ``{"type": "point", "label", "coordinates"}``). A bad shape
        is skipped and named in the message; the others are filled.
        """
        ann = self.annotator
        s = ann.session
        data = self.polygons.data if data is None else data
        n, problems = 0, []
        for k, item in enumerate(data, start=1):
            if item.get("label") not in s.class_names:
                problems.append(f"shape {k}: class {item.get('label')!r} is not one of {', '.join(s.class_names)}")
                continue
            try:
                change = s.fill_shape(self._shape(item), item["label"])
            except (ValueError, KeyError, TypeError) as e:
                problems.append(f"shape {k}: {e}")
                continue
            if change.n_changed:
                n += 1
                ann._after_edit(change)
        text = f"{n} shape(s) filled" + ("; " + "; ".join(problems) if problems else "")
        self.message.value = _error(text) if problems else _note(text)
        self.polygons.canvas.clear()
        self.refresh()
        return n
