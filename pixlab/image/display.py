"""Turning images, labels and probabilities into RGB(A) pictures, and mapping a screen view onto an image.

Core module (no Jupyter imports): the widgets only copy the arrays made here onto a canvas.

- :func:`composite`: RGB for brightfield photographs, additive false colour for fluorescence (one colour
  per channel, any number of channels), read from the pyramid level that matches the zoom.
- :func:`label_overlay` / :func:`probability_overlay`: semi-transparent RGBA layers.
- :class:`Viewport`: zoom and pan of a canvas over an image larger than it. It maps canvas pixels to
  full-resolution image coordinates (painting) and renders only the part of an array that is visible,
  so a 50 000 px slide costs no more to show than a 512 px one.

The code lives in :mod:`pixlab.image.colours`, :mod:`pixlab.image.composite`,
:mod:`pixlab.image.overlays` and :mod:`pixlab.image.viewport`; this module keeps the names together.
"""

from pixlab.image.colours import CHANNEL_COLOURS, auto_range, channel_colours
from pixlab.image.composite import composite, thumbnail
from pixlab.image.overlays import encode_png, label_overlay, probability_overlay
from pixlab.image.viewport import Viewport

__all__ = [
    "CHANNEL_COLOURS",
    "channel_colours",
    "auto_range",
    "composite",
    "thumbnail",
    "label_overlay",
    "probability_overlay",
    "encode_png",
    "Viewport",
]
