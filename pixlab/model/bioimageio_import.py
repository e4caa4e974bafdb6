"""Run bioimage.io model packages (format 0.5, ONNX or TorchScript weights) as pixlab models.

:func:`load_bioimageio` reads a package (``.zip`` or folder with ``rdf.yaml`` / ``bioimageio.yaml``)
and returns a :class:`BioimageioModel`, which predicts like a model trained here: ``model.predict``,
``pixlab.predict_file`` (streaming whole slides, blending tiles), the notebooks and diagnostics.

How the description maps onto pixlab:

- one 2D input ``(batch?, channel, y, x)`` and one output of class scores with the same y/x size;
  the output channel names become the class names, the input channel names the channel names;
- the tile size is a valid input size (``min + n * step``; default the smallest >= 256 px) and the
  tile overlap covers twice the output halo;
- preprocessing: the data-dependent first step becomes pixlab's per-image normalisation
  (``zero_mean_unit_variance`` -> z-score; ``scale_range`` 1-99 % -> percentile_99 and 0-100 % ->
  min_max, both clipped to [0, 1] by pixlab), so statistics come from the whole image, not each tile;
  the fixed steps (``scale_linear``, ``fixed_zero_mean_unit_variance``, ``clip``, ``ensure_dtype``)
  run in the network wrapper exactly as written;
- postprocessing ``softmax`` over channels is pixlab's own softmax; ``sigmoid`` outputs are read as
  probabilities (one channel becomes background / foreground);
- weights: ONNX (ONNX Runtime) first, then TorchScript (``torch.jit.load``). ``pytorch_state_dict``
  is refused: it needs the package's Python code (or a library) to build the network, which pixlab
  does not run from a downloaded file.

Anything else (3D, time, several inputs, other operations) is refused with a message saying what
is supported.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

from pixlab.model.bioimageio_network import OnnxRunner, TorchscriptRunner, make_network
from pixlab.model.model import Model

__all__ = ["BioimageioModel", "load_bioimageio", "is_bioimageio", "SETTINGS"]

_RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
#: File written next to the package by :meth:`BioimageioModel.save`.
SETTINGS = "bioimageio_model.json"
_PACKAGE = "package.zip"
_FIXED_OPS = ("scale_linear", "fixed_zero_mean_unit_variance", "clip", "ensure_dtype")
_DEFAULT_TILE = 256


class _Package:
    """Files of a package, from a zip or a folder (never extracted; paths cannot leave it)."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise ValueError(f"'{path}' is not a zip file; a bioimage.io package is a .zip or a folder "
                                 "with rdf.yaml")
            with zipfile.ZipFile(path) as z:
                self.names = set(z.namelist())
        elif path.is_dir():
            self.names = {p.name for p in path.iterdir() if p.is_file()}
        else:
            raise FileNotFoundError(f"bioimage.io package '{path}' does not exist")
        self.rdf_name = next((n for n in _RDF_NAMES if n in self.names), None)
        if self.rdf_name is None:
            raise ValueError(f"'{path}' has no rdf.yaml or bioimageio.yaml; it is not a bioimage.io package")

    def read(self, name: str) -> bytes:
        name = str(name)
        if "/" in name.strip("./") or "\\" in name or name.startswith("..") or "://" in name:
            raise ValueError(f"package file {name!r} is not a plain file name inside the package; pixlab "
                             "reads only files stored in the package (no URLs, no paths outside it)")
        if name not in self.names:
            raise ValueError(f"package '{self.path}' names file {name!r} but does not contain it")
        if self.path.is_file():
            with zipfile.ZipFile(self.path) as z:
                return z.read(name)
        return (self.path / name).read_bytes()


def is_bioimageio(path) -> bool:
    """True for a bioimage.io package (zip or folder) or a folder saved by :meth:`BioimageioModel.save`."""
    p = Path(path)
    if p.is_dir():
        return (p / SETTINGS).is_file() or any((p / n).is_file() for n in _RDF_NAMES)
    return p.is_file() and p.suffix.lower() == ".zip" and zipfile.is_zipfile(p) and any(
        n in zipfile.ZipFile(p).namelist() for n in _RDF_NAMES)


def _yaml(data: bytes) -> dict:
    import yaml

    rdf = yaml.safe_load(data.decode("utf-8"))
    if not isinstance(rdf, dict):
        raise ValueError("rdf.yaml does not hold a mapping; the package is damaged")
    return rdf


