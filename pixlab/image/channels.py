"""Matching an image's channels to the channels a model expects: the one rule for it.

- Names that say something (``DAPI``, ``CD3``) are matched by name on both sides: the image's
  channels are reordered or a subset is taken; a name the image lacks is an error that lists what
  the image has and how to map it.
- Generic names (``Channel 1``, ``Red``/``Green``/``Blue``, ``C0``, ``Channel:0:1`` — what
  readers call channels they know nothing about) carry no meaning, so channels are taken by
  position when the counts agree, with a warning saying so (none when the names are identical).
- A different channel count is an error unless the caller selects the channels (``channels=`` in
  Python, ``pixlab predict --channels`` on the command line).
"""

from __future__ import annotations

import re
import warnings

from pixlab.image.image import RGB_NAMES

__all__ = ["match_channels", "is_generic", "parse_channels"]

# "Channel 1", "channel_2", "Ch3", "C0", "0", "Channel:0:1" (Bio-Formats' default), "" ...
_GENERIC = re.compile(r"^(channel|chan|ch|c)?[\s:_\-#]*\d*([:_\-]\d+)*$")
_GENERIC_WORDS = {n.casefold() for n in RGB_NAMES} | {"r", "g", "b", "gray", "grey", "grayscale", "intensity"}


def is_generic(name) -> bool:
    """True for a channel name a reader made up (``Channel 1``, ``Red``, ``C0``): no meaning to match."""
    s = str(name).strip().casefold()
    return s in _GENERIC_WORDS or bool(_GENERIC.match(s))


def parse_channels(text: str):
    """Parse a command-line channel selection.

    ``"DAPI,CD8"`` -> ``["DAPI", "CD8"]`` (image channels in the model's order), ``"0,2"`` ->
    ``[0, 2]`` (0-based indices), ``"CD3=CD8,DAPI=DAPI"`` -> ``{"CD3": "CD8", "DAPI": "DAPI"}``
    (model channel = image channel).
    """
    parts = [p.strip() for p in str(text).split(",")]
    if not all(parts):
        raise ValueError(f"--channels {text!r} has an empty entry; give names or 0-based indices separated "
                         f"by commas, e.g. --channels DAPI,CD8 or --channels 0,2 or --channels CD3=CD8")

    def value(p):
        return int(p) if p.isdigit() else p

    if any("=" in p for p in parts):
        if not all(p.count("=") == 1 for p in parts):
            raise ValueError(f"--channels {text!r}: write each mapping as MODEL_CHANNEL=IMAGE_CHANNEL, "
                             f"e.g. --channels CD3=CD8,DAPI=DAPI")
        return {k.strip(): value(v.strip()) for k, v in (p.split("=") for p in parts)}
    return [value(p) for p in parts]


def _how(expected, example) -> str:
    return (f"choose the image channels in the model's order with channels={example!r} (names or 0-based "
            f"indices; a dict {{model channel: image channel}} also works; on the command line "
            f"--channels {','.join(map(str, example))})")


def match_channels(img, expected, channels=None, *, target: str = "the model", fix: str | None = None):
    """Return ``img`` with the channels ``expected``, in that order.

    Parameters
    ----------
    img : Image
    expected : sequence of str
        The channel names the consumer (a model) expects, in order.
    channels : sequence of int/str, or dict, optional
        The caller's choice: image channels (names or 0-based indices) in the order of ``expected``,
        or ``{expected name: image channel}``. Overrides matching by name.
    target : str
        What expects the channels, for messages.
    fix : str, optional
        How the caller's user resolves a mismatch, for messages; by default: choose the image
        channels with ``channels=`` (or ``--channels``).

    Returns
    -------
    Image
        ``img`` itself when nothing changes, else a lazy selection of its channels.

    Raises
    ------
    ValueError
        When a named channel is missing, or the counts differ and no ``channels`` were given.
    """
    expected = [str(c) for c in expected]
    names = list(img.channel_names)
    have = f"image '{img.name}' has {len(names)} channel(s) {names}"
    want = f"{target} expects {len(expected)} channel(s) {expected}"
    if channels is not None:
        return _selected(img, expected, channels, have, want)
    if names == expected:
        return img
    if not all(map(is_generic, names)) and not all(map(is_generic, expected)):
        found = [_find(names, e) for e in expected]
        missing = [e for e, i in zip(expected, found) if i is None]
        if not missing:
            return img.select_channels(found)
        spare = [n for j, n in enumerate(names) if j not in found]  # a guess for the example only
        example = [names[i] if i is not None else (spare.pop(0) if spare else names[0]) for i in found]
        raise ValueError(f"{have} but {want}: {missing} not found by name; {fix or _how(expected, example)}")
    if len(names) != len(expected):
        example = list(range(len(expected))) if len(expected) <= len(names) else [0] * len(expected)
        raise ValueError(f"{have} but {want}; {fix or _how(expected, example)}")
    warnings.warn(f"{have} and {want}: the names say nothing to match, so channels are used by position "
                  f"({', '.join(f'{n} as {e}' for n, e in zip(names, expected))}); if that is wrong, "
                  f"{fix or _how(expected, list(range(len(expected))))}", stacklevel=3)
    return img


def _find(names, wanted):
    if wanted in names:
        return names.index(wanted)
    folded = [n.strip().casefold() for n in names]
    key = wanted.strip().casefold()
    return folded.index(key) if folded.count(key) == 1 else None


def _selected(img, expected, channels, have, want):
    if isinstance(channels, dict):
        unknown = [k for k in channels if str(k) not in expected]
        absent = [e for e in expected if e not in {str(k) for k in channels}]
        if unknown or absent:
            raise ValueError(f"channels={channels!r} must map each model channel {expected} to an image channel"
                             f" ({'unknown: ' + str(unknown) if unknown else 'missing: ' + str(absent)}); {have}")
        channels = [channels[next(k for k in channels if str(k) == e)] for e in expected]
    elif isinstance(channels, (str, int)):
        channels = [channels]
    channels = list(channels)
    if len(channels) != len(expected):
        raise ValueError(f"channels={channels!r} selects {len(channels)} channel(s) but {want}; {have}; "
                         f"give one image channel per model channel, in the model's order")
    return img.select_channels(channels)
