"""Bring externally trained ONNX segmentation models into pixlab.

:func:`import_onnx` wraps an ONNX file (any framework's export) as a :class:`pixlab.Model`, so
``model.predict``, ``pixlab.predict_file`` and :mod:`pixlab.analysis.diagnostics` use it exactly like a model
trained here: the same tiling, blending, channel matching and normalisation. What pixlab cannot read
from the file is declared: class names, input channels, tile size and normalisation. The ONNX graph
is run by onnxruntime; ``model.network`` is a small ``torch.nn.Module`` around the session so that
everything calling the network keeps working.

QuPath GeoJSON import/export lives in :mod:`pixlab.labels.masks` (``geojson_to_labels`` /
``labels_to_geojson``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pixlab.model.model import Model
from pixlab.model.onnx_network import FLOAT_TYPES, OnnxNetwork, OrtBackend, onnx_session

__all__ = ["OnnxModel", "OnnxNetwork", "import_onnx", "ONNX_FORMAT"]

#: ``format`` of the JSON file that :meth:`OnnxModel.save` writes next to the ONNX file.
ONNX_FORMAT = "pixlab-onnx-import"
_SETTINGS = "onnx_model.json"
_ONNX_FILE = "model.onnx"
_OUTPUTS = ("logits", "probabilities")


class OnnxModel(Model):
    """A :class:`pixlab.Model` whose network is an imported ONNX graph (see :func:`import_onnx`).

    It predicts like any pixlab model. It cannot be trained further, and :meth:`save` writes the
    ONNX file plus its declared settings (read back by :func:`import_onnx`), not a pixlab bundle.
    """

    #: Imported graphs declare their own input shapes (checked in :meth:`OnnxNetwork.forward`).
    tile_multiple = 1

    @property
    def settings(self) -> dict:
        """The declared settings (class names, channels, tile size, normalisation, ...)."""
        return dict(self.metadata["onnx"])

    def __repr__(self) -> str:
        return (f"OnnxModel('{self.network.path}', classes={self.class_names}, channels={self.channel_names}, "
                f"tile_size={self.inference_tile_size})")

    def summary(self) -> dict:
        """A short description for reports and notebooks."""
        return {"architecture": "onnx", "encoder": None, "onnx": self.network.path,
                "classes": self.class_names, "channels": self.channel_names, "epochs_trained": 0,
                "best_epoch": None, "recipe": None}

    def backend(self, name: str = "eager"):
        """Inference backend (see :meth:`pixlab.Model.backend`): the graph already runs in ONNX
        Runtime, so ``"onnxruntime"`` is this model's own ``infer_batch`` under that name."""
        if name == "eager":
            return self
        if name != "onnxruntime":
            raise ValueError(f"backend must be 'eager' or 'onnxruntime', got {name!r}")
        return OrtBackend(self.network, self.infer_batch)

    def export_onnx(self, path, **kwargs) -> str:
        """Write the imported ONNX graph to ``path`` (a copy of the file: it is ONNX already, so the
        export options of :func:`pixlab.model.onnx.export_onnx` do not apply and are ignored)."""
        from pixlab._atomic import atomic_write

        with atomic_write(path) as f:
            f.write(Path(self.network.path).read_bytes())
        return str(path)

    def copy(self) -> "OnnxModel":
        """A copy sharing the (read-only) ONNX Runtime session."""
        import copy

        return OnnxModel(copy.deepcopy(self.network), self.class_names, self.colours, self.channel_names,
                         copy.deepcopy(self.norm_stats), self.config, [], copy.deepcopy(self.metadata))

    def save(self, directory, overwrite: bool = False) -> None:
        """Write ``model.onnx`` and ``onnx_model.json`` into ``directory`` (replaced atomically).

        Parameters
        ----------
        directory : str or PathLike
            Folder to write; reload it with ``import_onnx(directory)``.
        overwrite : bool
            Replace an existing folder; otherwise it raises FileExistsError.
        """
        from pixlab._atomic import atomic_dir
        from pixlab.model.folder import check_new_folder

        check_new_folder(directory, overwrite)

        source = Path(self.network.path)
        if not source.is_file():
            raise FileNotFoundError(
                f"the ONNX file '{source}' this model was imported from no longer exists; "
                "import it again from an existing file before saving"
            )
        settings = {"format": ONNX_FORMAT, "version": 1, "onnx": _ONNX_FILE, **self.settings,
                    "class_names": self.class_names, "colours": self.colours}
        with atomic_dir(directory) as tmp:
            shutil.copyfile(source, Path(tmp) / _ONNX_FILE)
            (Path(tmp) / _SETTINGS).write_text(json.dumps(settings, indent=2), encoding="utf-8")


