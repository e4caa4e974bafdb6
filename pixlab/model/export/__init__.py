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
from pixlab.model.export.formats import FORMATS, write

__all__ = ["FORMATS", "ExportError", "export_model"]

def export_model(model, out, format: str = "bioimageio", **options) -> str:
    """Write ``model`` in another tool's format.

    Parameters
    ----------
    model : pixlab.Model
        A model (load a folder first with :func:`pixlab.load_model`).
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
        # Loading here would make the export package depend on the loader, which depends on this
        # package's model formats (an import cycle): the caller loads.
        raise TypeError(f"export_model takes a pixlab Model, got the path '{model}'; load it first with "
                        "pixlab.load_model(folder)")
    return write(model, out, format, **options)
