"""Class colours: the default palette and the one parser of colour values (names, hex, RGB)."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np

__all__ = ["DEFAULT_COLOURS", "default_colours", "parse_colour"]


#: Default class colours (RGB, 0-255). Class 1 is usually background, so it gets a neutral grey; the
#: next seven are the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies),
#: then four colours from Paul Tol's palettes. :func:`default_colours` extends the list when needed.
DEFAULT_COLOURS: tuple[tuple[int, int, int], ...] = (
    (150, 150, 150),  # neutral grey (background)
    (230, 159, 0),  # orange
    (86, 180, 233),  # sky blue
    (0, 158, 115),  # bluish green
    (240, 228, 66),  # yellow
    (0, 114, 178),  # blue
    (213, 94, 0),  # vermillion
    (204, 121, 167),  # reddish purple
    (136, 34, 85),  # wine
    (68, 170, 153),  # teal
    (153, 153, 51),  # olive
    (221, 204, 119),  # sand
)


def default_colours(n: int) -> list[list[int]]:
    """Return ``n`` distinct RGB colours for classes ``1..n``.

    Parameters
    ----------
    n : int
        Number of classes (>= 0).

    Returns
    -------
    list of [r, g, b]
        The first colours of :data:`DEFAULT_COLOURS`; beyond those, hues spaced by the golden angle
        so that neighbouring class ids still get visibly different colours.

    Examples
    --------
    >>> default_colours(2)
    [[150, 150, 150], [230, 159, 0]]
    """
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}; pass the number of classes.")
    colours = [list(c) for c in DEFAULT_COLOURS[:n]]
    golden = 0.618033988749895
    for i in range(len(colours), int(n)):
        hue = (i * golden) % 1.0
        # Alternate lightness a little so consecutive colours also differ in brightness.
        value = 0.95 if i % 2 else 0.75
        r, g, b = colorsys.hsv_to_rgb(hue, 0.7, value)
        colours.append([round(r * 255), round(g * 255), round(b * 255)])
    return colours


def parse_colour(colour) -> list[int]:
    """Convert a colour given as hex string, RGB triple or QuPath packed integer to ``[r, g, b]``.

    Parameters
    ----------
    colour : str, sequence of 3 int, or int
        ``"#rrggbb"`` (or ``"#rgb"``), ``[r, g, b]`` with values 0-255, or a QuPath packed colour:
        a (possibly negative) 32-bit ARGB integer such as ``-65536`` for red, as in QuPath's older
        ``"colorRGB"`` field.

    Returns
    -------
    list of int
        ``[r, g, b]``, each 0-255.

    Examples
    --------
    >>> parse_colour("#ff8000")
    [255, 128, 0]
    >>> parse_colour(-65536)
    [255, 0, 0]
    >>> parse_colour((0, 114, 178))
    [0, 114, 178]
    """
    if isinstance(colour, str):
        text = colour.strip().lstrip("#")
        if len(text) == 3:
            text = "".join(ch * 2 for ch in text)
        try:
            if len(text) != 6:
                raise ValueError
            return [int(text[i : i + 2], 16) for i in (0, 2, 4)]
        except ValueError:
            raise ValueError(
                f"colour {colour!r} is not a hex colour; use the form '#rrggbb', e.g. '#e69f00'"
            ) from None
    if isinstance(colour, (int, np.integer)) and not isinstance(colour, bool):
        # QuPath packs colours as Java ints (ARGB, signed); the mask makes negative values unsigned.
        packed = int(colour) & 0xFFFFFFFF
        if int(colour) > 0xFFFFFFFF or int(colour) < -(2**31):
            raise ValueError(
                f"colour {colour!r} is outside the 32-bit range of a QuPath packed colour; "
                "pass '#rrggbb' or [r, g, b] instead"
            )
        return [(packed >> 16) & 255, (packed >> 8) & 255, packed & 255]
    try:
        values = list(colour)
    except TypeError:
        values = None
    if (
        values is None
        or len(values) != 3
        or any(isinstance(v, bool) or not float(v).is_integer() or not 0 <= v <= 255 for v in values)
    ):
        raise ValueError(
            f"colour {colour!r} is not understood; pass '#rrggbb', [r, g, b] with integers 0-255, "
            "or a QuPath packed integer"
        )
    return [int(v) for v in values]


def _colours_for(class_names: Sequence[str], colours) -> list[list[int]]:
    if colours is None:
        return default_colours(len(class_names))
    colours = [parse_colour(c) for c in colours]
    if len(colours) < len(class_names):
        raise ValueError(
            f"{len(colours)} colours were given for {len(class_names)} classes; "
            "give one colour per class or pass colours=None for the defaults"
        )
    return colours