def _norm_stats(normalization, n_channels: int, per_channel: bool, fixed_range) -> tuple[dict, bool]:
    """(stats dict in pixlab.image.normalize's format, whether the stats are fixed) for a declaration."""
    from pixlab.image.normalize import METHODS, compute_stats, parse_method

    if normalization is None:  # the graph normalises its raw input itself: identity
        return {"method": "z_score", "per_channel": True, "offset": [0.0] * n_channels,
                "scale": [1.0] * n_channels, "clip": None}, True
    if isinstance(normalization, dict):
        if {"mean", "std"} <= set(normalization):
            stats = {"method": "z_score", "per_channel": True, "clip": None,
                     "offset": normalization["mean"], "scale": normalization["std"]}
        elif {"offset", "scale"} <= set(normalization):
            stats = {"method": "z_score", "per_channel": True, "clip": None, **normalization}
        else:
            raise ValueError(
                f"normalization dict has keys {sorted(normalization)}; give {{'mean': [...], 'std': [...]}} "
                "(one value per channel, in the image's intensity units) or a pixlab stats dict "
                "(e.g. model.norm_stats)"
            )
        values = []
        for key in ("offset", "scale"):
            v = np.asarray(stats[key], np.float64).ravel()
            values.append(np.repeat(v, n_channels) if v.size == 1 else v)
        offset, scale = values
        if offset.shape != (n_channels,) or scale.shape != (n_channels,):
            raise ValueError(
                f"normalization has {offset.size} mean/offset and {scale.size} std/scale value(s) but the "
                f"model takes {n_channels} channel(s); give one value per channel (or one for all)"
            )
        if not (np.isfinite(offset).all() and np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError(f"normalization needs finite means/offsets and positive std/scales, got {normalization!r}")
        return {**stats, "offset": offset.tolist(), "scale": scale.tolist()}, True
    if not isinstance(normalization, str) or normalization.lower() not in METHODS:
        raise ValueError(
            f"normalization={normalization!r} is not valid; use one of {METHODS} (statistics of each "
            "image), a dict {'mean': [...], 'std': [...]}, a pixlab stats dict, or None (the graph "
            "normalises)"
        )
    method = parse_method(normalization).value
    if method == "fixed_range":
        # The same for every image: computed once (compute_stats reads no pixel for fixed ranges).
        return compute_stats(np.zeros((n_channels, 1, 1), np.float32), method, per_channel=per_channel,
                             fixed_range=fixed_range), True
    # Per-image statistics: pixlab computes them on each image at prediction time.
    return {"method": method, "per_channel": bool(per_channel), "offset": [0.0] * n_channels,
            "scale": [1.0] * n_channels, "clip": None}, False


def _dims(shape) -> list:
    """ONNX dims as ints where static, None where symbolic/unknown."""
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


def import_onnx(path, class_names: Sequence[str] | None = None, *, in_channels: int | None = None,
                channel_names: Sequence[str] | None = None, tile_size: int | None = None,
                normalization="percentile_99", per_channel: bool = True, fixed_range=None,
                outputs: str = "logits", colours=None, overlap: float = 0.25, downsample: float = 1.0,
                providers=None) -> OnnxModel:
    """Wrap an external ONNX segmentation model as a pixlab model.

    The graph must take one ``(B, C, H, W)`` float input and give ``(B, K, H, W)`` per-pixel class
    scores as its first output (class ``k`` in channel ``k - 1``). It is checked once at import by
    running one blank tile, so a mismatch is reported here rather than during prediction.

    Parameters
    ----------
    path : path-like
        An ``.onnx`` file, or a folder written by :meth:`OnnxModel.save` (then the other arguments
        are read from it and must be left out).
    class_names : sequence of str
        Names of output channels 1..K, in order.
    in_channels : int, optional
        Number of input channels; default ``len(channel_names)``, or the ONNX input's static
        channel dimension. A declared count that differs from a static ONNX one is an error.
    channel_names : sequence of str, optional
        Input channel names (images with more channels are matched by name); default
        "Channel 1", ...
    tile_size : int, optional
        Tile side in pixels. Required unless the ONNX input has a fixed height and width (then it
        must equal them).
    normalization : str, dict or None
        How image intensities become network inputs: a method name (``"percentile_99"``,
        ``"min_max"``, ``"z_score"``: statistics of each image; ``"fixed_range"`` with
        ``fixed_range=(lo, hi)``), ``{"mean": [...], "std": [...]}`` in image units (e.g. ImageNet
        statistics times 255 for 8-bit RGB), a pixlab stats dict (``model.norm_stats``), or None
        when the graph normalises its raw input itself.
    per_channel : bool
        Per-channel statistics for the per-image methods.
    fixed_range : (float, float) or list of them, optional
        For ``normalization="fixed_range"``.
    outputs : {"logits", "probabilities"}
        What the ONNX output holds (probabilities: e.g. a graph ending in softmax).
    colours : list of [r, g, b], optional
        Display colours per class.
    overlap : float
        Tile overlap fraction for prediction.
    downsample : float
        Resolution the model was trained at (2 = half resolution); predictions are returned at
        full resolution.
    providers : list of str, optional
        onnxruntime execution providers; default ``["CPUExecutionProvider"]``.

    Returns
    -------
    OnnxModel
        Usable with ``model.predict``, ``model.predict_labels``, ``pixlab.predict_file`` and
        ``pixlab.analysis.diagnostics.evaluate``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Not an ONNX file; input/output shapes that do not match the declared channels, classes or
        tile size; invalid normalisation.

    Examples
    --------
    >>> model = import_onnx("unet.onnx", ["background", "nuclei"], in_channels=2,
    ...                     tile_size=256, normalization="percentile_99")     # doctest: +SKIP
    >>> probs = model.predict(image)                                         # doctest: +SKIP
    """
    from pixlab.training.config import TrainConfig
    from pixlab.labels.masks import default_colours

    path = Path(path)
    if path.is_dir():
        return _load_saved(path, class_names, in_channels, channel_names, tile_size, colours, providers)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file '{path}' does not exist; check the path (export with torch.onnx.export)")
    if class_names is None or isinstance(class_names, str) or len(list(class_names)) < 1:
        raise ValueError(f"class_names={class_names!r} must list the names of the model's output channels, "
                         "e.g. ['background', 'nuclei']")
    class_names = [str(c) for c in class_names]
    if outputs not in _OUTPUTS:
        raise ValueError(f"outputs={outputs!r} must be one of {_OUTPUTS}: what the ONNX output holds")

    session = onnx_session(path, providers)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"the ONNX model '{path}' has {len(inputs)} inputs {[i.name for i in inputs]}; "
                         "pixlab needs one (B, C, H, W) image input")
    inp = inputs[0]
    if len(inp.shape) != 4 or inp.type not in FLOAT_TYPES:
        raise ValueError(f"the ONNX model '{path}' input '{inp.name}' is {inp.type} of shape {inp.shape}; "
                         "pixlab needs a float (B, C, H, W) image input")
    _, onnx_c, onnx_h, onnx_w = _dims(inp.shape)

    if channel_names is not None:
        channel_names = [str(c) for c in channel_names]
        if in_channels is not None and in_channels != len(channel_names):
            raise ValueError(f"in_channels={in_channels} but {len(channel_names)} channel_names were given "
                             f"{channel_names}; give one name per input channel")
        in_channels = len(channel_names)
    if in_channels is None:
        if onnx_c is None:
            raise ValueError(f"the ONNX model '{path}' does not fix its number of input channels; "
                             "declare in_channels=... (or channel_names=[...])")
        in_channels = onnx_c
    if isinstance(in_channels, bool) or not isinstance(in_channels, (int, np.integer)) or in_channels < 1:
        raise ValueError(f"in_channels={in_channels!r} must be a positive whole number")
    if onnx_c is not None and onnx_c != in_channels:
        raise ValueError(
            f"the ONNX model '{path}' input '{inp.name}' has shape {inp.shape} ({onnx_c} channel(s)) but "
            f"{in_channels} channel(s) were declared; declare in_channels={onnx_c} (and select those "
            "channels of your images) or use an ONNX model exported for "
            f"{in_channels} channel(s)"
        )
    if channel_names is None:
        channel_names = [f"Channel {i + 1}" for i in range(int(in_channels))]

    if onnx_h is not None or onnx_w is not None:
        if onnx_h != onnx_w:
            raise ValueError(f"the ONNX model '{path}' input has shape {inp.shape}; pixlab needs square tiles "
                             "(equal or dynamic height and width)")
        if tile_size is not None and tile_size != onnx_h:
            raise ValueError(f"tile_size={tile_size} but the ONNX model '{path}' input is fixed at "
                             f"{onnx_h} x {onnx_w} px; pass tile_size={onnx_h} or leave it out")
        tile_size = onnx_h
    if tile_size is None:
        raise ValueError(f"the ONNX model '{path}' accepts any tile size; declare tile_size=... (e.g. the "
                         "size it was trained at, such as 256 or 512)")
    if isinstance(tile_size, bool) or not isinstance(tile_size, (int, np.integer)) or tile_size < 16:
        raise ValueError(f"tile_size={tile_size!r} must be a whole number of pixels >= 16")
    tile_size = int(tile_size)

    stats, fixed_stats = _norm_stats(normalization, int(in_channels), per_channel, fixed_range)
    network = OnnxNetwork(session, outputs, str(path.resolve()))
    _probe(network, int(in_channels), len(class_names), tile_size, path)

    # TrainConfig holds what prediction reads (overlap, downsample, normalisation). Its tile_size
    # must be a multiple of 32, so the exact inference tile size lives in the metadata.
    cfg_range = None
    if stats["method"] == "fixed_range":  # TrainConfig keeps one [min, max] pair
        cfg_range = [min(stats["offset"]), max(o + w for o, w in zip(stats["offset"], stats["scale"]))]
    cfg = TrainConfig(pretrained=False, recipe="standard", device="cpu",
                      tile_size=max(32, tile_size // 32 * 32), tile_overlap=overlap, downsample=downsample,
                      normalization=stats["method"], per_channel=bool(stats["per_channel"]),
                      fixed_range=cfg_range, use_training_stats=fixed_stats, amp=False)
    colours = colours or default_colours(len(class_names))
    settings = {"class_names": class_names, "channel_names": channel_names, "tile_size": tile_size,
                "normalization": stats, "use_training_stats": fixed_stats, "outputs": outputs,
                "overlap": float(overlap), "downsample": float(downsample),
                "colours": [list(map(int, c)) for c in colours]}
    return OnnxModel(network, class_names, colours, channel_names, stats, cfg, [],
                     {"source": "onnx", "onnx": settings, "inference_tile_size": tile_size})


def _probe(network: OnnxNetwork, in_channels: int, n_classes: int, tile: int, path: Path) -> None:
    """Run one blank tile: the output must be (1, n_classes, tile, tile)."""
    try:
        out = network(torch.zeros(1, in_channels, tile, tile))
    except ValueError:
        raise
    except Exception as error:  # onnxruntime's own exception types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"the ONNX model '{path}' fails on a (1, {in_channels}, {tile}, {tile}) input "
                         f"({first}); check in_channels and tile_size") from None
    if tuple(out.shape) != (1, n_classes, tile, tile):
        raise ValueError(
            f"the ONNX model '{path}' gives an output of shape {tuple(out.shape)} for a "
            f"(1, {in_channels}, {tile}, {tile}) input; pixlab needs (1, {n_classes}, {tile}, {tile}): "
            f"one channel per class ({n_classes} class names given) at full tile resolution"
        )


