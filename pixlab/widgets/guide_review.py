"""The "Review" tab of the guided-annotation panel: possible label mistakes and confused tiles.

A mixin of :class:`pixlab.widgets.guide.GuidePanel`. Like the panel it only translates: the lists come
from :class:`pixlab.annotation.AnnotationGuide` (``refinements``, ``confusions``, ``confused_tiles``),
the relabelling from :meth:`pixlab.annotation.AnnotationSession.relabel_mistake`, and the panel owns
the state (``guide``, ``region``, ``mistakes``, ``tiles``) and the view moves (``_go_to``, ``draw``).
"""

from __future__ import annotations

import html

import ipywidgets as widgets

__all__ = ["GuideReview"]

# Shared with pixlab.widgets.guide, which imports them from here (so the two never import each other).
NO_MODEL = "Train or set a model first (the training panel, or annotator.set_model(model))."
_MAX_ENTRIES = 20  # list buttons per review section; the rest is counted, not shown


def _note(text: str, error: bool = False) -> str:
    colour = "#b00" if error else "#555"
    return f"<span style='color:{colour}'>{html.escape(str(text))}</span>"


def _button(text: str, tooltip: str, callback) -> widgets.Button:
    b = widgets.Button(description=text, tooltip=tooltip, layout=widgets.Layout(width="auto"))
    b.on_click(lambda _b: callback())
    return b


