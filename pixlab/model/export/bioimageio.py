"""bioimage.io model package export (model description format 0.5).

The package runs the model the way pixlab does, in any bioimage.io consumer (ilastik, deepImageJ,
napari, bioimageio.core):

- input ``(batch, channel, y, x)`` of raw intensities, float32; channel names = the model's
  channels; y/x sizes ``min + n * step`` (step = the network's divisor) in µm when the training
  pixel size is known;
- preprocessing = pixlab's normalisation: training statistics as fixed per-channel
  ``scale_linear`` (+ ``clip`` to [0, 1]) or ``fixed_zero_mean_unit_variance``; per-image models use
  ``scale_range`` percentiles (1-99, or 0-100 for min/max) + ``clip``, or ``zero_mean_unit_variance``;
- output ``(batch, channel, y, x)`` class probabilities (channel names = class names) through
  ``softmax`` postprocessing, with a halo (output pixels to crop) of half pixlab's tile overlap, at
  most the measured receptive field;
- weights: TorchScript, ONNX, and a ``pytorch_state_dict`` for smp architectures (described by
  their ``segmentation_models_pytorch`` class and arguments);
- test tensors: a crop of the sample image (a training image) and pixlab's probabilities for it;
  a cover image, a model card (README.md), authors, licence and citations.

No bioimage.io library is needed to write a package (it is YAML + files); ``bioimageio.core`` tests
it in the test suite (tests/test_export_bioimageio.py). The description itself is
:mod:`pixlab.model.export.bioimageio_rdf`; this module writes the package.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from pixlab._atomic import atomic_dir, atomic_path
from pixlab.model.export._common import (ExportError, halo_px, log_choice, normalise_for, reference_logits,
                                         size_divisor, softmax, test_crop, torch_network, training_pixel_size)
from pixlab.model.export.bioimageio_rdf import (DEFAULT_LICENSE, FORMAT_VERSION, _authors, _cite,  # noqa: F401
                                               _model_card, _smp_architecture, preprocessing, rdf_dict)

__all__ = ["export_bioimageio", "preprocessing", "rdf_dict", "FORMAT_VERSION", "WEIGHT_FORMATS",
           "DEFAULT_LICENSE"]


#: Weight formats written, in the order consumers should prefer them.
WEIGHT_FORMATS = ("torchscript", "onnx", "pytorch_state_dict")


_RDF = "rdf.yaml"
_FILES = {"torchscript": "weights_torchscript.pt", "onnx": "weights.onnx",
          "pytorch_state_dict": "weights_state_dict.pt"}


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cover_png(model, raw: np.ndarray, probs: np.ndarray) -> bytes:
    """2:1 cover: the test input | the predicted classes over it."""
    from PIL import Image as PILImage

    from pixlab.image.display import composite

    rgb = composite(raw).astype(np.float32)
    labels = np.argmax(probs[0], axis=0)
    lut = np.asarray(model.colours, np.float32)
    over = np.rint(rgb * 0.5 + lut[labels] * 0.5).astype(np.uint8)
    picture = np.concatenate([rgb.astype(np.uint8), over], axis=1)
    side = 256  # a readable thumbnail whatever the crop size
    img = PILImage.fromarray(picture).resize((2 * side, side), PILImage.NEAREST)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def _state_dict_bytes(network) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous().clone() for k, v in network.state_dict().items()}, buffer)
    return buffer.getvalue()


def export_bioimageio(model, out, *, sample=None, name: str | None = None, description: str | None = None,
                      authors=None, license: str | None = None, cite=None, tags=None, git_repo=None,
                      version=None, weights=None, test_size: int = 128) -> str:
    """Write a bioimage.io model package (``.zip``, or a folder when ``out`` has no .zip suffix).

    Parameters
    ----------
    model : pixlab.Model
    out : str or PathLike
        ``name.zip`` (the usual package) or a folder; written atomically.
    sample : Image, array or path, optional
        An image the model applies to (a training image is best): the test tensors and the cover are
        made from a central crop of it. Without one, a seeded random image in the training intensity
        range is used (printed).
    name, description : str, optional
        Default: built from the architecture and class names.
    authors : list of str or dict, optional
        ``["Ada Lovelace", {"name": ..., "affiliation": ..., "orcid": ...}]``; default the login name
        (printed).
    license : str, optional
        SPDX licence id; default :data:`DEFAULT_LICENSE` (printed).
    cite : list of dict, optional
        ``[{"text": ..., "doi": ...}]`` or with ``"url"``; default the network's reference
        (segmentation_models_pytorch, or the U-Net paper for tiny_unet).
    tags : list of str, optional
        Extra tags (pixlab, semantic-segmentation and the class names are always added).
    git_repo, version : str, optional
        Written as given.
    weights : list of str, optional
        Weight formats to include (:data:`WEIGHT_FORMATS`); default TorchScript and ONNX, plus
        ``pytorch_state_dict`` for smp architectures. A format that fails is an error naming the
        formats that work.
    test_size : int
        Side of the test tensors in pixels (rounded down to a valid input size).

    Returns
    -------
    str
        ``out``.

    Examples
    --------
    >>> export_bioimageio(model, "nuclei.zip", sample="train.tif", authors=["Ada Lovelace"])  # doctest: +SKIP
    """
    from pixlab.model.export.torchscript import torchscript_bytes
    from pixlab.model.onnx import OPSET, onnx_bytes

    import torch

    out = Path(out)
    onnx_only = type(model.network).__name__ == "OnnxNetwork"  # an imported ONNX model: no torch graph
    arch = None if onnx_only else _smp_architecture(model)
    if weights is None:
        weights = ["onnx"] if onnx_only else ["torchscript", "onnx"] + (["pytorch_state_dict"] if arch else [])
        if onnx_only:
            log_choice("the model is an imported ONNX graph: the package gets ONNX weights only")
    net = None if onnx_only and "torchscript" not in weights else torch_network(
        model, "a bioimage.io package with TorchScript weights")
    weights = [str(w) for w in weights]
    bad = [w for w in weights if w not in WEIGHT_FORMATS]
    if bad or not weights:
        raise ValueError(f"weights must be a non-empty list of {list(WEIGHT_FORMATS)}, got {weights!r}")
    if "pytorch_state_dict" in weights and arch is None:
        raise ExportError(f"a {model.config.architecture} network has no library description for the "
                          "pytorch_state_dict weight format; use weights=['torchscript', 'onnx']")

    step = size_divisor(model)
    halo = halo_px(model, net)
    minimum = step * (2 * halo // step + 1)  # smallest size that keeps something after the halo crop
    raw = test_crop(model, sample, max(int(test_size), minimum), minimum, step)
    tile = normalise_for(model, raw)

    blobs: dict[str, bytes] = {}
    entries: dict = {}
    version_torch = torch.__version__.split("+")[0]
    for fmt in weights:
        try:
            if fmt == "torchscript":
                blobs[fmt] = torchscript_bytes(model)
                entries[fmt] = {"pytorch_version": version_torch}
            elif fmt == "onnx":
                blobs[fmt] = (Path(model.network.path).read_bytes() if type(model.network).__name__ == "OnnxNetwork"
                              else onnx_bytes(model))
                entries[fmt] = {"opset_version": _opset(blobs[fmt], OPSET)}
            else:
                blobs[fmt] = _state_dict_bytes(net)
                entries[fmt] = {"pytorch_version": version_torch, "architecture": arch}
        except ExportError as e:
            others = [w for w in WEIGHT_FORMATS if w != fmt and w in ("onnx",) + (("pytorch_state_dict",) if arch else ())]
            raise ExportError(f"{e} (bioimage.io: pass weights={others!r})") from None

    if net is not None:
        logits = reference_logits(net, tile)
    else:  # imported ONNX model: its own runtime gives the reference
        with torch.inference_mode():
            logits = model.network(torch.from_numpy(tile[None])).numpy()
    probs = softmax(logits)

    name = name or f"pixlab {model.config.architecture} {' '.join(model.class_names)}"[:128]
    description = description or (
        f"Pixel classifier ({', '.join(model.class_names)}) for {model.in_channels}-channel images "
        f"({', '.join(model.channel_names)}), trained with pixlab.")
    if license is None:
        license = DEFAULT_LICENSE
        log_choice(f"license not given: using {DEFAULT_LICENSE} (pass license=SPDX_ID / --license)")
    tags = list(dict.fromkeys(["pixlab", "semantic-segmentation", "pixel-classification", "2d",
                               *[t.lower().replace(" ", "-") for t in model.class_names], *(tags or [])]))
    pre = preprocessing(model)
    readme = _model_card(model, name, description, halo, pre, weights, training_pixel_size(model))

    payload = {
        "test_input.npy": _npy_bytes(raw[None]),
        "test_output.npy": _npy_bytes(probs.astype(np.float32)),
        "cover.png": _cover_png(model, raw, probs),
        "README.md": readme.encode("utf-8"),
        **{_FILES[f]: blobs[f] for f in weights},
    }
    files = {"test_input": ("test_input.npy", _sha256(payload["test_input.npy"])),
             "test_output": ("test_output.npy", _sha256(payload["test_output.npy"]))}
    weight_entries = {f: {"source": _FILES[f], "sha256": _sha256(blobs[f]), **entries[f]} for f in weights}
    rdf = rdf_dict(model, name=name, description=description, authors=_authors(authors),
                   cite=_cite(model, cite), license=license, tags=tags, halo=halo, minimum=minimum, step=step,
                   files=files, weights=weight_entries, git_repo=git_repo, version=version)
    payload[_RDF] = _yaml(rdf).encode("utf-8")
    _write(out, payload)
    return os.fspath(out)


def _opset(data: bytes, default: int) -> int:
    import onnx

    proto = onnx.load_from_string(data)
    return int(next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default))


def _yaml(rdf: dict) -> str:
    import yaml

    # JSON round trip: plain lists/floats only, so the YAML has no Python tags.
    return yaml.safe_dump(json.loads(json.dumps(rdf)), sort_keys=False, allow_unicode=True)


def _write(out: Path, payload: dict) -> None:
    if out.suffix.lower() == ".zip":
        with atomic_path(out) as tmp:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
                for fname, data in payload.items():
                    z.writestr(fname, data)
        return
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"'{out}' is a file; name the package 'something.zip' or a folder")
    with atomic_dir(out) as tmp:
        for fname, data in payload.items():
            (Path(tmp) / fname).write_bytes(data)
