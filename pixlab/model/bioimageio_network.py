"""The network of an imported bioimage.io package: its fixed preprocessing and its weights as one module.

Used by :func:`pixlab.model.bioimageio_import.load_bioimageio`, which reads the package description;
here the weights run (ONNX Runtime or TorchScript) behind a ``torch.nn.Module`` that takes pixlab's
normalised ``(B, C, Y, X)`` tiles and returns logits for pixlab's softmax.
"""

from __future__ import annotations

import io

import numpy as np

__all__ = ["make_network", "per_channel", "OnnxRunner", "TorchscriptRunner"]


def per_channel(value, n, what):
    """``value`` (one number or one per channel) as a (1, n, 1, 1) float32 array; ``what`` names it in errors."""
    arr = np.asarray(value, np.float32).ravel()
    if arr.size == 1:
        arr = np.repeat(arr, n)
    if arr.size != n:
        raise ValueError(f"{what} has {arr.size} values for {n} channels")
    return arr.reshape(1, n, 1, 1)


def make_network(runner, fixed_ops, n_channels, kind, input_order, output_order):
    """The package's network as a torch module: fixed preprocessing, the weights, logits out.

    Parameters
    ----------
    runner : OnnxRunner or TorchscriptRunner
        Runs the package's weights on a tensor in the package's axis order.
    fixed_ops : list of (str, dict)
        The fixed preprocessing steps after pixlab's normalisation, as (operation id, kwargs).
    n_channels : int
        Input channels (per-channel kwargs are broadcast to them).
    kind : {"logits", "sigmoid"}
        What the package outputs; sigmoid probabilities become log-probabilities.
    input_order, output_order : tuple of int
        Axis permutations from pixlab's (B, C, Y, X) to the package's input, and from its output back.

    Returns
    -------
    torch.nn.Module
    """
    import torch
    from torch import nn

    class _Network(nn.Module):
        """Fixed preprocessing + the package's weights; returns logits for pixlab's softmax."""

        def __init__(self):
            super().__init__()
            self.runner, self.fixed_ops, self.kind = runner, fixed_ops, kind
            self.input_order, self.output_order = input_order, output_order
            self.path = getattr(runner, "path", "")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x.float()
            for op, kw in self.fixed_ops:
                if op == "scale_linear":
                    y = y * torch.from_numpy(per_channel(kw.get("gain", 1.0), n_channels, "gain")) + \
                        torch.from_numpy(per_channel(kw.get("offset", 0.0), n_channels, "offset"))
                elif op == "fixed_zero_mean_unit_variance":
                    y = (y - torch.from_numpy(per_channel(kw["mean"], n_channels, "mean"))) / (
                        torch.from_numpy(per_channel(kw["std"], n_channels, "std")) + 1e-6)
                elif op == "clip":
                    y = y.clamp(kw.get("min"), kw.get("max"))
            y = y.permute(*self.input_order)  # pixlab (B, C, Y, X) -> the package's axis order
            out = self.runner(y).permute(*self.output_order)
            if self.kind == "sigmoid":
                p = out.clamp(1e-7, 1 - 1e-7)
                if p.shape[1] == 1:
                    p = torch.cat([1 - p, p], dim=1)
                out = torch.log(p)
            return out.to(x.device)

        def __deepcopy__(self, memo):
            clone = _Network()
            clone.train(self.training)
            return clone

    return _Network()


class OnnxRunner:
    """The package's ONNX weights through ONNX Runtime."""

    def __init__(self, data: bytes, path: str):
        from pixlab.model.onnx import OnnxBackend

        self.backend = OnnxBackend(data)
        self.path = path

    def __call__(self, x):
        import torch

        return torch.from_numpy(self.backend.logits(x.detach().cpu().numpy()).astype(np.float32))


class TorchscriptRunner:
    """The package's TorchScript weights through ``torch.jit.load`` (no Python from the file runs)."""

    def __init__(self, data: bytes, path: str):
        import warnings

        import torch

        # A TorchScript archive holds TorchScript code and tensors; torch.jit.load runs no Python
        # from the file (unlike torch.load of a pickle), so it is allowed where pickles are not.
        with warnings.catch_warnings():  # torch's "TorchScript is deprecated" notice (see export.torchscript)
            warnings.simplefilter("ignore", FutureWarning)
            self.module = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
        self.path = path

    def __call__(self, x):
        import torch

        with torch.inference_mode():
            return self.module(x).float()