class GuideReview:
    """Review of the labels for :class:`~pixlab.widgets.guide.GuidePanel` (which provides ``annotator``,
    ``guide``, ``ready``, ``region``, ``mistakes``, ``tiles``, ``_say``, ``_analysis_region``, ``_go_to``
    and ``draw``)."""

    def _review_tab(self) -> widgets.VBox:
        """Create the review controls (attributes of the panel) and return the tab that holds them."""
        self.check_button = widgets.Button(description="Check labels", icon="search",
                                           tooltip="list strokes the model confidently disagrees with and "
                                                   "evaluate it on every labelled image",
                                           layout=widgets.Layout(width="auto"))
        self.check_button.on_click(lambda _b: self.check_labels())
        self.min_confidence = widgets.FloatSlider(value=0.9, min=0.5, max=0.99, step=0.01,
                                                  description="confidence ≥", continuous_update=False,
                                                  layout=widgets.Layout(width="280px"))
        self.mistake_buttons = widgets.VBox()
        self.relabel_buttons = widgets.VBox()
        self.confusion = widgets.Dropdown(options=[("(check labels first)", None)], value=None,
                                          description="Confusion", layout=widgets.Layout(width="360px"))
        self.confusion.observe(self._on_confusion, names="value")
        self.tile_buttons = widgets.VBox()
        return widgets.VBox([
            widgets.HBox([self.check_button, self.min_confidence]),
            widgets.HTML("<b>Possible label mistakes</b> (labelled pixels the model confidently calls "
                         "another class)"),
            widgets.HBox([self.mistake_buttons, self.relabel_buttons]),
            widgets.HTML("<b>Confused tiles</b> (labelled class → predicted class)"),
            self.confusion, self.tile_buttons])

    def check_labels(self) -> None:
        """List possible label mistakes in this image and the confusions over all labelled images."""
        if not self.ready:
            self._say(NO_MODEL)
            return
        self._say("checking labels…")
        try:
            self.region = self._analysis_region()
            self.mistakes = self.guide.refinements(self.min_confidence.value, region=self.region)
            top = self.guide.confusions(n=10)
        except ValueError as e:
            self._say(str(e), error=True)
            return
        self._show_mistakes()
        self.confusion.unobserve(self._on_confusion, names="value")
        self.confusion.options = [("(choose a confusion)", None)] + [
            (f"{r['true']} → {r['predicted']} ({r['pixels']} px, {100 * r['fraction']:.0f}%)",
             (r["true"], r["predicted"])) for _, r in top.iterrows()]
        self.confusion.value = None
        self.confusion.observe(self._on_confusion, names="value")
        self.tiles = None
        self.tile_buttons.children = ()
        mean = self.guide.report().mean_iou.get("all", float("nan"))
        self._say(f"{len(self.mistakes)} possible label mistake(s) in this image; {len(top)} confusion(s) over "
                  f"all labelled images (mean IoU {mean:.2f}).")
        self.draw()

    def _show_mistakes(self) -> None:
        shown = self.mistakes.head(_MAX_ENTRIES)
        go = [_button(f"{k}. '{r['class']}' labelled, model: '{r['predicted']}' ({100 * r['confidence']:.0f}%, "
                      f"{r['pixels']} px)", f"go to y {r['y0']}-{r['y1']}, x {r['x0']}-{r['x1']}",
                      lambda k=k: self.go_to_mistake(k))
              for k, (_, r) in enumerate(shown.iterrows(), start=1)]
        # A column of its own beside the "go to" buttons, one per row.
        self.relabel_buttons.children = tuple(
            _button(f"relabel as '{r['predicted']}'", "give these pixels the model's class (one undo step)",
                    lambda k=k: self.relabel_mistake(k))
            for k, (_, r) in enumerate(shown.iterrows(), start=1))
        if len(self.mistakes) > len(shown):
            go.append(widgets.HTML(_note(f"… and {len(self.mistakes) - len(shown)} more")))
        self.mistake_buttons.children = tuple(go) or (widgets.HTML(_note("none found")),)

    def _listed(self, table, k: int, missing: str):
        """Entry ``k`` (1-based, as listed) of ``table``, or None after saying why there is none."""
        if not self.ready:
            self._say(NO_MODEL)
            return None
        if table is None or not 1 <= int(k) <= len(table):
            self._say(missing, error=True)
            return None
        return table.iloc[int(k) - 1]

    def relabel_mistake(self, k: int) -> None:
        """Relabel possible mistake ``k`` (1-based, as listed): its flagged pixels take the model's class.

        The flagged pixels are those of the listed class in the entry's box that the model calls the
        predicted class with at least the "confidence ≥" probability (one undo step); the entry then
        leaves the list.
        """
        r = self._listed(self.mistakes, k, f"there is no entry {k}; press 'Check labels'")
        if r is None:
            return
        ann = self.annotator
        box = (int(r.y0), int(r.y1), int(r.x0), int(r.x1))
        try:
            probs = self.guide.probabilities(region=self.region)
            origin = (0, 0) if self.region is None else (self.region[0], self.region[2])
            change = ann.session.relabel_mistake(probs, r["class"], r["predicted"], self.min_confidence.value,
                                                 origin=origin, region=box)
        except ValueError as e:
            self._say(str(e), error=True)
            return
        self.mistakes = self.mistakes.drop(self.mistakes.index[int(k) - 1]).reset_index(drop=True)
        ann._after_edit(change)
        self._show_mistakes()
        self.draw()
        self._say(f"relabelled {change.n_changed} px from '{r['class']}' to '{r['predicted']}' (undo restores them)")

    def go_to_mistake(self, k: int) -> None:
        """Centre the view on possible label mistake ``k`` (1-based, as listed)."""
        r = self._listed(self.mistakes, k, f"there is no entry {k}; press 'Check labels'")
        if r is None:
            return
        self._go_to(self.annotator.session.index, (int(r.y0), int(r.y1), int(r.x0), int(r.x1)))

    def _on_confusion(self, change) -> None:
        self.select_confusion(change["new"])

    def select_confusion(self, cell) -> None:
        """List the review tiles behind confusion ``cell`` = (labelled class, predicted class) names."""
        if cell is None:
            self.tiles = None
            self.tile_buttons.children = ()
            return
        try:
            self.tiles = self.guide.confused_tiles(*cell)
        except ValueError as e:
            self._say(str(e), error=True)
            return
        shown = self.tiles.head(_MAX_ENTRIES)
        buttons = [
            _button(f"{r['image_name']} y{r['y0']} x{r['x0']} · {r['split']} · {r['cell_pixels']} px",
                    f"go to this tile (loss {r['loss']:.2f}, {r['disagreement']:.0f}% disagree)",
                    lambda k=k: self.go_to_tile(k))
            for k, (_, r) in enumerate(shown.iterrows(), start=1)]
        if len(self.tiles) > len(shown):
            buttons.append(widgets.HTML(_note(f"… and {len(self.tiles) - len(shown)} more")))
        self.tile_buttons.children = tuple(buttons)
        if self.confusion.value != tuple(cell):  # called from Python: keep the menu in step
            self.confusion.unobserve(self._on_confusion, names="value")
            self.confusion.value = tuple(cell)
            self.confusion.observe(self._on_confusion, names="value")

    def go_to_tile(self, k: int) -> None:
        """Show confused tile ``k`` (1-based, as listed), switching image when it is in another one."""
        r = self._listed(self.tiles, k, f"there is no tile {k}; choose a confusion first")
        if r is None:
            return
        self._go_to(int(r["session_image"]), (int(r["y0"]), int(r["y1"]), int(r["x0"]), int(r["x1"])))
