"""The bioimage.io model description (``rdf.yaml``, format 0.5) of a pixlab model: preprocessing
(pixlab's normalisation), axes and sizes, authors, citations, model card."""

from __future__ import annotations

import datetime
import getpass

from pixlab.model.export._common import log_choice, pixel_size_um, training_pixel_size

__all__ = ["FORMAT_VERSION", "REPRODUCIBILITY_TOLERANCE", "DEFAULT_LICENSE", "preprocessing", "rdf_dict"]


#: Model description format written (a 0.5 release; bioimageio.spec 0.5.x reads it).
FORMAT_VERSION = "0.5.4"


#: How closely a consumer must reproduce the test output. pixlab's own normalisation and network
#: give it to ~1e-7; bioimage.io's default (1e-3) let a 5% wrong normalisation gain pass unnoticed.
REPRODUCIBILITY_TOLERANCE = {"relative_tolerance": 1e-4, "absolute_tolerance": 1e-5,
                             "mismatched_elements_per_million": 0}


#: Licence of the package unless the user names one (SPDX id; bioimage.io's recommendation).
DEFAULT_LICENSE = "CC-BY-4.0"


# smp class names per pixlab architecture key (for the pytorch_state_dict architecture).
_SMP_CLASSES = {"unet": "Unet", "unetplusplus": "UnetPlusPlus", "manet": "MAnet", "linknet": "Linknet",
                "fpn": "FPN", "pspnet": "PSPNet", "deeplabv3": "DeepLabV3", "deeplabv3plus": "DeepLabV3Plus",
                "upernet": "UPerNet", "segformer": "Segformer"}


_CITE_SMP = {"text": "Iakubovskii, P. Segmentation Models Pytorch (2019)",
             "url": "https://github.com/qubvel-org/segmentation_models.pytorch"}


_CITE_UNET = {"text": "Ronneberger, O., Fischer, P. & Brox, T. U-Net: Convolutional Networks for "
                      "Biomedical Image Segmentation. MICCAI (2015)",
              "doi": "10.1007/978-3-319-24574-4_28"}


def preprocessing(model) -> list[dict]:
    """bioimage.io preprocessing steps equal to pixlab's normalisation of this model's inputs.

    ``normalised = clip((x - offset) / scale)`` with the training statistics becomes
    ``scale_linear`` (gain ``1/scale``, offset ``-offset/scale``, per channel) then ``clip`` [0, 1];
    z-score statistics become ``fixed_zero_mean_unit_variance``. A model that normalises each image
    with its own statistics (``use_training_stats=False``) gets the per-image operations.

    Returns
    -------
    list of dict
        ``[{"id": ..., "kwargs": {...}}, ...]`` as written in rdf.yaml.
    """
    stats = model.norm_stats
    method = stats["method"]
    clip = stats.get("clip")
    per_image = not model.config.use_training_stats and method != "fixed_range"
    axes = ["y", "x"] if stats.get("per_channel", True) else ["channel", "y", "x"]
    steps: list[dict] = []
    if per_image:
        if method == "z_score":
            steps.append({"id": "zero_mean_unit_variance", "kwargs": {"axes": axes, "eps": 1e-6}})
        else:
            lo, hi = (1.0, 99.0) if method == "percentile_99" else (0.0, 100.0)
            steps.append({"id": "scale_range", "kwargs": {"axes": axes, "min_percentile": lo,
                                                          "max_percentile": hi, "eps": 1e-6}})
    else:
        offset = [float(v) for v in stats["offset"]]
        scale = [float(v) for v in stats["scale"]]
        if clip is None:
            steps.append({"id": "fixed_zero_mean_unit_variance",
                          "kwargs": {"axis": "channel", "mean": offset, "std": scale}})
        else:
            steps.append({"id": "scale_linear", "kwargs": {
                "axis": "channel", "gain": [1.0 / s for s in scale],
                "offset": [-o / s for o, s in zip(offset, scale)]}})
    if clip is not None:
        steps.append({"id": "clip", "kwargs": {"min": float(clip[0]), "max": float(clip[1])}})
    return steps


