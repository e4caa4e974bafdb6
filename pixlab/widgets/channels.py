"""ChannelPicker: which channels to use, their display ranges and colours, and a composite preview."""

from __future__ import annotations

from typing import Callable

import ipywidgets as widgets
import numpy as np

from pixlab.image import display
from pixlab.image.io import open_image

__all__ = ["ChannelPicker"]


def _hex(colour) -> str:
    r, g, b = (int(v) for v in colour)
    return f"#{r:02x}{g:02x}{b:02x}"


class ChannelPicker(widgets.VBox):
    """A checkbox, thumbnail, display-range slider and colour per channel, plus a composite preview.

    Works for 1 to 40+ channels (the channel list scrolls). The selection is what the annotation
    session's preview and training use when a session is given.

    Parameters
    ----------
    source : Image, array, path or AnnotationSession
        The image to show; with a session, the picker follows its current image and writes the
        selection to ``session.channels`` and the normalization switch to ``session.per_channel``.
    preview_size : int
        Longest side of the composite preview, in pixels.
    thumbnail_size : int
        Longest side of the channel thumbnails.

    Attributes
    ----------
    checkboxes, sliders, colour_pickers, thumbnails : list of widgets
        One per channel.
    normalization : ipywidgets.ToggleButtons
        ``True`` = per-channel normalization, ``False`` = joint.
    preview : ipywidgets.Image
        The composite of the selected channels.
    message : ipywidgets.HTML
        Problems, e.g. "select at least one channel".
    """

    def __init__(self, source, preview_size: int = 320, thumbnail_size: int = 48):
        from pixlab.annotation import AnnotationSession

        self.session = source if isinstance(source, AnnotationSession) else None
        self.preview_size = int(preview_size)
        self.thumbnail_size = int(thumbnail_size)
        self._callbacks: list[Callable] = []
        self._quiet = False
        self.normalization = widgets.ToggleButtons(
            options=[("per channel", True), ("joint", False)],
            value=self.session.per_channel if self.session else True,
            description="Normalize", tooltip="Normalize each channel on its own (recommended for "
            "fluorescence) or all channels with one range (training and preview)")
        self.normalization.observe(self._on_normalization, names="value")
        self.preview = widgets.Image(format="png", layout=widgets.Layout(max_width=f"{self.preview_size}px"))
        self.message = widgets.HTML()
        self.all_button = widgets.Button(description="all", layout=widgets.Layout(width="60px"))
        self.none_button = widgets.Button(description="none", layout=widgets.Layout(width="60px"))
        self.auto_button = widgets.Button(description="auto ranges", layout=widgets.Layout(width="100px"))
        self.all_button.on_click(lambda _: self.select(list(range(self.image.n_channels))))
        self.none_button.on_click(lambda _: self.select([]))
        self.auto_button.on_click(lambda _: self.auto_ranges())
        self.rows = widgets.VBox(layout=widgets.Layout(max_height="360px", overflow="auto"))
        super().__init__()
        if self.session is not None:
            self.session.subscribe(self._on_session_event)
            self.set_image(self.session.image)
        else:
            self.set_image(open_image(source))

    # ------------------------------------------------------------------------------------------
    def set_image(self, image) -> None:
        """Show another image; the selection is kept by channel name where the names match."""
        image = open_image(image)
        old = getattr(self, "image", None)
        keep = set(self.selected_names) if old is not None else None
        self.image = image
        n = image.n_channels
        default_colours = display.channel_colours(n, image.channel_names)
        self.checkboxes, self.sliders, self.colour_pickers, self.thumbnails = [], [], [], []
        self._auto = []
        rows = []
        for c, name in enumerate(image.channel_names):
            lo_data, hi_data = display.auto_range(image, c, (0, 100))
            auto = (0.0, 255.0) if image.is_rgb else display.auto_range(image, c)
            self._auto.append(auto)
            step = 1.0 if image.dtype.kind in "iu" else max((hi_data - lo_data) / 1000, 1e-6)
            cb = widgets.Checkbox(value=keep is None or name in keep, description=name, indent=False,
                                  layout=widgets.Layout(width="140px"))
            slider = widgets.FloatRangeSlider(
                value=auto, min=min(lo_data, auto[0]), max=max(hi_data, auto[1]), step=step,
                continuous_update=False, readout_format=".4g", layout=widgets.Layout(width="260px"),
                tooltip=f"display range of {name}")
            picker = widgets.ColorPicker(value=_hex(default_colours[c]), concise=True,
                                         layout=widgets.Layout(width="32px"))
            thumb = widgets.Image(value=display.encode_png(display.thumbnail(image, c, self.thumbnail_size, auto)),
                                  format="png", layout=widgets.Layout(width=f"{self.thumbnail_size}px"))
            for w in (cb, slider, picker):
                w.observe(self._on_control, names="value")
            self.checkboxes.append(cb)
            self.sliders.append(slider)
            self.colour_pickers.append(picker)
            self.thumbnails.append(thumb)
            rows.append(widgets.HBox([cb, thumb, slider, picker]))
        self.rows.children = rows
        buttons = widgets.HBox([self.all_button, self.none_button, self.auto_button, self.normalization])
        self.children = [buttons, self.rows, self.preview, self.message]
        self._changed()

    # ------------------------------------------------------------------------------------------
    @property
    def selected(self) -> list[int]:
        """Indices of the selected channels."""
        return [c for c, cb in enumerate(self.checkboxes) if cb.value]

    @property
    def selected_names(self) -> list[str]:
        """Names of the selected channels."""
        return [self.image.channel_names[c] for c in self.selected]

    @property
    def ranges(self) -> list[tuple]:
        """Display range ``(lo, hi)`` of each selected channel."""
        return [tuple(self.sliders[c].value) for c in self.selected]

    @property
    def colours(self) -> list[str]:
        """Display colour (``"#rrggbb"``) of each selected channel."""
        return [self.colour_pickers[c].value for c in self.selected]

    @property
    def per_channel(self) -> bool:
        """Per-channel (True) or joint (False) normalization."""
        return bool(self.normalization.value)

    def select(self, channels) -> None:
        """Select exactly these channels (indices or names)."""
        names = self.image.channel_names
        idx = set()
        for c in channels:
            if isinstance(c, str) and c in names:
                idx.add(names.index(c))
            elif not isinstance(c, str) and 0 <= int(c) < len(names):
                idx.add(int(c))
            else:
                raise ValueError(f"channel {c!r} is not in image '{self.image.name}'; channels: {names}")
        self._quiet = True
        try:
            for c, cb in enumerate(self.checkboxes):
                cb.value = c in idx
        finally:
            self._quiet = False
        self._changed()

    def set_range(self, channel, lo: float, hi: float) -> None:
        """Set a channel's display range (widening the slider if needed)."""
        c = self.image.channel_names.index(channel) if isinstance(channel, str) else int(channel)
        s = self.sliders[c]
        with s.hold_trait_notifications():
            s.min, s.max = min(s.min, lo), max(s.max, hi)
            s.value = (lo, hi)

    def auto_ranges(self) -> None:
        """Reset every display range to its percentile-based default."""
        self._quiet = True
        try:
            for s, auto in zip(self.sliders, self._auto):
                s.value = auto
        finally:
            self._quiet = False
        self._changed()

    def composite(self, region=None, downsample: float = 1) -> np.ndarray | None:
        """RGB composite of the selected channels (None if nothing is selected)."""
        if not self.selected:
            return None
        return display.composite(self.image, self.selected, self.ranges, self.colours, region, downsample)

    def on_change(self, callback: Callable) -> None:
        """Call ``callback(picker)`` after the selection, a range, a colour or the normalization changes."""
        self._callbacks.append(callback)

    # ------------------------------------------------------------------------------------------
    def _on_control(self, _change) -> None:
        if not self._quiet:
            self._changed()

    def _on_normalization(self, change) -> None:
        if self.session is not None:
            self.session.per_channel = bool(change["new"])
        self._notify()

    def _on_session_event(self, event, **info) -> None:
        if event == "image" and self.session.image is not self.image:
            self.set_image(self.session.image)

    def _changed(self) -> None:
        if not self.selected:
            self.message.value = "<span style='color:#b00'>Select at least one channel.</span>"
            self.preview.value = b""
        else:
            self.message.value = ""
            factor = max(1, int(np.ceil(max(self.image.shape[1:]) / self.preview_size)))
            self.preview.value = display.encode_png(self.composite(downsample=factor))
            if self.session is not None:
                everything = len(self.selected) == self.image.n_channels
                self.session.channels = None if everything else self.selected_names
        self._notify()

    def _notify(self) -> None:
        for cb in list(self._callbacks):
            cb(self)