def _axes(tensor: dict, what: str) -> dict:
    axes = tensor.get("axes")
    if not isinstance(axes, list):
        raise ValueError(f"the {what} tensor has no axes list; only format 0.5 packages are read (update "
                         "older ones with bioimageio.spec's update_format)")
    out = {}
    for i, ax in enumerate(axes):
        kind = ax.get("type")
        key = "batch" if kind == "batch" else "channel" if kind == "channel" else ax.get("id") if kind == "space" else kind
        if key not in ("batch", "channel", "y", "x"):
            raise ValueError(f"the {what} tensor has a {kind} axis {ax.get('id')!r}; pixlab runs 2D models "
                             "with (batch, channel, y, x) axes only")
        out[key] = (i, ax)
    missing = [k for k in ("channel", "y", "x") if k not in out]
    if missing:
        raise ValueError(f"the {what} tensor lacks axes {missing}; pixlab needs channel, y and x")
    return out


def _tile_size(size, tile_size):
    if isinstance(size, int):
        if tile_size is not None and tile_size != size:
            raise ValueError(f"tile_size={tile_size} but the package's input is fixed at {size} px")
        return size
    if isinstance(size, dict) and "min" in size and "step" in size:
        lo, step = int(size["min"]), int(size["step"])
        if tile_size is None:
            return lo + max(0, -(-(_DEFAULT_TILE - lo) // step)) * step
        if tile_size < lo or (tile_size - lo) % step:
            raise ValueError(f"tile_size={tile_size} is not a valid input size of this package "
                             f"({lo} + n * {step}); e.g. {lo + max(0, (tile_size - lo) // step) * step}")
        return int(tile_size)
    raise ValueError(f"input size {size!r} is not a fixed size or {{min, step}}; pixlab cannot tile it")


def _norm_from(steps: list, n_channels: int):
    """(pixlab stats, per-image?, remaining fixed ops)."""
    identity = {"method": "z_score", "per_channel": True, "offset": [0.0] * n_channels,
                "scale": [1.0] * n_channels, "clip": None}
    if not steps:
        return identity, False, []
    first = steps[0]
    op, kw = first.get("id"), first.get("kwargs") or {}
    rest = steps[1:]
    if op in _FIXED_OPS:
        rest, stats, per_image = steps, identity, False
    elif op == "zero_mean_unit_variance":
        stats = {**identity, "per_channel": "channel" not in (kw.get("axes") or ["channel"])}
        per_image = True
    elif op == "scale_range":
        if kw.get("reference_tensor"):
            raise ValueError("scale_range with a reference_tensor is not supported; pixlab normalises each "
                             "input image with its own statistics")
        pct = (float(kw.get("min_percentile", 0.0)), float(kw.get("max_percentile", 100.0)))
        methods = {(1.0, 99.0): "percentile_99", (0.0, 100.0): "min_max"}
        if pct not in methods:
            raise ValueError(f"scale_range percentiles {pct} are not supported; pixlab normalises each image "
                             "with the 1-99 % or 0-100 % range")
        stats = {"method": methods[pct], "per_channel": "channel" not in (kw.get("axes") or ["channel"]),
                 "offset": [0.0] * n_channels, "scale": [1.0] * n_channels, "clip": [0.0, 1.0]}
        per_image = True
    else:
        raise ValueError(f"preprocessing {op!r} is not supported; pixlab runs zero_mean_unit_variance, "
                         f"scale_range (1-99 % or 0-100 %) and the fixed operations {list(_FIXED_OPS)}")
    for step in rest:
        if step.get("id") not in _FIXED_OPS:
            raise ValueError(f"preprocessing {step.get('id')!r} after {op!r} is not supported; pixlab runs "
                             f"one per-image normalisation followed by {list(_FIXED_OPS)}")
    return stats, per_image, rest


def _output_kind(post: list, n_out: int):
    ops = [p.get("id") for p in post if p.get("id") != "ensure_dtype"]
    if ops == ["softmax"]:
        return "logits"
    if ops == ["sigmoid"]:
        return "sigmoid"
    if ops == []:
        return "logits"
    raise ValueError(f"postprocessing {ops} is not supported; pixlab reads class scores followed by "
                     "softmax or sigmoid")


class BioimageioModel(Model):
    """A :class:`pixlab.Model` running a bioimage.io package (see :func:`load_bioimageio`)."""

    #: The package declares its own input shapes.
    tile_multiple = 1

    @property
    def package(self) -> str:
        return self.metadata["bioimageio"]["package"]

    def __repr__(self) -> str:
        s = self.metadata["bioimageio"]
        return (f"BioimageioModel({s['name']!r}, weights={s['weights']}, classes={self.class_names}, "
                f"channels={self.channel_names}, tile_size={self.inference_tile_size})")

    def summary(self) -> dict:
        s = self.metadata["bioimageio"]
        return {"architecture": "bioimageio", "encoder": None, "package": s["package"], "weights": s["weights"],
                "classes": self.class_names, "channels": self.channel_names, "epochs_trained": 0,
                "best_epoch": None, "recipe": None}

    def copy(self) -> "BioimageioModel":
        import copy

        return BioimageioModel(copy.deepcopy(self.network), self.class_names, self.colours, self.channel_names,
                               copy.deepcopy(self.norm_stats), self.config, [], copy.deepcopy(self.metadata))

    def save(self, directory, overwrite: bool = False) -> None:
        """Copy the package into ``directory`` (with the chosen settings); ``pixlab.load_model`` reads it.

        An existing ``directory`` raises FileExistsError unless ``overwrite=True``."""
        from pixlab._atomic import atomic_dir
        from pixlab.model.folder import check_new_folder

        check_new_folder(directory, overwrite)

        src = Path(self.package)
        s = self.metadata["bioimageio"]
        settings = {"format": "pixlab-bioimageio", "version": 1, "package": _PACKAGE,
                    "weights": s["weights"], "tile_size": self.inference_tile_size, "colours": self.colours}
        with atomic_dir(directory) as tmp:
            if src.is_file():
                shutil.copyfile(src, Path(tmp) / _PACKAGE)
            else:
                with zipfile.ZipFile(Path(tmp) / _PACKAGE, "w", zipfile.ZIP_DEFLATED) as z:
                    for f in sorted(src.iterdir()):
                        if f.is_file():
                            z.write(f, f.name)
            (Path(tmp) / SETTINGS).write_text(json.dumps(settings, indent=2), encoding="utf-8")


def load_bioimageio(path, *, weights: str | None = None, tile_size: int | None = None, colours=None,
                    overlap: float | None = None) -> BioimageioModel:
    """Load a bioimage.io model package as a pixlab model.

    Parameters
    ----------
    path : str or PathLike
        A package ``.zip``, a folder with ``rdf.yaml``, or a folder written by
        :meth:`BioimageioModel.save`.
    weights : {"onnx", "torchscript"}, optional
        Which weights to run (default: ONNX when present, else TorchScript).
    tile_size : int, optional
        Tile side in pixels; a valid input size of the package (default: the smallest >= 256 px,
        or the pixlab tile size recorded in packages exported by pixlab).
    colours : list of [r, g, b], optional
        Class colours (default: those recorded by pixlab, else pixlab's defaults).
    overlap : float, optional
        Tile overlap fraction (default: enough to cover twice the output halo, at least 0.125).

    Returns
    -------
    BioimageioModel

    Examples
    --------
    >>> model = load_bioimageio("nuclei.zip")                             # doctest: +SKIP
    >>> pixlab.predict_file(model, "slide.ome.tif", "out.ome.tif")        # doctest: +SKIP
    """
    from pixlab.labels.masks import default_colours
    from pixlab.training.config import TrainConfig

    path = Path(path)
    if path.is_dir() and (path / SETTINGS).is_file():
        s = json.loads((path / SETTINGS).read_text(encoding="utf-8"))
        if s.get("format") != "pixlab-bioimageio":
            raise ValueError(f"'{path / SETTINGS}' is not a pixlab bioimage.io settings file")
        return load_bioimageio(path / s["package"], weights=weights or s.get("weights"),
                               tile_size=tile_size or s.get("tile_size"), colours=colours or s.get("colours"),
                               overlap=overlap)
    pkg = _Package(path)
    rdf = _yaml(pkg.read(pkg.rdf_name))
    if rdf.get("type") != "model":
        raise ValueError(f"'{path}' describes a {rdf.get('type')!r}, not a model")
    if not str(rdf.get("format_version", "")).startswith("0.5"):
        raise ValueError(f"'{path}' is format {rdf.get('format_version')}; pixlab reads format 0.5 packages "
                         "(convert with bioimageio.spec: update_format)")
    ins, outs = rdf.get("inputs") or [], rdf.get("outputs") or []
    if len(ins) != 1 or len(outs) != 1:
        raise ValueError(f"the package has {len(ins)} inputs and {len(outs)} outputs; pixlab runs models "
                         "with one image input and one class-score output")
    inp, out = ins[0], outs[0]
    in_axes, out_axes = _axes(inp, "input"), _axes(out, "output")
    ch_ax = in_axes["channel"][1]
    channel_names = [str(c) for c in ch_ax.get("channel_names") or []] or [
        f"Channel {i + 1}" for i in range(int(ch_ax.get("size", 1)))]
    n_ch = len(channel_names)
    out_ch = out_axes["channel"][1]
    n_out = len(out_ch.get("channel_names") or []) or int(out_ch.get("size", 0) or 0)
    if n_out < 1:
        raise ValueError("the output channel axis has no channel_names or size; pixlab needs one channel per class")
    class_names = [str(c) for c in out_ch.get("channel_names") or [f"class {i + 1}" for i in range(n_out)]]
    for a in ("y", "x"):
        size = out_axes[a][1].get("size")
        if not (isinstance(size, dict) and size.get("axis_id") == a and int(size.get("offset", 0)) == 0):
            raise ValueError(f"output axis {a} must have the input's size (a size reference without offset); "
                             f"got {size!r}")
    ys, xs = in_axes["y"][1].get("size"), in_axes["x"][1].get("size")
    if ys != xs:
        raise ValueError(f"input y size {ys} and x size {xs} differ; pixlab tiles square tiles")
    pixlab_cfg = (rdf.get("config") or {}).get("pixlab") or {}
    tile = _tile_size(ys, tile_size or (pixlab_cfg.get("tile_size") if isinstance(ys, dict) and _valid(ys, pixlab_cfg.get("tile_size")) else None))
    halo = int(out_axes["y"][1].get("halo", 0) or 0)
    if overlap is None:
        overlap = float(pixlab_cfg.get("tile_overlap", 0.0)) or 0.0
        overlap = min(0.5, max(overlap, 0.125, 2 * halo / tile))

    kind = _output_kind(out.get("postprocessing") or [], n_out)
    if kind == "sigmoid" and n_out == 1:
        class_names = ["background", class_names[0]]
    stats, per_image, fixed = _norm_from(inp.get("preprocessing") or [], n_ch)

    wdescr = rdf.get("weights") or {}
    order = [weights] if weights else [w for w in ("onnx", "torchscript") if w in wdescr]
    if weights and weights not in ("onnx", "torchscript"):
        raise ValueError(f"weights={weights!r}: pixlab runs 'onnx' or 'torchscript' weights")
    if not order or order[0] not in wdescr:
        raise ValueError(f"the package has weights {sorted(wdescr)}; pixlab runs ONNX or TorchScript weights "
                         "(pytorch_state_dict needs the package's own code, which pixlab does not execute)")
    chosen = order[0]
    data = pkg.read(wdescr[chosen]["source"])
    runner = (OnnxRunner if chosen == "onnx" else TorchscriptRunner)(data, str(path.resolve()))
    # Permutations between pixlab's (B, C, Y, X) and the package's axis order.
    names = [k for k, _ in sorted(in_axes.items(), key=lambda kv: kv[1][0])]
    if "batch" not in in_axes:
        raise ValueError("the input has no batch axis; pixlab feeds batches of tiles")
    input_order = [("batch", "channel", "y", "x").index(k) for k in names]
    onames = [k for k, _ in sorted(out_axes.items(), key=lambda kv: kv[1][0])]
    output_order = [onames.index(k) for k in ("batch", "channel", "y", "x")]
    network = make_network(runner, [(s["id"], s.get("kwargs") or {}) for s in fixed if s["id"] != "ensure_dtype"],
                            n_ch, kind, input_order, output_order)

    colours = colours or pixlab_cfg.get("colours") or default_colours(len(class_names))
    if len(colours) != len(class_names):
        colours = default_colours(len(class_names))
    cfg = TrainConfig(pretrained=False, recipe="standard", device="cpu", tile_size=max(32, tile // 32 * 32),
                      tile_overlap=float(overlap), normalization=stats["method"], per_channel=bool(stats["per_channel"]),
                      use_training_stats=not per_image, amp=False)
    scale = in_axes["y"][1].get("scale"), in_axes["x"][1].get("scale")
    meta = {"source": "bioimageio", "inference_tile_size": int(tile),
            "bioimageio": {"package": str(path.resolve()), "name": rdf.get("name"), "weights": chosen,
                           "halo": halo, "format_version": rdf.get("format_version")}}
    to_um = {"micrometer": 1.0, "nanometer": 1e-3, "angstrom": 1e-4, "picometer": 1e-6, "millimeter": 1e3}
    unit = in_axes["y"][1].get("unit")
    if unit in to_um and all(scale):
        meta["pixel_size_um"] = [float(scale[0]) * to_um[unit], float(scale[1]) * to_um[unit]]
    model = BioimageioModel(network, class_names, colours, channel_names, stats, cfg, [], meta)
    _probe(model, tile)
    return model


def _valid(size: dict, tile) -> bool:
    return isinstance(tile, int) and tile >= int(size["min"]) and (tile - int(size["min"])) % int(size["step"]) == 0


def _probe(model, tile: int) -> None:
    """One blank tile: the package must give (1, K, tile, tile)."""
    import torch

    try:
        out = model.network(torch.zeros(1, model.in_channels, tile, tile))
    except Exception as e:  # the runtime's own exception types
        raise ValueError(f"the package's {model.metadata['bioimageio']['weights']} weights fail on a "
                         f"(1, {model.in_channels}, {tile}, {tile}) tile ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if tuple(out.shape) != (1, model.n_classes, tile, tile):
        raise ValueError(f"the package gives {tuple(out.shape)} for a (1, {model.in_channels}, {tile}, {tile}) "
                         f"tile; pixlab needs (1, {model.n_classes}, {tile}, {tile})")