def _smp_architecture(model):
    """(bioimage.io architecture dict) for an smp network, or None when it cannot be described."""
    info = getattr(model.network, "pixlab_info", None) or {}
    arch = info.get("architecture") or model.config.architecture
    cls = _SMP_CLASSES.get(arch)
    if cls is None:
        return None
    return {"callable": cls, "import_from": "segmentation_models_pytorch",
            "kwargs": {"encoder_name": info.get("encoder") or model.config.encoder, "encoder_weights": None,
                       "in_channels": int(model.in_channels), "classes": int(model.n_classes)}}


def _authors(authors) -> list[dict]:
    if authors is None:
        try:
            name = getpass.getuser()
        except Exception:  # no login name (containers): still a valid package
            name = "unknown"
        log_choice(f"authors not given: using the login name {name!r} (pass authors=[...] / --author NAME)")
        return [{"name": name}]
    if isinstance(authors, (str, dict)):
        authors = [authors]
    out = []
    for a in authors:
        if isinstance(a, str):
            out.append({"name": a})
        elif isinstance(a, dict) and a.get("name"):
            out.append({k: v for k, v in a.items() if v is not None})
        else:
            raise ValueError(f"each author must be a name or a dict with 'name', got {a!r}")
    if not out:
        raise ValueError("authors is empty; give at least one name, e.g. authors=['Ada Lovelace']")
    return out


def _cite(model, cite) -> list[dict]:
    if cite is not None:
        if isinstance(cite, dict):
            cite = [cite]
        for c in cite:
            if not isinstance(c, dict) or not c.get("text") or not (c.get("doi") or c.get("url")):
                raise ValueError(f"each citation needs 'text' and a 'doi' or 'url', got {c!r}")
        return list(cite)
    if model.config.architecture == "tiny_unet":
        return [_CITE_UNET]
    return [_CITE_SMP]


