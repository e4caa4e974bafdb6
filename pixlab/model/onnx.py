"""ONNX export and an ONNX Runtime inference backend.

On a CPU, ONNX Runtime runs the same network markedly faster than eager PyTorch (it fuses
convolution + batch norm + activation and picks blocked memory layouts): on this project's 2-core
development machine an smp U-Net/resnet18 at 512 px ran about 2x faster (``bench/tiled_inference.py``
prints the ratio measured on the machine at hand). :class:`OnnxBackend` has the same
``infer_batch`` as :meth:`pixlab.Model.infer_batch`, so :func:`pixlab.inference.tiling.predict_tiled` and
:func:`pixlab.inference.predict.predict_file` use either one unchanged.

The exported graph is the model's network (``model.network``: normalised tiles in, logits out) with
dynamic batch, height and width, so other tools (QuPath's ONNX support, Fiji/DeepImageJ, onnxruntime
in C++) can run it on tiles of any size; the softmax is applied by :class:`OnnxBackend`.
"""

from __future__ import annotations

import io
import os
import time
import warnings

import numpy as np

from pixlab._atomic import atomic_write

__all__ = ["export_onnx", "onnx_bytes", "OnnxBackend", "max_prob_difference", "compare_backends"]

#: ONNX opset used for export (supported by onnxruntime >= 1.14 and every current consumer).
OPSET = 17


def _network_and_channels(model_or_network, in_channels):
    network = getattr(model_or_network, "network", model_or_network)
    if in_channels is None:
        in_channels = getattr(model_or_network, "in_channels", None)
    if in_channels is None:
        info = getattr(network, "pixlab_info", None) or {}
        in_channels = info.get("in_channels")
    if in_channels is None:
        raise ValueError("in_channels is unknown for a bare network; pass in_channels=N (the number "
                         "of image channels the network takes)")
    return network, int(in_channels)


def onnx_bytes(model_or_network, *, in_channels=None, tile=64, opset=OPSET) -> bytes:
    """Serialise a network to ONNX in memory (dynamic batch, height and width).

    Parameters
    ----------
    model_or_network : pixlab.Model or torch.nn.Module
        A Model exports ``model.network``; its input channel count is known.
    in_channels : int, optional
        Needed for a bare network that does not record it.
    tile : int
        Size of the example tile used for tracing (any multiple of 32; the graph is size-independent).
    opset : int
        ONNX opset version.

    Returns
    -------
    bytes
        The ONNX model (input ``"input"`` (B, C, H, W) float32, output ``"logits"`` (B, K, H, W)).
    """
    import torch

    network, channels = _network_and_channels(model_or_network, in_channels)
    device = next((p.device for p in network.parameters()), torch.device("cpu"))
    was_training = network.training
    network.eval()
    example = torch.zeros(1, channels, int(tile), int(tile), device=device)
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript-based exporter: it needs no extra package (onnxscript) and handles
            # every smp architecture; dynamo=False keeps that choice explicit across torch versions
            # (its DeprecationWarning says the default changed, which is why we name it).
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                network, (example,), buffer, input_names=["input"], output_names=["logits"],
                dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                              "logits": {0: "batch", 2: "height", 3: "width"}},
                opset_version=int(opset), do_constant_folding=True, dynamo=False,
            )
    finally:
        network.train(was_training)
    return buffer.getvalue()


def export_onnx(model_or_network, path, *, in_channels=None, tile=64, opset=OPSET, check=True) -> str:
    """Export a network to an ONNX file, atomically.

    Parameters
    ----------
    model_or_network : pixlab.Model or torch.nn.Module
        What to export (a Model exports ``model.network``).
    path : str or PathLike
        Output ``.onnx`` file.
    in_channels : int, optional
        Needed for a bare network that does not record its input channels.
    tile : int
        Example tile size for tracing; the exported graph accepts any batch, height and width.
    opset : int
        ONNX opset version.
    check : bool
        Run ``onnx.checker`` on the result before writing it.

    Returns
    -------
    str
        ``path``.

    Examples
    --------
    >>> from pixlab.nn.networks import build_network
    >>> import tempfile, os, onnx
    >>> net = build_network("tiny_unet", None, in_channels=2, n_classes=3)
    >>> p = export_onnx(net, os.path.join(tempfile.mkdtemp(), "m.onnx"), in_channels=2)
    >>> [d.dim_param for d in onnx.load(p).graph.input[0].type.tensor_type.shape.dim]
    ['batch', '', 'height', 'width']
    """
    data = onnx_bytes(model_or_network, in_channels=in_channels, tile=tile, opset=opset)
    if check:
        import onnx

        onnx.checker.check_model(onnx.load_from_string(data))
    with atomic_write(path) as f:
        f.write(data)
    return os.fspath(path)


