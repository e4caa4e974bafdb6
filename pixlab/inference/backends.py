"""Inference backends: which implementation of the network runs the tiles, and how many per batch.

Every backend (an "engine") has ``name``, ``logits(x)`` (a float32 ``(B, C, H, W)`` torch tensor on the
model's device in, float32 logits on the same device out: what the device pipeline of
``predict_file`` calls) and ``infer_batch(batch)`` (numpy in, softmax probabilities out, like
:meth:`pixlab.Model.infer_batch`).

``backend="auto"`` measures the candidates this machine has on a few real tiles and keeps the
fastest one that agrees with eager float32 PyTorch (:data:`AUTO_MIN_LABEL_AGREEMENT` of the labels
equal, and probabilities within :data:`AUTO_TOLERANCE`, or :data:`AUTO_AMP_TOLERANCE` for half
precision). Candidates:

- ``eager``: the network as it is (float32);
- ``channels_last``: the same network in NHWC memory layout (faster convolutions on many CPUs/GPUs);
- ``amp-fp16`` / ``amp-bf16``: autocast mixed precision, CUDA only (half precision is slow or
  unsupported on CPUs);
- ``compile``: ``torch.compile`` (Inductor/Triton), CUDA only: on a CPU Inductor generates C++ per
  tile shape and needs a compiler, tens of seconds that one image rarely pays back;
- ``onnxruntime`` / ``onnxruntime-cuda``: ONNX Runtime with its CPU or CUDA provider, when installed.
"""

from __future__ import annotations

import copy
import sys
import time
import weakref

import numpy as np

__all__ = ["BACKENDS", "AUTO_TOLERANCE", "AUTO_AMP_TOLERANCE", "AUTO_MIN_LABEL_AGREEMENT", "get_backend",
           "cuda_batch_size", "inference_batch_size", "measure_backends", "TorchEngine", "OnnxEngine"]

#: Inference backends: eager PyTorch, ONNX Runtime, or the fastest measured candidate that agrees with eager.
BACKENDS = ("eager", "onnxruntime", "auto")

# "auto" accepts a float32 candidate only if no probability differs from eager PyTorch by more than
# this (float32 kernels differ in summation order by ~1e-5; labels then differ only at exact ties).
AUTO_TOLERANCE = 1e-3
#: ... and a half-precision (AMP) one within this (fp16 logits carry ~1e-3 relative error).
AUTO_AMP_TOLERANCE = 2e-2
#: Fraction of pixels whose label must equal eager float32's for "auto" to keep a candidate.
AUTO_MIN_LABEL_AGREEMENT = 0.999


