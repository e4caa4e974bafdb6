"""Model bundles: a folder with ``model.safetensors`` (weights) and ``metadata.json`` (everything else).

No pickle anywhere: weights are safetensors, metadata is JSON, and loading never follows a path
outside the bundle folder.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

__all__ = ["save_model", "load_model", "read_metadata", "BUNDLE_VERSION", "versions"]

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


def load_model(directory, device: str | None = None):
    """Load a model bundle written by :meth:`pixlab.Model.save`.

    Parameters
    ----------
    directory : str or PathLike
        The bundle folder.
    device : str, optional
        Where to put the network ('cpu', 'cuda', ...); default CPU.

    Returns
    -------
    pixlab.Model
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from pixlab.training.config import TrainConfig
    from pixlab.model.model import Model
    from pixlab.nn.networks import build_network

    from pixlab.model.export.bioimageio_import import is_bioimageio
    if is_bioimageio(directory):  # a bioimage.io package (.zip or folder), or one saved by pixlab
        from pixlab.model.export.bioimageio_import import load_bioimageio
        model = load_bioimageio(directory)
        return model.to(device) if device else model
    d = _bundle_dir(directory)
    if not (d / METADATA).is_file() and (d / "onnx_model.json").is_file():
        from pixlab.model.onnx_import import import_onnx  # an imported external ONNX model saved by pixlab
        model = import_onnx(d)
        return model
    meta = read_metadata(d)
    cfg = TrainConfig.from_dict(meta["config"])
    wpath = _inside(d, meta.get("weights", WEIGHTS))
    if not wpath.is_file():
        raise FileNotFoundError(f"model folder '{d}' has no weight file '{wpath.name}'; the bundle is incomplete, save the model again")
    net = build_network(cfg.architecture, cfg.encoder, len(meta["channel_names"]), len(meta["class_names"]),
                        pretrained=False)
    try:
        state = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"cannot read weights '{wpath}': {e}; the file is damaged, save the model again") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"weights in '{wpath}' do not fit a {cfg.architecture}/{cfg.encoder} network: "
                         f"{str(e).splitlines()[0]}") from None
    extra = {k: v for k, v in meta.items() if k not in (
        "format", "bundle_version", "weights", "class_names", "colours", "channel_names", "normalization",
        "config", "history")}
    model = Model(net, meta["class_names"], meta["colours"], meta["channel_names"], meta["normalization"],
                  cfg, meta.get("history", []), extra)
    if device:
        model.to(device)
    return model
