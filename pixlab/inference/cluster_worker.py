"""The worker side of Dask batch inference: one task predicts one image with a model cached per process.

:func:`predict_one` is the task :func:`pixlab.inference.cluster.predict_many` submits. It carries only
paths; each worker process loads the bundle once (:func:`cached_model`) and keeps it, so weights are
never pickled into tasks. Failures that a retry cannot fix (user errors, missing dependencies, out of
memory) come back as ``status="failed"`` rows; anything else raises so that Dask retries it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

__all__ = ["predict_one", "cached_model", "worker_device", "is_oom", "dependency_hint", "LOADS"]

# Errors that are the user's to fix (same set as pixlab.app.cli): retrying them cannot help.
_USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
                NotADirectoryError)


# Per worker process: loaded models, most recent last. Keyed by (bundle path, weight file mtime,
# device) so that a bundle saved again under the same path is reloaded. Two entries are enough for
# the usual "one model over many images" and bound memory when a long-lived cluster serves several.
_MODELS: "OrderedDict[tuple, Any]" = OrderedDict()
_MODELS_MAX = 2
_MODELS_LOCK = threading.Lock()
#: How many times this process loaded a bundle (tests check: once per worker, not once per image).
LOADS = 0


def _worker_address() -> str | None:
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        return None


def worker_device(device: str | None) -> str:
    """The torch device for this worker: ``device`` if given, else its GPU when it has one.

    With several GPUs visible (one LocalCluster on a multi-GPU box) worker *i* takes GPU
    ``i % n``; cluster managers (SLURM, dask-cuda) usually show each worker one GPU instead.
    """
    if device not in (None, "auto"):
        return device
    import torch
    if not torch.cuda.is_available():
        return "cpu"
    n = torch.cuda.device_count()
    try:
        from distributed import get_worker
        name = get_worker().name
        index = int(name) % n if n > 1 and str(name).isdigit() else None
    except (ImportError, ValueError):
        index = None
    return "cuda" if index is None else f"cuda:{index}"


def cached_model(model_dir: str, device: str):
    """The model of ``model_dir`` for this process, loaded on first use only."""
    global LOADS
    from pixlab.model.bundle import WEIGHTS, load_model, read_metadata
    d = Path(model_dir)
    weights = d / read_metadata(d).get("weights", WEIGHTS)
    key = (str(d), weights.stat().st_mtime_ns if weights.exists() else 0, device)
    with _MODELS_LOCK:  # threads of one worker share the model rather than loading it twice
        if key in _MODELS:
            _MODELS.move_to_end(key)
            return _MODELS[key]
        model = load_model(d, device=device)
        LOADS += 1
        _MODELS[key] = model
        while len(_MODELS) > _MODELS_MAX:
            _MODELS.popitem(last=False)
        return model


def is_oom(e: BaseException) -> bool:
    """Whether ``e`` is running out of memory (system or CUDA): retrying the same image cannot help."""
    if isinstance(e, MemoryError):
        return True
    # torch.OutOfMemoryError (CUDA) is a RuntimeError; CPU allocation failures are plain RuntimeErrors.
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def dependency_hint(model_dir: str, e: ImportError) -> str:
    """The message for a worker that lacks a module: what to install, with the model's saved versions."""
    versions = {}
    try:
        from pixlab.model.bundle import read_metadata
        versions = read_metadata(model_dir).get("versions") or {}
    except Exception:  # the hint must not hide the original error
        pass
    want = ", ".join(f"{k} {v}" for k, v in versions.items() if v and k != "python")
    mod = getattr(e, "name", None) or str(e)
    return (f"cannot import {mod!r} ({e}); install pixlab and the model's dependencies in the workers' "
            f"environment" + (f" (the model was saved with {want})" if want else ""))


def predict_one(model_dir: str, in_path: str, targets: dict, overwrite: bool, device: str | None,
                 predict_kwargs: dict) -> dict:
    """Dask task: predict one image into ``targets`` (format -> path); returns its report row.

    User errors, missing dependencies and out-of-memory are returned as ``status="failed"`` at once
    (running them again cannot succeed); any other exception propagates so that Dask retries it.
    """
    t0 = time.perf_counter()
    worker = _worker_address()
    raster = next((targets[f] for f in ("ome-tiff", "ome-zarr") if f in targets), None)
    rec = {"input": in_path, "output": raster, "outputs": dict(targets), "status": "done", "error": None,
           "seconds": None, "worker": worker}
    try:
        import dask
        model = cached_model(model_dir, worker_device(device))
        from pixlab.inference import predict
        # Inside a task, dask.compute() would default to the cluster itself (distributed.get_client),
        # shipping lazy TIFF reads, open file handles included, back to the scheduler. The image is
        # read here, by this task, with the synchronous scheduler.
        with dask.config.set(scheduler="synchronous"):
            res = predict.predict_file(model, in_path, raster, measurements=targets.get("csv", False),
                                       geojson=targets.get("geojson", False), overlay=targets.get("png", False),
                                       objects_csv=targets.get("objects", False), overwrite=overwrite,
                                       **predict_kwargs)
        rec["backend"] = res.get("backend") if isinstance(res, dict) else None
    except ImportError as e:
        rec.update(status="failed", error=f"{dependency_hint(model_dir, e)} [worker {worker}]")
    except (MemoryError, RuntimeError) as e:
        if not is_oom(e):
            raise
        _free_gpu_memory()
        rec.update(status="failed", error=(
            f"out of memory predicting '{in_path}' on worker {worker} ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no details'}); lower batch_size or tile_size "
            f"(--batch-size / --tile-size), or run fewer workers per machine or per GPU"))
    except _USER_ERRORS as e:
        hint = ""
        if isinstance(e, FileNotFoundError) and worker is not None:
            hint = (" (on a cluster the model folder, the inputs and the output folder must be visible to "
                    "every worker at the same path)")
        rec.update(status="failed", error=f"{e}{hint} [worker {worker}]")
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


def _free_gpu_memory() -> None:
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # best effort: the worker keeps serving the next images either way
        pass