def cuda_batch_size(model, tile: int, n_channels: int, max_batch: int = 64, fraction: float = 0.5) -> int:
    """Tiles per batch that fit in the GPU's free memory.

    One tile is run first to measure the peak memory a tile needs (with the model's AMP setting);
    the batch then uses at most ``fraction`` of the memory that was free.

    Parameters
    ----------
    model : pixlab.Model
        On a CUDA device.
    tile : int
    n_channels : int
    max_batch : int
    fraction : float

    Returns
    -------
    int
        Between 1 and ``max_batch``.
    """
    import torch

    device = model.device
    if device.type != "cuda":
        raise ValueError(f"cuda_batch_size needs a model on a CUDA device, got {device}; use model.to('cuda')")
    torch.cuda.synchronize(device)
    free, _total = torch.cuda.mem_get_info(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    model.infer_batch(np.zeros((1, n_channels, tile, tile), np.float32))
    per_tile = max(torch.cuda.max_memory_allocated(device) - base, 1)
    return int(max(1, min(max_batch, (free * fraction) // per_tile)))


#: Tiles per batch on a CPU: more tiles per call do not run faster on a few cores and hold more memory
#: (measured, tiny_unet on 512 px tiles of a 12,500 px wide slide level, 2 cores: batch 1 took 43 CPU s
#: and peaked at 1.47 GiB, batch 4 70 CPU s and 1.85 GiB; bench/whole_slide.py).
CPU_BATCH_SIZE = 1


def inference_batch_size(model, tile: int, n_channels: int, batch_size: int | None = None) -> int:
    """The one batch-size rule of inference: ``batch_size`` when given, else what fits the GPU
    (:func:`cuda_batch_size`), else :data:`CPU_BATCH_SIZE` on a CPU."""
    if batch_size:
        return int(batch_size)
    return cuda_batch_size(model, tile, n_channels) if model.device.type == "cuda" else CPU_BATCH_SIZE


def _host_to_device(batch, device):
    import torch

    if isinstance(batch, torch.Tensor):
        return batch.to(device, torch.float32)
    x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
    if device.type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    return x


class TorchEngine:
    """The model's PyTorch network, optionally channels-last, autocast or compiled.

    Parameters
    ----------
    model : pixlab.Model
    name : str
        Reported name.
    channels_last : bool
        Run a channels-last copy of the network (the model's own network is left as it is).
    amp : torch.dtype or None or "model"
        Autocast dtype on CUDA; ``"model"``: float16 when ``model.config.amp`` (the eager default).
    compile : bool
        Wrap the network in ``torch.compile``.
    """

    def __init__(self, model, name="eager", channels_last=False, amp="model", compile=False):
        import torch

        self.name, self.device = name, model.device
        net = model.network
        net.eval()
        if channels_last:
            net = copy.deepcopy(net).to(memory_format=torch.channels_last)
        if compile:
            net = torch.compile(net)
        self.network, self.channels_last = net, channels_last
        if amp == "model":
            amp = torch.float16 if (self.device.type == "cuda" and model.config.amp) else None
        self.amp = amp if self.device.type == "cuda" else None

    def logits(self, x):
        import torch

        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.amp is not None:
                with torch.autocast("cuda", dtype=self.amp):
                    out = self.network(x)
            else:
                out = self.network(x)
            return out.float()

    def infer_batch(self, batch):
        import torch

        with torch.inference_mode():
            return torch.softmax(self.logits(_host_to_device(batch, self.device)), dim=1).cpu().numpy()


class OnnxEngine:
    """ONNX Runtime (CPU or CUDA provider) behind the same ``logits`` / ``infer_batch`` as PyTorch."""

    def __init__(self, model, cuda=False):
        self.device = model.device
        if cuda:
            from pixlab.model.onnx import OnnxBackend
            self.ort = OnnxBackend(model, providers=["CUDAExecutionProvider"])
            if "CUDAExecutionProvider" not in self.ort.session.get_providers():
                raise RuntimeError("ONNX Runtime's CUDA provider did not load")
            self.name = "onnxruntime-cuda"
        else:
            self.ort = model.backend("onnxruntime")  # cached on the model
            self.name = "onnxruntime"

    def logits(self, x):
        import torch

        out = self.ort.logits(x.detach().float().cpu().numpy())
        return torch.from_numpy(out).to(x.device)

    def infer_batch(self, batch):
        return self.ort.infer_batch(batch)


def _candidates(model) -> dict:
    """name -> zero-argument constructor of each engine this machine may run for ``model``."""
    import torch

    cuda = model.device.type == "cuda"
    cands = {
        "eager": lambda: TorchEngine(model, "eager", amp=None),
        "channels_last": lambda: TorchEngine(model, "channels_last", channels_last=True, amp=None),
    }
    if cuda:
        cands["amp-fp16"] = lambda: TorchEngine(model, "amp-fp16", amp=torch.float16)
        cands["amp-fp16-channels_last"] = lambda: TorchEngine(model, "amp-fp16-channels_last",
                                                              channels_last=True, amp=torch.float16)
        if torch.cuda.is_bf16_supported():
            cands["amp-bf16"] = lambda: TorchEngine(model, "amp-bf16", amp=torch.bfloat16)
        cands["compile"] = lambda: TorchEngine(model, "compile", amp=None, compile=True)
        cands["compile-amp-fp16"] = lambda: TorchEngine(model, "compile-amp-fp16", amp=torch.float16,
                                                        compile=True)
    try:
        import onnxruntime
    except ImportError:
        return cands
    if cuda:
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            cands["onnxruntime-cuda"] = lambda: OnnxEngine(model, cuda=True)
    else:
        cands["onnxruntime"] = lambda: OnnxEngine(model)
    return cands


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_backends(model, sample, candidates=None, repeats: int = 2) -> list[dict]:
    """Time each candidate engine on ``sample`` and compare it with eager float32 PyTorch.

    Parameters
    ----------
    model : pixlab.Model
    sample : ndarray or torch.Tensor (B, C, H, W)
        Normalised tiles.
    candidates : list of str, optional
        Names from the module docstring; default every one this machine has.
    repeats : int
        Timed runs after a warm-up run (which also compiles); the fastest counts.

    Returns
    -------
    list of dict
        ``{"backend", "engine", "seconds", "setup_seconds", "max_prob_diff", "label_agreement", "ok",
        "error"}``, eager first. ``ok``: within the tolerances; a candidate that failed to build or
        run has ``ok=False`` and the reason in ``error``.
    """
    import torch

    available = _candidates(model)
    names = list(available) if candidates is None else ["eager"] + [c for c in candidates if c != "eager"]
    x = _host_to_device(sample, model.device)
    rows, reference = [], None
    for name in names:
        row = {"backend": name, "engine": None, "seconds": float("inf"), "setup_seconds": 0.0,
               "max_prob_diff": float("nan"), "label_agreement": 0.0, "ok": False, "error": None}
        rows.append(row)
        if name not in available:
            row["error"] = "not available on this machine"
            continue
        try:
            t0 = time.perf_counter()
            engine = available[name]()
            with torch.inference_mode():
                probs = torch.softmax(engine.logits(x), dim=1)  # warm-up: allocations, compilation
                _sync(model.device)
                row["setup_seconds"] = time.perf_counter() - t0
                for _ in range(max(1, int(repeats))):
                    t0 = time.perf_counter()
                    probs = torch.softmax(engine.logits(x), dim=1)
                    _sync(model.device)
                    row["seconds"] = min(row["seconds"], time.perf_counter() - t0)
        except Exception as e:  # a missing compiler, an unexportable network: that candidate is out
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            continue
        if reference is None:
            reference = probs
        row["engine"] = engine
        row["max_prob_diff"] = float((probs - reference).abs().max())
        row["label_agreement"] = float((probs.argmax(1) == reference.argmax(1)).float().mean())
        tol = AUTO_AMP_TOLERANCE if name.startswith(("amp", "compile-amp")) else AUTO_TOLERANCE
        row["ok"] = row["label_agreement"] >= AUTO_MIN_LABEL_AGREEMENT and row["max_prob_diff"] <= tol
    return rows


_AUTO_CHOICE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _pick(model, sample, verbose=True):
    rows = measure_backends(model, sample)
    good = [r for r in rows if r["ok"]]
    best = min(good, key=lambda r: r["seconds"]) if good else None
    if best is None:  # not even eager ran: let the real call raise its own error
        return "eager"
    if verbose:
        n = len(sample)
        timing = ", ".join(
            f"{r['backend']} {1e3 * r['seconds'] / n:.1f}" if r["engine"] is not None
            else f"{r['backend']} ({'disagrees' if r['error'] is None else 'unavailable'})"
            for r in rows)
        print(f"pixlab backend='auto' picked {best['backend']!r} (ms per tile: {timing})", file=sys.stderr)
    return best["backend"]


def get_backend(model, backend: str = "eager", sample=None, verbose: bool = True):
    """An engine (``name``, ``logits``, ``infer_batch``) for ``model``.

    Parameters
    ----------
    model : pixlab.Model
    backend : {"eager", "onnxruntime", "auto"}
        ``"eager"``: PyTorch (AMP on CUDA when the model's config says so). ``"onnxruntime"``: ONNX
        Runtime on the CPU. ``"auto"``: every candidate of this machine measured on ``sample``, the
        fastest that agrees with eager float32 kept (see the module docstring); the choice is made
        once per model object, device and tile shape, and printed on stderr.
    sample : ndarray or torch.Tensor (B, C, H, W), optional
        Normalised tiles used by ``"auto"`` (without it "auto" is eager).
    verbose : bool
        Print what "auto" picked.

    Returns
    -------
    object
        ``.name``, ``.logits(x)`` and ``.infer_batch(batch)``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "eager":
        return TorchEngine(model, "eager")
    if backend == "onnxruntime":
        return OnnxEngine(model)
    if sample is None:
        return TorchEngine(model, "eager")
    key = (str(model.device), tuple(sample.shape[1:]))
    choices = _AUTO_CHOICE.setdefault(model, {})
    if key not in choices:
        choices[key] = _pick(model, sample, verbose)
    # The name is kept, not the engine: a channels-last copy would not see later training.
    return _candidates(model)[choices[key]]()