def _model_card(model, name, description, halo, pre, formats, ps) -> str:
    cfg = model.config
    best = model.metadata.get("best_epoch")
    hist = model.history[-1] if model.history else {}
    lines = [
        f"# {name}", "", description, "",
        "Exported from [pixlab](https://github.com/) (deep-learning pixel classification).", "",
        "## Inputs", "",
        f"- {model.in_channels} channel(s): {', '.join(model.channel_names)} (raw intensities, float32)",
        f"- pixel size: {f'{ps[0]:.4g} x {ps[1]:.4g} µm (y, x)' if ps else 'unknown'}"
        + (f" — the network sees images downsampled {cfg.downsample:g}x" if cfg.downsample > 1 else ""),
        f"- normalisation: {model.norm_stats['method']} "
        + ("with the training set's statistics" if cfg.use_training_stats else "with each image's own statistics")
        + f" → {', '.join(p['id'] for p in pre)}", "",
        "## Outputs", "",
        f"- {model.n_classes} class probabilities (softmax): {', '.join(model.class_names)}",
        f"- tile borders: discard {halo} px on each side (halo); pixlab blends tiles overlapping by "
        f"{cfg.tile_overlap:.0%}", "",
        "## Training", "",
        f"- network: {cfg.architecture}" + ("" if cfg.architecture == "tiny_unet" else f" / {cfg.encoder}"),
        f"- tile size {cfg.tile_size} px, batch {cfg.batch_size}, loss {cfg.loss}, optimizer {cfg.optimizer}, "
        f"learning rate {cfg.learning_rate:g}",
        f"- epochs trained: {len(model.history)}" + (f", best epoch {best}" if best is not None else ""),
    ]
    if hist:
        shown = {k: v for k, v in hist.items() if isinstance(v, (int, float)) and k != "epoch"}
        if shown:
            lines.append("- last epoch: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(shown.items())))
    if model.metadata.get("train_images"):
        lines.append(f"- training images: {', '.join(map(str, model.metadata['train_images']))}")
    lines += ["", "## Weights", "", f"- {', '.join(formats)}: normalised tiles in, logits out "
              "(the package's softmax makes probabilities)", "",
              "## Limitations", "",
              "A pixel classifier trained on sparse annotations of a few images: check its output on "
              "images from other scanners, stains or magnifications before relying on it, and retrain "
              "with annotations from those images when it fails.", ""]
    return "\n".join(lines)


def _space_unit(pixel_size, halo: int, minimum: int, step: int, largest: int = 16384):
    """(unit, (scale_y, scale_x)) for the spatial axes, or None.

    bioimage.io consumers size the output as ``input_size * scale_in / scale_out`` and round down;
    with a scale such as 0.65 µm that float product gives 27.999... for 28 px. The first unit in
    which every valid size (and the halo) survives that round trip is used: µm, else nm, Å, pm.
    """
    if pixel_size is None:
        return None
    sizes = range(int(minimum), largest + 1, int(step))
    for unit, factor in (("micrometer", 1.0), ("nanometer", 1e3), ("angstrom", 1e4), ("picometer", 1e6)):
        scales = tuple(float(round(v * factor, 6)) for v in pixel_size)
        if all(int(n * sc / sc) == n for sc in scales for n in (*sizes, int(halo))):
            return unit, scales
    log_choice(f"pixel size {pixel_size} µm cannot be written as an exact axis scale; the package's axes "
               "carry no physical unit (the pixel size is in its description and config)")
    return None


def rdf_dict(model, *, name, description, authors, cite, license, tags, halo, minimum, step, files,
             weights, documentation="README.md", covers=("cover.png",), git_repo=None, version=None) -> dict:
    """The rdf.yaml content (a dict) for ``model``; ``files`` maps roles to (file name, sha256)."""
    unit = _space_unit(training_pixel_size(model), halo, minimum, step)

    def space(axis_id, output):
        ax = {"type": "space", "id": axis_id}
        if output:
            ax.update(size={"tensor_id": "input", "axis_id": axis_id}, halo=int(halo))
        else:
            ax["size"] = {"min": int(minimum), "step": int(step)}
        if unit is not None:
            ax.update(unit=unit[0], scale=unit[1][0 if axis_id == "y" else 1])
        return ax

    def file_entry(role):
        fname, digest = files[role]
        return {"source": fname, "sha256": digest}

    rdf = {
        "format_version": FORMAT_VERSION,
        "type": "model",
        "name": name,
        "description": description,
        "authors": authors,
        "cite": cite,
        "license": license,
        "documentation": documentation,
        "covers": list(covers),
        "tags": tags,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "inputs": [{
            "id": "input",
            "description": f"raw intensities of {', '.join(model.channel_names)}",
            "axes": [{"type": "batch"},
                     {"type": "channel", "channel_names": list(model.channel_names)},
                     space("y", False), space("x", False)],
            "test_tensor": file_entry("test_input"),
            "data": {"type": "float32"},
            "preprocessing": preprocessing(model),
        }],
        "outputs": [{
            "id": "probabilities",
            "description": f"class probabilities: {', '.join(model.class_names)}"[:128],
            "axes": [{"type": "batch"},
                     {"type": "channel", "channel_names": list(model.class_names)},
                     space("y", True), space("x", True)],
            "test_tensor": file_entry("test_output"),
            "data": {"type": "float32", "range": [0.0, 1.0]},
            "postprocessing": [{"id": "softmax", "kwargs": {"axis": "channel"}}],
        }],
        "weights": weights,
        "config": {
            "bioimageio": {"reproducibility_tolerance": [REPRODUCIBILITY_TOLERANCE],
                           "architecture_type": str(model.config.architecture)[:32],
                           "task": "semantic segmentation (pixel classification)"},
            "pixlab": {
                "class_names": list(model.class_names), "colours": model.colours,
                "channel_names": list(model.channel_names), "normalization": model.norm_stats,
                "use_training_stats": bool(model.config.use_training_stats),
                "tile_size": int(model.inference_tile_size), "tile_overlap": float(model.config.tile_overlap),
                "downsample": float(model.config.downsample),
                "pixel_size_um": list(pixel_size_um(model)) if pixel_size_um(model) else None,
                "architecture": model.config.architecture, "encoder": model.config.encoder,
            },
        },
    }
    if git_repo:
        rdf["git_repo"] = git_repo
    if version:
        rdf["version"] = str(version)
    return rdf
