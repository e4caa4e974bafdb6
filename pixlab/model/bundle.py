"""Loading models: the one place that turns a folder or file into a :class:`pixlab.Model`.

:func:`load_model` tries the loaders in :data:`LOADERS` in order: a bioimage.io package, an
imported ONNX model saved by pixlab, and the pixlab bundle (``model.safetensors`` +
``metadata.json``, written by :meth:`pixlab.Model.save`). The bundle's file format and writer are
:mod:`pixlab.model.folder`; they are re-exported here.

No pickle anywhere: weights are safetensors, metadata is JSON, and loading never follows a path
outside the bundle folder.
"""

from __future__ import annotations

from pathlib import Path

from pixlab.model.folder import (BUNDLE_VERSION, METADATA, PICKLE_SUFFIXES, WEIGHTS,  # noqa: F401
                                 _bundle_dir, _inside, read_metadata, save_model, versions)

__all__ = ["save_model", "load_model", "read_metadata", "BUNDLE_VERSION", "versions", "LOADERS"]


def load_model(directory, device: str | None = None):
    """Load a model bundle written by :meth:`pixlab.Model.save` (or any format in :data:`LOADERS`).

    Parameters
    ----------
    directory : str or PathLike
        The bundle folder, a bioimage.io package (``.zip`` or folder), or a folder written by
        ``OnnxModel.save``.
    device : str, optional
        Where to put the network ('cpu', 'cuda', ...); default CPU.

    Returns
    -------
    pixlab.Model
    """
    for _, accepts, load in LOADERS:
        if accepts(directory):
            model = load(directory)
            return model.to(device) if device else model
    raise AssertionError("the pixlab bundle loader accepts every path")  # pragma: no cover


def _is_bioimageio(directory) -> bool:
    from pixlab.model.bioimageio_import import is_bioimageio
    return is_bioimageio(directory)


def _load_bioimageio(directory):
    from pixlab.model.bioimageio_import import load_bioimageio
    return load_bioimageio(directory)


def _is_onnx_import(directory) -> bool:
    d = Path(directory)
    return d.is_dir() and not (d / METADATA).is_file() and (d / "onnx_model.json").is_file()


def _load_onnx_import(directory):
    from pixlab.model.onnx_import import import_onnx
    return import_onnx(Path(directory))


def _load_pixlab(directory):
    """A folder written by :func:`save_model`; every check on the path and its files is here."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from pixlab.model.model import Model
    from pixlab.nn.networks import build_network
    from pixlab.training.config import TrainConfig

    d = _bundle_dir(directory)
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
    return Model(net, meta["class_names"], meta["colours"], meta["channel_names"], meta["normalization"],
                 cfg, meta.get("history", []), extra)


#: What :func:`load_model` reads, tried in order: ``(name, accepts(path) -> bool, load(path) -> Model)``.
#: The pixlab bundle comes last and accepts everything, so its messages (pickle files, missing
#: metadata, damaged weights) are the ones a wrong path gets.
LOADERS = [
    ("bioimageio", _is_bioimageio, _load_bioimageio),   # a bioimage.io package (.zip or folder)
    ("onnx-import", _is_onnx_import, _load_onnx_import),  # an external ONNX model saved by OnnxModel.save
    ("pixlab", lambda directory: True, _load_pixlab),
]
