"""The tile sizes a network accepts: the one rule shared by training and prediction."""

from __future__ import annotations

import numbers

__all__ = ["TILE_MULTIPLE", "check_tile_size"]

#: Encoders halve a tile 5 times (stride 32), and the decoder must add the skip connections back
#: at the same sizes, so tile sides are multiples of 32.
TILE_MULTIPLE = 32


def check_tile_size(value, name: str = "tile_size", multiple: int = TILE_MULTIPLE) -> int:
    """Return ``value`` as an int, or raise a ValueError naming ``name`` and the nearest valid sizes.

    Parameters
    ----------
    value : int
        A tile side in pixels.
    name : str
        How the caller calls it, for the message (``"TrainConfig.tile_size"``, ``"--tile-size"``).
    multiple : int
        Tile sides must be multiples of this (:data:`TILE_MULTIPLE` for pixlab's networks; see
        ``Model.tile_multiple``).

    Examples
    --------
    >>> check_tile_size(256)
    256
    >>> check_tile_size(100, "--tile-size")
    Traceback (most recent call last):
    ...
    ValueError: --tile-size=100 is not divisible by 32 (the encoder halves it 5 times); use 96 or 128
    """
    m = int(multiple)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or float(value) != int(value) or value < m:
        raise ValueError(f"{name}={value!r} must be a whole number of pixels, at least {m}"
                         + (f" and divisible by {m}; e.g. 256 or 512" if m > 1 else ""))
    value = int(value)
    if value % m:
        lo, hi = value // m * m, (value // m + 1) * m
        why = "the encoder halves it 5 times" if m == TILE_MULTIPLE else f"the network takes multiples of {m}"
        raise ValueError(f"{name}={value} is not divisible by {m} ({why}); use {max(lo, m)} or {hi}")
    return value
