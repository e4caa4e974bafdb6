"""The model bundle folder: ``model.safetensors`` (weights) and ``metadata.json`` (everything else).

This module is the file format only (names, the atomic write, reading and checking the metadata);
it imports nothing from pixlab but :mod:`pixlab._atomic`, so that :class:`pixlab.Model` can save itself and
:meth:`pixlab.TrainConfig.from_model` can read a bundle's settings without an import cycle.
Turning a folder back into a model is :mod:`pixlab.model.bundle` (the one loader).

No pickle anywhere: weights are safetensors, metadata is JSON, and loading never follows a path
outside the bundle folder.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

__all__ = ["save_model", "read_metadata", "BUNDLE_VERSION", "WEIGHTS", "METADATA", "versions"]

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


def save_model(model, directory) -> None:
    """Write ``model`` to ``directory`` (replaced atomically if it exists).

    Parameters
    ----------
    model : pixlab.Model
    directory : str or PathLike
    """
    from safetensors.torch import save_file
    from pixlab._atomic import atomic_dir

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
    return meta


def _inside(d: Path, name: str) -> Path:
    """Resolve a file name from metadata, refusing anything outside the bundle folder."""
    p = (d / name).resolve()
    if p.parent != d.resolve():
        raise ValueError(f"model metadata names weight file {name!r} outside the model folder; refusing to follow it")
    return p
