"""Batch inference on many images with Dask (``distributed``): a laptop, a workstation or a cluster.

One Dask task per image. The task carries only paths: each worker process loads the model bundle from
the bundle folder once and keeps it (see :mod:`pixlab.inference.cluster_worker`), so weights are never pickled into
tasks. Workers read their input and write their output file directly (through
:func:`pixlab.inference.predict.predict_file`, which writes atomically), so the model folder, the inputs and
the output folder must be visible to every worker at the same path (a shared filesystem on a
cluster). Failures are reported per image; transient ones are retried by Dask, and a task whose
worker died (killed, out of system memory) is rescheduled by the scheduler.

Multi-GPU *training* does not go through Dask: it runs under ``torchrun`` (see ``docs/cluster.md``).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterable

from pixlab.inference.cluster_worker import dependency_hint, is_oom, predict_one

__all__ = ["predict_many", "make_local_cluster", "summarize", "SCHEDULER_TIMEOUT_S"]


def __getattr__(name):
    # ``cluster.LOADS`` (read in workers by tests and benchmarks) is the worker module's live counter.
    if name == "LOADS":
        from pixlab.inference import cluster_worker
        return cluster_worker.LOADS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

#: Seconds to wait for a scheduler given by address before giving up with a clear error.
SCHEDULER_TIMEOUT_S = 10

#: Memory a CPU worker needs at least (torch + one model + a band of tiles); caps the worker count
#: of the default LocalCluster on small machines.
MIN_WORKER_MEMORY = 2 * 1024 ** 3

# ---------------------------------------------------------------------------------------- client side
def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def make_local_cluster(n_workers: int | None = None, *, memory_limit="auto", **kwargs):
    """A ``distributed.LocalCluster`` sized for pixlab inference on this machine.

    Processes (not threads) with one Dask thread each, so ``n_workers`` images are predicted in
    parallel; the cores are shared out as torch threads (one each when there is a worker per core)
    so they are not oversubscribed.

    Parameters
    ----------
    n_workers : int, optional
        Default: one per GPU if this machine has CUDA GPUs, else one per usable CPU core, capped so
        that each worker has at least 2 GiB of the available memory.
    memory_limit : str or int
        Per-worker memory limit passed to Dask (``"auto"`` = total memory / workers).
    **kwargs
        Passed on to ``distributed.LocalCluster`` (e.g. ``dashboard_address=":8787"``).

    Returns
    -------
    distributed.LocalCluster
        Use ``distributed.Client(cluster)``; close both when done (or use them as context managers).
    """
    from distributed import LocalCluster
    if n_workers is None:
        n_workers = _default_workers()
    if not isinstance(n_workers, int) or isinstance(n_workers, bool) or n_workers < 1:
        raise ValueError(f"n_workers={n_workers!r} must be a whole number >= 1")
    if kwargs.setdefault("dashboard_address", None) is None:
        # No dashboard unless asked for (faster start). The scheduler's small HTTP server (health,
        # metrics) still starts, on port 8787 by default: a random port avoids clashing with another
        # cluster on the same machine.
        kwargs["scheduler_kwargs"] = {"dashboard": False, "dashboard_address": ":0",
                                      **(kwargs.get("scheduler_kwargs") or {})}
    kwargs.setdefault("silence_logs", 40)
    # The cores are shared out between the workers: 1 torch/BLAS thread per worker when there is a
    # worker per core (CPU inference), more when there are fewer workers than cores (one per GPU,
    # or fewer images than cores). Set explicitly: torch reads it once, at start-up, and Dask's
    # default (distributed.nanny.pre-spawn-environ) is 1 whatever the machine.
    threads = str(max(1, _usable_cores() // n_workers))
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
           **kwargs.pop("env", {})}
    return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, memory_limit=memory_limit,
                        env=env, **kwargs)


def _default_workers() -> int:
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.device_count()
    except ImportError:
        pass
    import psutil
    by_memory = max(1, int(psutil.virtual_memory().available // MIN_WORKER_MEMORY))
    return max(1, min(_usable_cores(), by_memory))


def _connect(address: str):
    from distributed import Client
    try:
        return Client(address, timeout=SCHEDULER_TIMEOUT_S)
    except Exception as e:  # OSError, TimeoutError, ValueError for malformed addresses, ...
        raise ValueError(
            f"cannot reach Dask scheduler at {address} within {SCHEDULER_TIMEOUT_S:g} s "
            f"({type(e).__name__}); check the address or start one with `dask scheduler`") from None


def _describe_task_error(e: BaseException, model_dir: str, attempts: int) -> str:
    from distributed import KilledWorker
    if isinstance(e, KilledWorker):
        return ("the worker running it died several times (killed by the system or by Dask's memory limit, "
                "or it crashed); lower batch_size or tile_size, or give each worker more memory")
    if isinstance(e, ImportError):  # the worker could not even unpickle the task: no pixlab there
        return dependency_hint(model_dir, e)
    if is_oom(e):
        return f"out of memory ({e}); lower batch_size or tile_size"
    return f"{type(e).__name__}: {e} (failed {attempts} time(s))"


def predict_many(model_dir, inputs, out_dir, client=None, scheduler=None, overwrite: bool = False,
                 retries: int = 2, *, formats=("ome-tiff",), device: str | None = None,
                 resources: dict | None = None, progress: bool = True, **predict_kwargs) -> list[dict]:
    """Predict many images in parallel with Dask, one task per image, written into ``out_dir``.

    The Dask counterpart of :func:`pixlab.inference.predict.predict_folder` (same outputs, same report rows,
    plus the worker). Each worker loads the model bundle once from ``model_dir`` (never pickled
    into tasks) and writes its outputs straight into ``out_dir`` with :func:`pixlab.predict_file`.
    On a cluster, the model folder, the inputs and ``out_dir`` must be visible to every worker at
    the same path.

    Parameters
    ----------
    model_dir : str or PathLike
        A model folder written by :meth:`pixlab.Model.save`.
    inputs : path, folder or list of them
        Image files; a folder stands for its image files (see :func:`pixlab.inference.predict.list_images`).
    out_dir : str or PathLike
        Output folder (created if missing); image ``a.tif`` gives ``out_dir/a.ome.tif`` etc.
    client : distributed.Client, optional
        Use this client (its cluster is left running). Default: see ``scheduler``.
    scheduler : str, optional
        ``None`` or ``"local"``: start a :func:`make_local_cluster` sized to this machine and close it
        at the end. An address (``"tcp://host:8786"``): connect to that running scheduler.
    overwrite : bool
        Redo every image. Otherwise images whose outputs all exist are ``"skipped"`` and only missing
        outputs are written (an interrupted batch is resumed by running it again).
    retries : int
        How many times Dask re-runs an image that failed for a reason other than a user error, a
        missing dependency or out-of-memory; on the cluster this function starts, also how many
        worker deaths (crash, killed) one image may cause before it is reported as failed.
    formats : list of str
        Any of :data:`pixlab.inference.outputs.FORMATS` (``"ome-tiff"`` or ``"ome-zarr"``, ``"csv"``,
        ``"geojson"``, ``"png"``); with ``"csv"``, ``out_dir/measurements.csv`` gathers all images.
    device : str, optional
        Torch device on the workers; default: the worker's GPU if it has one, else the CPU.
    resources : dict, optional
        Dask worker resources each image needs, e.g. ``{"GPU": 1}`` so that images only run on
        workers started with ``--resources GPU=1`` (see docs/cluster.md).
    progress : bool
        Show a progress bar (tqdm) as images complete, and one line per failed image.
    **predict_kwargs
        Passed to :func:`pixlab.predict_file` (``output``, ``dtype``, ``backend``, ``batch_size``,
        ``tile_size``, ...).

    Returns
    -------
    list of dict
        One per input image, in input order: ``input``, ``output`` (raster path or None),
        ``outputs`` (format -> path), ``status`` (``"done"``, ``"skipped"`` or ``"failed"``),
        ``error`` (one sentence, or None), ``seconds`` (time on the worker) and ``worker`` (its
        address, None when skipped or when the worker died).

    Raises
    ------
    ValueError
        Unreachable scheduler (after ``SCHEDULER_TIMEOUT_S`` seconds), bad arguments.
    FileNotFoundError
        Missing model folder or input image.

    Examples
    --------
    >>> from pixlab.inference.cluster import predict_many
    >>> rows = predict_many("runs/demo/model", "slides/", "runs/demo/pred")            # doctest: +SKIP
    >>> [r["error"] for r in rows if r["status"] == "failed"]                          # doctest: +SKIP
    []
    """
    from pixlab._atomic import check_writable
    from pixlab.model.bundle import read_metadata
    from pixlab.inference.folders import _check_formats, list_images, output_paths

    if hasattr(model_dir, "network") and hasattr(model_dir, "save"):
        raise ValueError("predict_many needs the model folder, not a Model object: workers load the model "
                         "from disk; save it with model.save(folder) and pass that folder")
    model_dir = Path(model_dir).resolve()
    read_metadata(model_dir)  # one clear error here rather than one per image
    if client is not None and scheduler is not None:
        raise ValueError(f"give either client= or scheduler= (got both, scheduler={scheduler!r}); pass only one")
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ValueError(f"retries={retries!r} must be a whole number >= 0")
    formats = _check_formats(formats)
    paths = [p.resolve() for p in list_images(inputs)]
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"out_dir '{out_dir}' is a file; pass a folder for the predictions")
    targets = [output_paths(p, out_dir, formats) for p in paths]
    _check_outputs(paths, targets)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_writable(out_dir / "probe")

    rows: list[dict | None] = [None] * len(paths)
    todo: dict[int, dict] = {}
    for i, (p, t) in enumerate(zip(paths, targets)):
        missing = t if overwrite else {f: q for f, q in t.items() if not q.exists()}
        if missing:
            todo[i] = {f: str(q) for f, q in missing.items()}
        else:
            rows[i] = _row(p, t, "skipped", seconds=0.0)
    if todo:
        own_cluster = own_client = None
        try:
            if client is None:
                if scheduler in (None, "local"):
                    # allowed_failures: worker deaths an image survives before it is reported failed.
                    own_cluster = make_local_cluster(min(_default_workers(), len(todo)),
                                                     scheduler_kwargs={"allowed_failures": max(retries, 1)})
                    from distributed import Client
                    own_client = client = Client(own_cluster, set_as_default=False)
                elif isinstance(scheduler, str):
                    own_client = client = _connect(scheduler)
                else:
                    raise ValueError(f"scheduler={scheduler!r} must be None, 'local' or an address like "
                                     f"'tcp://host:8786'")
            _run(client, model_dir, paths, targets, todo, rows, overwrite, retries, device, resources,
                 progress, predict_kwargs)
        finally:
            if own_client is not None:
                own_client.close()
            if own_cluster is not None:
                own_cluster.close()
    if "csv" in formats:
        from pixlab.inference.folders import _gather_measurements
        _gather_measurements(out_dir, [t["csv"] for t in targets])
    return rows  # type: ignore[return-value]


def _row(path, targets: dict, status: str, error=None, seconds=None, worker=None) -> dict:
    raster = next((targets[f] for f in ("ome-tiff", "ome-zarr") if f in targets), None)
    return {"input": str(path), "output": None if raster is None else str(raster),
            "outputs": {f: str(q) for f, q in targets.items()}, "status": status, "error": error,
            "seconds": seconds, "worker": worker}


def _check_outputs(paths: list[Path], targets: list[dict]) -> None:
    seen: dict[Path, Path] = {}
    inputs = set(paths)
    for p, t in zip(paths, targets):
        for o in t.values():
            if o in inputs:
                raise ValueError(f"an output of '{p}' would be written to '{o}', which is an input image; "
                                 f"choose another out_dir")
            if o in seen:
                raise ValueError(f"inputs '{seen[o]}' and '{p}' would both be written to '{o}'; rename one or "
                                 f"predict them into different folders")
            seen[o] = p


def _run(client, model_dir, paths, targets, todo, rows, overwrite, retries, device, resources, progress,
         kwargs):
    from distributed import as_completed
    from tqdm.auto import tqdm

    tag = uuid.uuid4().hex[:8]
    futures = {}
    for i, t in todo.items():
        f = client.submit(predict_one, str(model_dir), str(paths[i]), t, overwrite, device, kwargs,
                          key=f"pixlab-predict-{paths[i].name}-{i}-{tag}", retries=retries, pure=False,
                          resources=resources)
        futures[f] = i
    bar = tqdm(total=len(paths), initial=len(paths) - len(todo), desc="predicting", unit="image",
               disable=not progress)
    try:
        # loop=: the client need not be this process's default one.
        for f in as_completed(list(futures), loop=client.loop):
            i = futures[f]
            if f.status == "finished":
                res = f.result()
                # The task saw only the outputs still missing; the row names all of them.
                full = _row(paths[i], targets[i], res["status"])
                rows[i] = {**res, **{k: full[k] for k in ("input", "output", "outputs")}}
            else:
                error = _describe_task_error(f.exception(), str(model_dir), retries + 1)
                rows[i] = _row(paths[i], targets[i], "failed", error=error)
            bar.update(1)
            if rows[i]["status"] == "failed" and progress:
                bar.write(f"pixlab: failed: {paths[i]}: {rows[i]['error']}")
    finally:
        bar.close()
        for f in futures:
            f.release()


def summarize(rows: Iterable[dict]) -> dict:
    """Counts per status and the summed worker time of a :func:`predict_many` report."""
    rows = list(rows)
    out = {s: sum(r["status"] == s for r in rows) for s in ("done", "skipped", "failed")}
    out["seconds"] = round(sum(r["seconds"] or 0.0 for r in rows), 3)
    return out
