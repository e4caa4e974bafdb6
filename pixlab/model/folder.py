"""The model bundle folder: ``model.safetensors`` (weights) and ``metadata.json`` (everything else).

This module is the file format only (names, the atomic write, reading and checking the metadata);
it imports nothing from pixlab but :mod:`pixlab._atomic`, so that :class:`pixlab.Model` can save itself and
:meth:`pixlab.TrainConfig.from_model` can read a bundle's settings without an import cycle.
Turning a folder back into a model is :mod:`pixlab.model.bundle` (the one loader).

No pickle anywhere: weights are safetensors, metadata is JSON, and loading never follows a path
outside the bundle folder.

Epochs: ``best_epoch`` in the metadata (and ``Model.summary()``, ``history[i]["epoch"]``) is the
0-based index into ``history``; text for people counts from 1 (:func:`epoch_text`: "epoch 3 of 5"),
as the notebooks, the training panel, ``pixlab train`` and ``pixlab info`` do.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

__all__ = ["save_model", "check_new_folder", "epoch_text", "read_metadata", "BUNDLE_VERSION", "WEIGHTS", "METADATA", "versions"]

BUNDLE_VERSION = 1
WEIGHTS = "model.safetensors"
METADATA = "metadata.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


def versions() -> dict:
    """Versions of the libraries a model depends on (recorded in every bundle)."""
    import importlib.metadata as md
    out = {"python": platform.python_version()}
    for pkg in ("pixlab", "torch", "segmentation-models-pytorch", "timm", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _state_dict_tensors(network) -> dict:
    # safetensors refuses shared/non-contiguous storage; clone makes every tensor standalone.
    return {k: v.detach().cpu().contiguous().clone() for k, v in network.state_dict().items()}


def epoch_text(index, n_epochs) -> str | None:
    """The 0-based epoch ``index`` as people count it: ``epoch_text(2, 5) == "3 of 5"`` (None stays None)."""
    return None if index is None else f"{int(index) + 1} of {int(n_epochs)}"


def check_new_folder(directory, overwrite: bool) -> Path:
    """Refuse to replace an existing model folder unless ``overwrite``: the rule of every model writer
    (``Model.save``, ``pixlab train``), like ``predict_file`` for its outputs."""
    d = Path(directory)
    if d.exists() and not overwrite:
        raise FileExistsError(f"model folder '{d}' exists; pass overwrite=True to replace it, or choose "
                              f"another folder")
    return d


def save_model(model, directory, overwrite: bool = False) -> None:
    """Write ``model`` to ``directory``.

    Parameters
    ----------
    model : pixlab.Model
    directory : str or PathLike
    overwrite : bool
        Replace an existing folder (atomically: a reader sees the old bundle or the new one); without
        it an existing folder raises FileExistsError.
    """
    from safetensors.torch import save_file
    from pixlab._atomic import atomic_dir

    check_new_folder(directory, overwrite)

    meta = {
        "format": "pixlab-model",
        "bundle_version": BUNDLE_VERSION,
        "weights": WEIGHTS,
        "class_names": model.class_names,
        "colours": model.colours,
        "channel_names": model.channel_names,
        "normalization": model.norm_stats,
        "config": model.config.to_dict(),
        "history": model.history,
        "versions": versions(),
        **{k: v for k, v in model.metadata.items() if k not in ("versions",)},
    }
    text = json.dumps(meta, indent=2, default=_json_default)
    with atomic_dir(directory) as tmp:
        save_file(_state_dict_tensors(model.network), str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / METADATA).write_text(text, encoding="utf-8")


def _json_default(o):
    import numpy as np
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot store {type(o).__name__} in model metadata")


def _bundle_dir(directory) -> Path:
    d = Path(directory)
    if d.is_file():
        if d.suffix.lower() in PICKLE_SUFFIXES:
            raise ValueError(
                f"'{d}' is a PyTorch pickle file; pixlab does not unpickle files because loading a pickle "
                f"can run arbitrary code. Load a pixlab model folder (model.safetensors + metadata.json) "
                f"saved with model.save(), or convert the weights to safetensors")
        raise ValueError(f"'{d}' is a file; pass the model folder that holds metadata.json")
    if not d.exists():
        raise FileNotFoundError(f"model folder '{d}' not found; pass the folder written by model.save()")
    return d


def read_metadata(directory) -> dict:
    """Read and check ``metadata.json`` of a bundle."""
    d = _bundle_dir(directory)
    p = d / METADATA
    if not p.is_file():
        pickles = sorted(x.name for x in d.iterdir() if x.suffix.lower() in PICKLE_SUFFIXES)
        hint = (f" It holds pickle-based file(s) {pickles}, which pixlab refuses to load because "
                f"unpickling can run arbitrary code." if pickles else "")
        raise FileNotFoundError(f"model folder '{d}' has no {METADATA}; it is not a pixlab model bundle "
                                f"(save one with model.save(folder)).{hint}")
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"'{p}' is not valid JSON ({e}); the bundle is damaged, save the model again") from None
    if not isinstance(meta, dict) or meta.get("format") != "pixlab-model":
        raise ValueError(f"'{p}' is not pixlab model metadata (no format: pixlab-model)")
    if int(meta.get("bundle_version", 0)) > BUNDLE_VERSION:
        raise ValueError(f"model '{d}' was saved by a newer pixlab (bundle version {meta['bundle_version']}, "
                         f"this one reads up to {BUNDLE_VERSION}); upgrade pixlab")
    _check_fields(meta, p)
    return meta


#: What loading needs from metadata.json: key -> JSON type (and, for normalisation, its keys).
REQUIRED = {"class_names": list, "colours": list, "channel_names": list, "normalization": dict, "config": dict}
NORMALIZATION_KEYS = ("method", "per_channel", "offset", "scale", "clip")


def _check_fields(meta: dict, path: Path) -> None:
    """A missing or mistyped field would fail later as a bare KeyError: name it, and who wrote the file."""
    who = (meta.get("versions") or {}).get("pixlab") if isinstance(meta.get("versions"), dict) else None
    wrote = f"written by pixlab {who}" if who else "written by an unknown pixlab version"

    def bad(what):
        return ValueError(f"'{path}' {what} ({wrote}); the bundle is incomplete or was edited: save the model "
                          f"again with model.save(folder)")

    for key, kind in REQUIRED.items():
        if key not in meta:
            raise bad(f"has no '{key}'")
        if not isinstance(meta[key], kind):
            raise bad(f"has '{key}' of type {type(meta[key]).__name__}, not a JSON {'list' if kind is list else 'object'}")
    missing = [k for k in NORMALIZATION_KEYS if k not in meta["normalization"]]
    if missing:
        raise bad(f"has no '{missing[0]}' in 'normalization'")
    if not meta["class_names"] or not meta["channel_names"]:
        raise bad(f"has an empty '{'class_names' if not meta['class_names'] else 'channel_names'}'")


def _inside(d: Path, name: str) -> Path:
    """Resolve a file name from metadata, refusing anything outside the bundle folder."""
    p = (d / name).resolve()
    if p.parent != d.resolve():
        raise ValueError(f"model metadata names weight file {name!r} outside the model folder; refusing to follow it")
    return p
