"""Export to the QuPath deep-learning pixel classifier extension (uw-loci/qupath-extension-dl-pixel-classifier).

The extension lists every folder of ``{project}/classifiers/dl/`` (and ``~/.qupath/classifiers/dl/``)
that holds a ``metadata.json``, and runs ``model.onnx`` (preferred over ``model.pt``) through ONNX
Runtime on raw-intensity tiles that its Python side normalises first. This module writes such a
folder:

- ``model.onnx``: ``model.network`` (opset 14, dynamic batch/height/width), logits out (the
  extension applies the softmax);
- ``metadata.json``: the keys the extension reads, with the types it reads them as (checked against
  its ``ModelManager.loadMetadata`` and ``utils/normalization.py``; listed in docs/interop.md and
  tested field by field in tests/test_export_qupath.py).

Normalisation is mapped so that the extension computes pixlab's numbers, not approximately:

=====================================  =======================================================
pixlab                                  extension (``normalization_strategy`` + stats)
=====================================  =======================================================
training stats, clipped to [0, 1]       ``PERCENTILE_99`` with ``p1 = offset``, ``p99 = offset + scale``
(percentile_99, min_max, fixed_range)   per channel: ``clip(x, p1, p99)`` then ``(x - p1) / (p99 - p1)``
training stats, z-score                 ``MIN_MAX`` with ``min = mean``, ``max = mean + std``:
                                        ``(x - min) / (max - min)``, unclipped, = ``(x - mean) / std``
per-image percentile_99 / min_max       ``PERCENTILE_99`` / ``MIN_MAX`` without stats: the extension
                                        samples each image (its "image-level statistics")
per-image z-score                       ``Z_SCORE``: the extension gives ``(clip(z, -5, 5) + 5) / 10``;
                                        the exported graph starts with ``10 y - 5`` to undo the
                                        rescaling (z-scores beyond ±5 are clipped)
=====================================  =======================================================

``normalization_stats`` also carries the training images' real mean/std (and p1/p99 when they are
not the normalisation bounds) for the extension's out-of-distribution check.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from pathlib import Path

import numpy as np

from pixlab._atomic import atomic_dir
from pixlab.model.export._common import ExportError, log_choice, pixel_size_um, torch_network

__all__ = ["export_qupath", "qupath_metadata", "qupath_target", "OPSET", "STRATEGIES"]

#: ONNX opset of model.onnx (what the extension's own training service exports).
OPSET = 14

#: The extension's ChannelConfiguration.NormalizationStrategy names.
STRATEGIES = ("MIN_MAX", "PERCENTILE_99", "Z_SCORE", "FIXED_RANGE")

def _zscore_input(network):
    """``network(10 * y - 5)``: undoes the extension's per-image z-score rescaling ``(z + 5) / 10``."""
    import torch

    class ZScoreInput(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, y):
            return self.net(y * 10.0 - 5.0)

    return ZScoreInput(network).eval()


def _hex(colour) -> str:
    r, g, b = (int(v) for v in colour[:3])
    return f"#{r:02X}{g:02X}{b:02X}"


def _bit_depth(model) -> int:
    s = model.norm_stats
    top = max(o + w for o, w in zip(s["offset"], s["scale"]))
    intensity = model.metadata.get("intensity_stats") or {}
    if intensity.get("p99"):
        top = max(top, max(intensity["p99"]))
    return 8 if top <= 255 else 16 if top <= 65535 else 32


def _strategy_and_stats(model):
    """(strategy, per-channel stats or None, whether the graph needs the z-score fix)."""
    stats = model.norm_stats
    method = stats["method"]
    per_image = not model.config.use_training_stats and method != "fixed_range"
    intensity = model.metadata.get("intensity_stats") or {}
    n = model.in_channels

    def real(key, c, fallback):
        values = intensity.get(key)
        return float(values[c]) if values and len(values) == n else float(fallback)

    if per_image:
        if method == "z_score":
            return "Z_SCORE", None, True
        return ("PERCENTILE_99" if method == "percentile_99" else "MIN_MAX"), None, False
    rows = []
    for c, (o, w) in enumerate(zip(stats["offset"], stats["scale"])):
        lo, hi = float(o), float(o) + float(w)
        if stats.get("clip") is None:  # z-score: MIN_MAX reproduces (x - mean) / std exactly
            rows.append({"p1": real("p1", c, lo), "p99": real("p99", c, hi), "min": lo, "max": hi,
                         "mean": real("mean", c, lo), "std": real("std", c, w)})
        else:  # clipped to [0, 1]: PERCENTILE_99 clips to [p1, p99] then scales
            rows.append({"p1": lo, "p99": hi, "min": lo, "max": hi,
                         "mean": real("mean", c, (lo + hi) / 2), "std": real("std", c, w / 4)})
    return ("MIN_MAX" if stats.get("clip") is None else "PERCENTILE_99"), rows, False