class OnnxBackend:
    """Run a network with ONNX Runtime; ``infer_batch`` matches :meth:`pixlab.Model.infer_batch`.

    Parameters
    ----------
    source : pixlab.Model, torch.nn.Module, bytes or path
        A Model/network is exported in memory (no file written); bytes or a ``.onnx`` path are
        loaded as they are.
    in_channels : int, optional
        For a bare network that does not record its input channels.
    threads : int, optional
        Intra-op threads; default ``torch.get_num_threads()`` so that ``OMP_NUM_THREADS`` and
        ``torch.set_num_threads`` limit both backends alike.
    providers : list of str, optional
        ONNX Runtime execution providers; default CPU (CUDA is used by the eager backend).

    Attributes
    ----------
    session : onnxruntime.InferenceSession
    name : str
        ``"onnxruntime"``.
    """

    name = "onnxruntime"

    def __init__(self, source, *, in_channels=None, threads=None, providers=None):
        import onnxruntime as ort

        if isinstance(source, (bytes, bytearray)):
            data = bytes(source)
        elif isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"ONNX file '{path}' does not exist; export one with "
                                        "model.export_onnx(path)")
            with open(path, "rb") as f:
                data = f.read()
        else:
            data = onnx_bytes(source, in_channels=in_channels)
        if threads is None:
            import torch

            threads = torch.get_num_threads()
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads sleep instead of spinning: the reader/writer threads of predict_file
        # and other users of a shared machine get the cores (measured no slower on 2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(data, options, providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for a bad file
            raise ValueError(f"ONNX Runtime cannot load this model ({str(e).splitlines()[0]}); export it "
                             "again with model.export_onnx(path)") from None
        self._input = self.session.get_inputs()[0].name

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw network output ``(B, K, H, W)`` float32 for normalised tiles ``(B, C, H, W)``."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run(None, {self._input: x})[0]

    def infer_batch(self, batch: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``(B, K, H, W)`` float32, like :meth:`pixlab.Model.infer_batch`."""
        import torch

        # torch's softmax: the same function the eager backend applies, multithreaded.
        return torch.softmax(torch.from_numpy(self.logits(batch)), dim=1).numpy()

    def __repr__(self) -> str:
        return f"OnnxBackend(providers={self.session.get_providers()})"


def max_prob_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference between two probability arrays."""
    return float(np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))))


def compare_backends(model, batch, backends=None, repeats=1) -> list[dict]:
    """Time backends on one batch and compare their probabilities with eager PyTorch.

    Parameters
    ----------
    model : pixlab.Model
    batch : ndarray (B, C, H, W) float32
        Normalised tiles.
    backends : dict of name -> object with ``infer_batch``, optional
        Default: eager (``model``) and ONNX Runtime.
    repeats : int
        Timed runs after one warm-up run; the fastest is reported.

    Returns
    -------
    list of dict
        ``{"backend", "seconds", "max_prob_diff", "same_labels"}`` per backend, eager first.
    """
    if backends is None:
        backends = {"eager": model, "onnxruntime": OnnxBackend(model)}
    reference = None
    rows = []
    for name, backend in backends.items():
        out = backend.infer_batch(batch)  # warm-up (allocations, lazy initialisation)
        times = []
        for _ in range(max(1, int(repeats))):
            t0 = time.perf_counter()
            out = backend.infer_batch(batch)
            times.append(time.perf_counter() - t0)
        if reference is None:
            reference = out
        rows.append({"backend": name, "seconds": min(times),
                     "max_prob_diff": max_prob_difference(out, reference),
                     "same_labels": bool((out.argmax(1) == reference.argmax(1)).all())})
    return rows
