"""An imported ONNX graph as a torch module: the onnxruntime session behind ``model.network``.

Used by :func:`pixlab.model.onnx_import.import_onnx`. Everything that calls a pixlab network (tiling,
blending, diagnostics) calls :class:`OnnxNetwork`; the ``"onnxruntime"`` backend of an imported model
is the same graph under that backend's interface (:class:`OrtBackend`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["OnnxNetwork", "OrtBackend", "onnx_session", "FLOAT_TYPES"]

#: ONNX input types pixlab feeds (float tensors), with the numpy dtype of each.
FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class OnnxNetwork(nn.Module):
    """A ``torch.nn.Module`` that runs an ONNX segmentation graph with onnxruntime.

    Parameters
    ----------
    session : onnxruntime.InferenceSession
        Session of a graph with one ``(B, C, H, W)`` float input and a ``(B, K, H, W)`` first output.
    outputs : {"logits", "probabilities"}
        What the graph's output holds. Probabilities are returned as their logarithm, so that the
        softmax pixlab applies to network outputs gives the probabilities back unchanged.
    path : str
        The ONNX file (for messages and :meth:`pixlab.model.onnx_import.OnnxModel.save`).
    """

    def __init__(self, session, outputs: str = "logits", path: str = ""):
        super().__init__()
        self.session = session
        self.outputs = outputs
        self.path = path
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = list(inp.shape)
        self.input_dtype = FLOAT_TYPES[inp.type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the graph on a (B, C, H, W) tensor; returns (B, K, H, W) float32 logits."""
        _, c, h, w = self.input_shape
        for name, want, got in (("channel(s)", c, x.shape[1]), ("px height", h, x.shape[2]),
                                ("px width", w, x.shape[3])):
            if isinstance(want, int) and want != got:
                raise ValueError(
                    f"the ONNX model '{self.path}' takes inputs of exactly {want} {name}, got {got}; "
                    "predict with the tile size and channels declared at import (no tile_size override)"
                )
        array = x.detach().cpu().numpy().astype(self.input_dtype, copy=False)
        # A graph exported with a fixed batch size (often 1) gets the tiler's batches in chunks.
        step = self.input_shape[0] if isinstance(self.input_shape[0], int) else len(array)
        parts = [self.session.run(None, {self.input_name: array[i:i + step]})[0]
                 for i in range(0, len(array), max(step, 1))]
        out = torch.from_numpy(np.concatenate(parts).astype(np.float32, copy=False))
        if self.outputs == "probabilities":
            out = torch.log(out.clamp_min(1e-30))
        return out.to(x.device)

    def __deepcopy__(self, memo):
        # InferenceSession cannot be copied; it is read-only and thread-safe, so copies share it.
        clone = OnnxNetwork.__new__(OnnxNetwork)
        nn.Module.__init__(clone)
        clone.session, clone.outputs, clone.path = self.session, self.outputs, self.path
        clone.input_name, clone.input_shape, clone.input_dtype = (
            self.input_name, list(self.input_shape), self.input_dtype)
        clone.train(self.training)
        return clone


class OrtBackend:
    """The imported graph under the onnxruntime backend's interface (``logits``, ``infer_batch``)."""

    name = "onnxruntime"

    def __init__(self, network, infer_batch):
        self.network, self.infer_batch = network, infer_batch

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw graph output ``(B, K, H, W)`` float32 for normalised tiles (what the device pipeline calls)."""
        with torch.inference_mode():
            return self.network(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()


def onnx_session(path: Path, providers):
    """An onnxruntime session of ``path`` with pixlab's session options; a file that is not ONNX is a ValueError."""
    # pixlab.model.onnx.OnnxBackend sets the session options pixlab uses everywhere (threads from torch,
    # no spinning on a shared machine); only its session is used here.
    from pixlab.model.onnx import OnnxBackend

    try:
        return OnnxBackend(path, providers=providers).session
    except ValueError as error:
        found = re.search(r"\((.*)\); export", str(error))
        raise ValueError(
            f"cannot load '{path}' as an ONNX model ({found.group(1) if found else error}); export the network "
            "with torch.onnx.export (or your framework's ONNX exporter) and pass that .onnx file"
        ) from None
