"""Axis layouts: turning an array (or a file's axes) into channels-first ``(C, Y, X)``.

pixlab guesses only the layouts that cannot be read two ways: ``(Y, X)``; ``(Y, X, 3)`` samples-last
(an image 3 pixels wide is not an image); ``(Y, X, 4)`` uint8 (an RGBA photograph: alpha dropped, with
a warning); ``(C, Y, X)`` with C at most :data:`MAX_GUESSED_CHANNELS` and smaller than Y and X
(or C = 1).
Anything else (``(Y, X, 5)``, ``(Y, X, 4)`` uint16, ``(100, 200, 300)``) is refused with a message
that says which ``axes=`` to pass, because a wrong guess silently trains on garbage.
"""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np

from pixlab.image.image import no_pixels

__all__ = ["array_to_cyx", "axes_to_cyx", "MAX_GUESSED_CHANNELS", "CHANNEL_AXES"]

#: The largest first axis that is taken for channels without ``axes=`` (multiplexed panels reach ~60).
MAX_GUESSED_CHANNELS = 64

#: Axis letters that can hold channels: C (channel), S (samples, e.g. RGB), Q (unknown, e.g. a plain
#: (N, Y, X) TIFF stack written without metadata), I (a sequence of pages).
CHANNEL_AXES = "CSQI"


def _xp(arr):
    return da if isinstance(arr, da.Array) else np


def axes_to_cyx(arr, axes: str, what):
    """Squeeze size-1 axes of ``arr`` (described by ``axes``) and move the channel axis first.

    Parameters
    ----------
    arr : numpy or dask array
    axes : str
        One letter per axis of ``arr``: Y, X, and at most one channel-like axis (C, S, Q or I) of size
        > 1; other axes (T, Z, ...) must have size 1.
    what : str
        How to name the image in an error ("image 'x.tif'").

    Returns
    -------
    (array (C, Y, X), bool)
        The array and whether its channels were samples (S: an interleaved RGB plane).
    """
    axes = str(axes).upper()
    shape = tuple(int(s) for s in arr.shape)
    if len(axes) != len(shape) or len(set(axes)) != len(axes):
        raise ValueError(
            f"axes={axes!r} does not describe {what} of shape {shape}: give one distinct letter per axis, "
            f"e.g. axes={'YXC' if len(shape) == 3 else 'YX' if len(shape) == 2 else 'TCZYX'!r}"
        )
    keep = [i for i, a in enumerate(axes) if a in "YX" or shape[i] != 1]
    arr = arr[tuple(slice(None) if i in keep else 0 for i in range(arr.ndim))]
    left = "".join(axes[i] for i in keep)
    extra = [a for a in left if a not in "YX"]
    if "Y" not in left or "X" not in left or len(extra) > 1 or (extra and extra[0] not in CHANNEL_AXES):
        raise ValueError(
            f"cannot read {what}: axes {axes!r} with shape {shape} after squeezing size-1 axes is not "
            f"supported; pixlab reads 2-D images with channels (YX, CYX, YXC, YXS or TCZYX with T=Z=1) - "
            f"save one plane or channel stack per file, or select one plane of the array first"
        )
    if not extra:
        return arr[None], False
    order = [left.index(extra[0]), left.index("Y"), left.index("X")]
    return _xp(arr).transpose(arr, order), extra[0] == "S"


def _ambiguous(shape, dtype, hint) -> ValueError:
    return ValueError(
        f"cannot tell which axis of the array of shape {shape} ({dtype}) holds the channels{hint}; "
        f"pass axes= to open_image: axes='YXC' for channels last, axes='CYX' for channels first "
        f"(e.g. pixlab.open_image(arr, axes='YXC'))"
    )


def array_to_cyx(arr, axes: str | None = None):
    """Apply pixlab's layout rules to an in-memory or dask array.

    Parameters
    ----------
    arr : array-like
        ``(Y, X)``, ``(Y, X, 3)``, ``(Y, X, 4)`` uint8, ``(C, Y, X)`` with small C; anything with
        ``axes``.
    axes : str, optional
        One letter per axis (Y, X, C; S is a synonym of C; size-1 T/Z axes are dropped). Overrides the
        guess.

    Returns
    -------
    (array (C, Y, X), bool)
        The array and whether it is an RGB(A) photograph layout (samples last).

    Examples
    --------
    >>> array_to_cyx(np.zeros((32, 48, 3), np.uint8))[0].shape
    (3, 32, 48)
    >>> array_to_cyx(np.zeros((32, 48, 5)), axes="YXC")[0].shape
    (5, 32, 48)
    """
    if not isinstance(arr, (np.ndarray, da.Array)):
        arr = np.asarray(arr)
    if axes is not None:
        return axes_to_cyx(arr, axes, f"the array of shape {tuple(arr.shape)}")
    shape = tuple(int(s) for s in arr.shape)
    if 0 in shape:
        raise no_pixels("image", shape)
    if arr.ndim == 2:
        return arr[None], False
    if arr.ndim != 3:
        raise ValueError(
            f"image array must be (Y, X), (Y, X, 3) or (C, Y, X), got shape {shape}; squeeze or select the "
            f"extra axes first, or pass axes= (e.g. axes='TCZYX' when T and Z have size 1)"
        )
    first, last = shape[0], shape[2]
    # One leading plane is a channel: (1, Y, X) read as 1 x X pixels of Y samples would be 1 px tall.
    channels_first = first <= MAX_GUESSED_CHANNELS and (first < min(shape[1], last) or first == 1)
    if channels_first:
        return arr, False
    if last == 3 and min(shape[:2]) > 3:
        return _xp(arr).moveaxis(arr, -1, 0), True
    if last == 4 and min(shape[:2]) > 4:
        if arr.dtype != np.uint8:
            raise _ambiguous(shape, arr.dtype, ": 4 values per pixel are RGBA only in 8-bit photographs, "
                                               "so pixlab does not drop the 4th as alpha")
        warnings.warn(
            f"array of shape {shape} read as an RGBA photograph: the 4th value per pixel (alpha) is "
            f"dropped; pass axes='YXC' to keep it as a 4th channel", stacklevel=3)
        return _xp(arr).moveaxis(arr[..., :3], -1, 0), True
    raise _ambiguous(shape, arr.dtype, "")