def _load_saved(folder: Path, class_names, in_channels, channel_names, tile_size, colours, providers):
    settings_path = folder / _SETTINGS
    if not settings_path.is_file():
        raise FileNotFoundError(f"folder '{folder}' has no {_SETTINGS}; pass an .onnx file, or a folder "
                                "written by OnnxModel.save()")
    given = {"class_names": class_names, "in_channels": in_channels, "channel_names": channel_names,
             "tile_size": tile_size, "colours": colours}
    extra = sorted(k for k, v in given.items() if v is not None)
    if extra:
        raise ValueError(f"'{folder}' is a saved ONNX model whose settings are stored with it; leave out {extra}")
    try:
        s = json.loads(settings_path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"'{settings_path}' is not valid JSON ({error}); save the model again") from None
    if not isinstance(s, dict) or s.get("format") != ONNX_FORMAT:
        raise ValueError(f"'{settings_path}' is not a pixlab ONNX import (no format: {ONNX_FORMAT})")
    if int(s.get("version", 0)) > 1:
        raise ValueError(f"'{settings_path}' was written by a newer pixlab (version {s['version']}); upgrade pixlab")
    onnx_file = (folder / s["onnx"]).resolve()
    if onnx_file.parent != folder.resolve():
        raise ValueError(f"'{settings_path}' names an ONNX file outside its folder; refusing to follow it")
    return import_onnx(onnx_file, s["class_names"], channel_names=s["channel_names"], tile_size=s["tile_size"],
                       normalization=s["normalization"] if s["use_training_stats"] else s["normalization"]["method"],
                       per_channel=s["normalization"]["per_channel"], outputs=s["outputs"], colours=s["colours"],
                       overlap=s["overlap"], downsample=s["downsample"], providers=providers)
