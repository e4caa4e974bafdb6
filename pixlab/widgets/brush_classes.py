"""The classes of the brush annotator: the class list, its edit controls and their actions.

A mixin of :class:`pixlab.widgets.brush.BrushAnnotator`: the widgets translate clicks into
:class:`pixlab.annotation.AnnotationSession` class edits; a refused edit becomes a message.
"""

from __future__ import annotations

import ipywidgets as widgets

from pixlab.widgets.brush_layers import _hex

__all__ = ["BrushClasses"]


class BrushClasses:
    """Class selection and editing of :class:`~pixlab.widgets.brush.BrushAnnotator` (mixin)."""

    def _build_class_controls(self) -> widgets.VBox:
        """Make the class list and edit controls; returns the edit box placed under the list."""
        small = widgets.Layout(width="auto")
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
        return widgets.VBox([
            widgets.HBox([self.class_name, self.class_colour, self.add_button, self.rename_button,
                          self.recolour_button]),
            widgets.HBox([self.delete_button, self.delete_mode])])

    @property
    def current_class(self) -> int:
        """The class id painted by the brush."""
        return int(self.class_select.value or 1)

    @current_class.setter
    def current_class(self, value) -> None:
        self.class_select.value = self.session.class_id(value)

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