def qupath_metadata(model, classifier_id: str, name: str | None = None, description: str | None = None) -> dict:
    """The metadata.json content for ``model`` (see the module notes and docs/interop.md)."""
    cfg = model.config
    strategy, rows, _ = _strategy_and_stats(model)
    tile = int(model.inference_tile_size)
    hist = model.history[-1] if model.history else {}
    per_channel = True if rows is not None else bool(model.norm_stats.get("per_channel", True))
    norm_block = {"strategy": strategy.lower(), "per_channel": per_channel, "clip_percentile": 99.0}
    input_norm = dict(norm_block)
    if rows is not None:
        input_norm.update(precomputed=True, channel_stats=rows)
    arch_type = cfg.architecture if cfg.architecture != "tiny_unet" else "tiny_unet"
    meta = {
        "version": 1,
        "id": classifier_id,
        "name": name or f"pixlab {arch_type} ({', '.join(model.class_names)})",
        "description": description or (
            f"Exported from pixlab: {arch_type}"
            + ("" if cfg.architecture == "tiny_unet" else f"/{cfg.encoder}")
            + f", {model.in_channels} channel(s) {model.channel_names}, normalisation {model.norm_stats['method']}"
            + (" (training statistics)" if cfg.use_training_stats else " (per image)")),
        "createdAt": datetime.datetime.now().replace(microsecond=0).isoformat(),
        "architecture": {
            "type": arch_type,
            "backbone": "" if cfg.architecture == "tiny_unet" else str(cfg.encoder),
            "input_width": tile, "input_height": tile,
            "input_channels": int(model.in_channels), "effective_input_channels": int(model.in_channels),
            "downsample": float(cfg.downsample), "context_scale": 1,
        },
        "channel_config": {
            "expected_channels": list(model.channel_names),
            "normalization_strategy": strategy,
            "bit_depth_trained": _bit_depth(model),
            "normalization": dict(norm_block, strategy=strategy),
        },
        "input_config": {"num_channels": int(model.in_channels), "normalization": input_norm},
        "classes": [{"index": i, "name": n, "color": _hex(c)}
                    for i, (n, c) in enumerate(zip(model.class_names, model.colours))],
        "training": {"epochs": len(model.history),
                     "final_loss": float(hist.get("val_loss", hist.get("train_loss", 0.0)) or 0.0),
                     "final_accuracy": float(hist.get("val_miou", 0.0) or 0.0)},
        "training_tile_size_px": int(cfg.tile_size),
    }
    if rows is not None:
        meta["normalization_stats"] = rows
    ps = pixel_size_um(model)
    if ps is not None:
        meta["training_pixel_size_um"] = float(np.mean(ps))
    meta = json.loads(json.dumps(meta))  # only JSON types from here on (floats stay floats)
    for row in meta.get("normalization_stats", []):
        for k in row:
            row[k] = float(row[k])
    return meta


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "pixlab_model"


def qupath_target(out, model, name=None, announce=False) -> Path:
    """The classifier folder written for ``out``: ``out`` itself, or for a QuPath project folder
    (holding ``project.qpproj``) ``out/classifiers/dl/<name>``."""
    out = Path(out)
    if (out / "project.qpproj").is_file():
        target = out / "classifiers" / "dl" / _safe_id(name or f"pixlab_{model.config.architecture}")
        if announce:
            log_choice(f"'{out}' is a QuPath project: writing the classifier to '{target}'")
        return target
    return out


def export_qupath(model, out, *, name: str | None = None, description: str | None = None) -> str:
    """Write the folder the QuPath DL pixel classifier extension loads.

    Parameters
    ----------
    model : pixlab.Model
    out : str or PathLike
        The classifier folder to write (its name becomes the classifier id), e.g.
        ``{project}/classifiers/dl/nuclei``; or a QuPath project folder (one holding
        ``project.qpproj``), then ``classifiers/dl/<name>/`` inside it is written (printed).
        Replaced atomically.
    name : str, optional
        Display name in QuPath (default from the architecture and classes).
    description : str, optional

    Returns
    -------
    str
        The classifier folder written.

    Raises
    ------
    ExportError
        The network cannot be exported to ONNX (the message names what works).
    """
    from pixlab.model.onnx import onnx_bytes

    out = qupath_target(out, model, name, announce=True)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"'{out}' is a file; the QuPath classifier is a folder, give a folder name")
    classifier_id = _safe_id(out.name)
    if classifier_id != out.name:
        raise ValueError(f"folder name '{out.name}' is not usable as a QuPath classifier id (letters, digits, "
                         f"'.', '_' and '-' only); use e.g. '{classifier_id}'")
    _, _, zfix = _strategy_and_stats(model)
    if type(model.network).__name__ == "OnnxNetwork":
        if zfix:
            raise ExportError("this imported ONNX model normalises each image with z-scores, which the QuPath "
                              "extension rescales; it cannot be exported to QuPath unchanged (export a pixlab-"
                              "trained model, or use --format onnx)")
        data = Path(model.network.path).read_bytes()
    else:
        net = torch_network(model, "a QuPath ONNX classifier")
        if zfix:
            net = _zscore_input(net)
        try:
            data = onnx_bytes(net, in_channels=model.in_channels, opset=OPSET)
        except Exception as e:  # the exporter raises many types
            raise ExportError(f"the {type(model.network).__name__} network cannot be exported to ONNX "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); no QuPath "
                              "export is possible, use --format torchscript") from None
    meta = qupath_metadata(model, classifier_id, name, description)
    with atomic_dir(out) as tmp:
        (Path(tmp) / "model.onnx").write_bytes(data)
        (Path(tmp) / "metadata.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return os.fspath(out)

