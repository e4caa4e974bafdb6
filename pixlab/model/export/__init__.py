"""Export a pixlab model to the tools analysts use.

========================  =============================================================================
format                    writes
========================  =============================================================================
``"bioimageio"``          a bioimage.io model package (``.zip``, format 0.5): ilastik, deepImageJ,
                          napari, bioimageio.core; pixlab loads it back (:func:`load_bioimageio`)
``"qupath-dl"``           the folder the QuPath DL pixel classifier extension (uw-loci) loads from
                          ``{project}/classifiers/dl/{name}/``
``"torchscript"``         the traced network (``.pt``): logits of normalised tiles
``"onnx"``                the network as ONNX (``.onnx``), dynamic batch/height/width
========================  =============================================================================

See docs/interop.md for what each file holds and how it was checked.
"""

from __future__ import annotations

import os

from pixlab.model.export._common import ExportError

__all__ = ["FORMATS", "ExportError", "export_model"]

#: Export formats and what they write.
FORMATS = {
    "bioimageio": "bioimage.io model package (.zip)",
    "qupath-dl": "QuPath DL pixel classifier folder",
    "torchscript": "TorchScript file (.pt)",
    "onnx": "ONNX file (.onnx)",
}


def export_model(model, out, format: str = "bioimageio", **options) -> str:
    """Write ``model`` in another tool's format.

    Parameters
    ----------
    model : pixlab.Model or path
        A model, or a model folder written by ``model.save``.
    out : str or PathLike
        The file or folder to write (see :data:`FORMATS`); never half-written.
    format : {"bioimageio", "qupath-dl", "torchscript", "onnx"}
    **options
        Passed to the format's writer: :func:`pixlab.model.export.bioimageio.export_bioimageio`,
        :func:`pixlab.model.export.qupath.export_qupath`,
        :func:`pixlab.model.export.torchscript.export_torchscript` or
        :func:`pixlab.model.onnx.export_onnx`.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    ExportError
        The model cannot be written in that format (the message names one that works).
    """
    if isinstance(model, (str, os.PathLike)):
        from pixlab.model.bundle import load_model

        model = load_model(model)
    key = str(format).strip().lower().replace("_", "-")
    if key in ("bioimage.io", "bioimage-io", "bmz"):
        key = "bioimageio"
    if key == "qupath":
        key = "qupath-dl"
    if key not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {list(FORMATS)}")
    if key == "bioimageio":
        from pixlab.model.export.bioimageio import export_bioimageio

        return export_bioimageio(model, out, **options)
    if key == "qupath-dl":
        from pixlab.model.export.qupath import export_qupath

        return export_qupath(model, out, **options)
    if key == "torchscript":
        from pixlab.model.export.torchscript import export_torchscript

        return export_torchscript(model, out, **options)
    return model.export_onnx(out, **options)
