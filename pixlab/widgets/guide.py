"""GuidePanel: the brush annotator's "Guided annotation" panel (where to brush next, maps, review).

The panel only translates: every number comes from :class:`pixlab.annotation.AnnotationGuide` and every
move of the view from :meth:`pixlab.image.display.Viewport.center_on`. It draws box outlines on the
annotator's guide layer and hands the chosen map to the annotator's overlay layer. The "Review" tab
(possible label mistakes, confused tiles) is :mod:`pixlab.widgets.guide_review`.

Handlers are plain methods (``refresh_suggestions()``, ``go_to_suggestion(k)``, ``check_labels()``,
``select_confusion(cell)``, ...), and the buttons call them, so tests drive the panel without a browser.
"""

from __future__ import annotations

import ipywidgets as widgets

from pixlab.annotation import GUIDE_OVERLAYS, AnnotationGuide
from pixlab.widgets.guide_review import _MAX_ENTRIES, NO_MODEL, GuideReview, _button, _note

__all__ = ["GuidePanel"]

_SUGGESTION_COLOUR, _MISTAKE_COLOUR, _FOCUS_COLOUR = "#ffd400", "#ff3030", "#00e5ff"


class GuidePanel(GuideReview, widgets.VBox):
    """Suggested regions, diagnostic overlays and a review list for a :class:`~pixlab.widgets.BrushAnnotator`.

    Parameters
    ----------
    annotator : BrushAnnotator
        The annotator whose view, layers and session the panel uses (it creates the panel itself).
    n, box : int
        Default number and side (full-res pixels) of the suggested boxes.

    Attributes
    ----------
    guide : pixlab.annotation.AnnotationGuide
        The core object that computes everything shown here.
    region : (y0, y1, x0, x1) or None
        What was last analysed (None = the whole image; a region only for images larger than
        ``guide.max_pixels``).
    suggestions, mistakes, tiles : pandas.DataFrame or None
        What the lists show.
    """

    def __init__(self, annotator, n: int = 5, box: int = 64):
        self.annotator = annotator
        self.guide = AnnotationGuide(annotator.session)
        self.region = None
        self.suggestions = None
        self.mistakes = None
        self.tiles = None
        self.focus = None  # (image, (y0, y1, x0, x1)) last panned to from a list
        self._overlay_error = None

        self.message = widgets.HTML(_note(NO_MODEL))
        self.overlay = widgets.Dropdown(options=list(GUIDE_OVERLAYS), value="none", description="Overlay",
                                        tooltip="show a map of the model instead of the preview "
                                                "(opacity: the Preview slider)",
                                        layout=widgets.Layout(width="260px"))
        self.overlay.observe(self._on_overlay, names="value")

        # -- annotate here next
        self.n = widgets.BoundedIntText(value=int(n), min=1, max=20, description="boxes",
                                        layout=widgets.Layout(width="130px"))
        self.box = widgets.BoundedIntText(value=int(box), min=4, max=4096, description="size (px)",
                                          layout=widgets.Layout(width="160px"))
        self.refresh_button = widgets.Button(description="Refresh suggestions", icon="refresh",
                                             tooltip="rank regions by the model's uncertainty, away from "
                                                     "existing strokes", layout=widgets.Layout(width="auto"))
        self.refresh_button.on_click(lambda _b: self.refresh_suggestions())
        self.show_boxes = widgets.Checkbox(value=True, description="show boxes", indent=False,
                                           layout=widgets.Layout(width="auto"))
        self.show_boxes.observe(lambda _c: self.draw(), names="value")
        self.suggestion_buttons = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        suggest_tab = widgets.VBox([widgets.HBox([self.n, self.box, self.refresh_button, self.show_boxes]),
                                    self.suggestion_buttons])

        # -- review
        review_tab = self._review_tab()  # the controls live in pixlab.widgets.guide_review

        self.tabs = widgets.Tab(children=[suggest_tab, review_tab], titles=("Annotate here next", "Review"))
        self._controls = (self.overlay, self.n, self.box, self.refresh_button, self.show_boxes,
                          self.check_button, self.min_confidence, self.confusion)
        super().__init__([self.message, self.overlay, self.tabs])
        self._set_enabled(False)

    # ------------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Whether a model is set (the controls are enabled)."""
        return self.guide.model is not None

    def _say(self, text: str, error: bool = False) -> None:
        self.message.value = _note(text, error)

    def _set_enabled(self, on: bool) -> None:
        for w in self._controls:
            w.disabled = not on

    def _clear(self) -> None:
        self.suggestions = self.mistakes = self.tiles = self.focus = None
        self.suggestion_buttons.children = ()
        self.mistake_buttons.children = ()
        self.relabel_buttons.children = ()
        self.tile_buttons.children = ()
        self.confusion.unobserve(self._on_confusion, names="value")
        self.confusion.options = [("(check labels first)", None)]
        self.confusion.value = None
        self.confusion.observe(self._on_confusion, names="value")

    def _analysis_region(self):
        """Whole image when it fits the guide's budget, else the annotator's visible region (may raise)."""
        view = self.annotator.view
        return self.guide.analysis_region(view.visible_region())

    # ------------------------------------------------------------------------------------------
    # Model and annotator events
    # ------------------------------------------------------------------------------------------

    def set_model(self, model) -> None:
        """Guide with ``model`` (None: back to "Train or set a model first", controls disabled)."""
        self.guide.set_model(model)
        self._clear()
        self._set_enabled(model is not None)
        if model is None:
            self.overlay.value = "none"  # its observer redraws the preview layer
            self._say(NO_MODEL)
            self.draw()
            return
        self._say("Model ready: 'Refresh suggestions' shows where to brush next; 'Check labels' reviews "
                  "the strokes; the Overlay menu shows the model's maps.")
        if self.overlay.value != "none":
            self._update_overlay()
        self.draw()

    def image_changed(self) -> None:
        """The annotator switched images: the per-image lists go; confused tiles (all images) stay."""
        self.region = None
        self.suggestions = self.mistakes = None
        self.suggestion_buttons.children = ()
        self.mistake_buttons.children = ()
        self.relabel_buttons.children = ()
        if self.ready:
            self._say("New image: press 'Refresh suggestions' or 'Check labels' for it.")
            if self.overlay.value != "none":
                self._update_overlay(draw=False)  # the annotator redraws everything next

    def labels_changed(self) -> None:
        """Strokes changed: maps that depend on labels are recomputed (the guide's cache says when)."""
        if not self.ready:
            return
        if self.overlay.value in ("loss", "disagreement"):
            self.annotator._draw_preview()
        if self.suggestions is not None or self.mistakes is not None:
            self._say("Labels changed since the last analysis: refresh to update the lists.")

    # ------------------------------------------------------------------------------------------
    # Overlay
    # ------------------------------------------------------------------------------------------

    def _on_overlay(self, change) -> None:
        self._update_overlay()

    def _update_overlay(self, draw: bool = True) -> None:
        if self.overlay.value != "none" and self.ready:
            try:
                self.region = self._analysis_region()
            except ValueError as e:
                self._say(str(e), error=True)
        if draw:
            self.annotator._draw_preview()

    def overlay_rgba(self):
        """The chosen map as full RGBA ``(h, w, 4)`` (from the guide's cache) and its origin, or None.

        Errors (e.g. labels with a class the model does not know) become the panel's message.
        """
        name = self.overlay.value
        if name == "none" or not self.ready:
            return None
        try:
            rgba = self.guide.overlay(name, self.annotator.preview_opacity.value, region=self.region)
        except ValueError as e:
            if str(e) != self._overlay_error:
                self._say(str(e), error=True)
            self._overlay_error = str(e)
            return None
        self._overlay_error = None
        origin = (0, 0) if self.region is None else (self.region[0], self.region[2])
        return rgba, origin

    def overlay_view(self, view):
        """``(rgba, rect)`` of the chosen map for the canvas pixels of ``view``, or None (no overlay)."""
        shown = self.overlay_rgba()
        if shown is None:
            return None
        rgba, rect = view.render_overlay(shown[0], shown[1])
        return None if rgba is None else (rgba, rect)

    # ------------------------------------------------------------------------------------------
    # Annotate here next
    # ------------------------------------------------------------------------------------------

    def refresh_suggestions(self) -> None:
        """Rank regions of the current image and list them as buttons (also drawn on the canvas)."""
        if not self.ready:
            self._say(NO_MODEL)
            return
        self._say("computing suggestions…")
        try:
            self.region = self._analysis_region()
            df = self.guide.suggestions(self.n.value, self.box.value, region=self.region)
        except ValueError as e:
            self._say(str(e), error=True)
            return
        self.suggestions = df
        self.suggestion_buttons.children = tuple(
            _button(f"{r.rank} ({r.score:.2f})", f"go to box {r.rank}: y {r.y0}-{r.y1}, x {r.x0}-{r.x1}; "
                    f"uncertainty {r.uncertainty:.2f}, {100 * r.labelled:.0f}% labelled",
                    lambda k=int(r.rank): self.go_to_suggestion(k))
            for r in df.itertuples(index=False))
        where = "the whole image" if self.region is None else f"the region {self.region}"
        self._say(f"{len(df)} region(s) of {where} ranked by uncertainty (away from strokes): brush there, "
                  f"then retrain.")
        self.draw()

    def go_to_suggestion(self, k: int) -> None:
        """Centre the view on suggested box ``k`` (rank, 1-based)."""
        if not self.ready:
            self._say(NO_MODEL)
            return
        rows = self.suggestions[self.suggestions["rank"] == int(k)] if self.suggestions is not None else ()
        if not len(rows):
            self._say(f"there is no suggestion {k}; press 'Refresh suggestions'", error=True)
            return
        r = rows.iloc[0]
        self._go_to(self.annotator.session.index, (int(r.y0), int(r.y1), int(r.x0), int(r.x1)))

    def _go_to(self, image: int, box) -> None:
        self.focus = (image, tuple(int(v) for v in box))
        self.annotator.go_to(box, image=image)

    # ------------------------------------------------------------------------------------------
    # Drawing (the annotator's guide layer)
    # ------------------------------------------------------------------------------------------

    def boxes(self) -> list[tuple]:
        """What :meth:`draw` outlines: ``(region, colour, text)`` in full-res pixels of the current image."""
        out = []
        if not self.ready:
            return out
        if self.show_boxes.value and self.suggestions is not None:
            out += [((r.y0, r.y1, r.x0, r.x1), _SUGGESTION_COLOUR, str(r.rank))
                    for r in self.suggestions.itertuples(index=False)]
        if self.mistakes is not None:
            out += [((r.y0, r.y1, r.x0, r.x1), _MISTAKE_COLOUR, "")
                    for r in self.mistakes.head(_MAX_ENTRIES).itertuples(index=False)]
        if self.focus is not None and self.focus[0] == self.annotator.session.index:
            out.append((self.focus[1], _FOCUS_COLOUR, ""))
        return out

    def draw(self) -> None:
        """Redraw the box outlines for the annotator's current view."""
        self.annotator._draw_guide(self.boxes())
