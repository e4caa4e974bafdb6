"""The export formats and the dispatch to their writers, for a model already in memory.

:meth:`pixlab.Model.export` and :func:`pixlab.model.export.export_model` call :func:`write`.
Nothing in the export package loads a model from a folder: the model class depends on this
package, and the loader (:mod:`pixlab.model.bundle`) on the model class.
"""

from __future__ import annotations

__all__ = ["FORMATS", "write"]

#: Export formats and what they write.
FORMATS = {
    "bioimageio": "bioimage.io model package (.zip)",
    "qupath-dl": "QuPath DL pixel classifier folder",
    "torchscript": "TorchScript file (.pt)",
    "onnx": "ONNX file (.onnx)",
}


def write(model, out, format: str = "bioimageio", **options) -> str:
    """Write ``model`` (a :class:`pixlab.Model`) in ``format``; see :func:`pixlab.model.export.export_model`."""
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
