"""``pixlab train``: train a model from images and label files.

Everything can come from one ``--config cfg.yaml`` (TrainConfig fields plus ``images``, ``labels``,
``classes``, ``output``, ...), which is what a cluster job runs. Under ``torchrun --nproc_per_node N``
the same command trains with PyTorch DistributedDataParallel (see docs/cluster.md): one process per
GPU (or N CPU processes with the gloo backend), only rank 0 writes checkpoints and the model.
"""

from __future__ import annotations

import os

from pixlab.app.commands import HelpFormatter

# Keys of a --config file that describe the run rather than the TrainConfig.
RUN_KEYS = ("images", "labels", "classes", "output", "checkpoint_dir", "resume", "init_from", "overwrite")
_PATH_KEYS = ("images", "labels", "output", "checkpoint_dir", "resume", "init_from")


def parse_set(items) -> dict:
    """Parse ``key=value`` overrides; values are read as YAML scalars/lists (``epochs=2``, ``channels=[0,1]``).

    ``channels=DAPI,CD8`` is one YAML string, never what was meant: a comma in the value of a field
    that is not a plain string is refused with the list spelling.
    """
    import dataclasses

    import yaml
    from pixlab.training.config import TrainConfig

    text_fields = {f.name for f in dataclasses.fields(TrainConfig) if str(f.type) in ("str", "str | None")}
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r} must look like key=value, e.g. --set epochs=5")
        k, v = item.split("=", 1)
        k = k.strip()
        try:
            value = yaml.safe_load(v)
        except yaml.YAMLError as e:
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({str(e).splitlines()[0]}); "
                             f"e.g. --set '{k}=[a, b]' for a list") from None
        if isinstance(value, str) and "," in value and k not in text_fields:
            items_ = ", ".join(p.strip() for p in value.split(","))
            raise ValueError(f"--set {item!r}: values are YAML, so {value!r} is one text, not a list; "
                             f"write --set '{k}=[{items_}]' (quoted for the shell)")
        out[k] = value
    return out


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a pixel classifier from images and sparse label masks",
                       formatter_class=HelpFormatter)
    p.add_argument("--image", action="append", help="training image (repeat for several); or 'images:' in --config")
    p.add_argument("--labels", action="append",
                   help="label mask for the image at the same position (PNG/TIFF, 0 = unlabelled); "
                        "or 'labels:' in --config")
    p.add_argument("--classes", nargs="+", help="class names for label ids 1..K; or 'classes:' in --config")
    p.add_argument("--output", help="model folder to write; or 'output:' in --config")
    p.add_argument("--config", help="YAML or JSON file: TrainConfig fields, and optionally images, labels, "
                                    "classes, output, checkpoint_dir, resume, init_from (paths relative to "
                                    "the file); command-line options take precedence")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a TrainConfig field (repeatable); values are YAML: --set epochs=5, "
                        "--set 'channels=[DAPI, CD8]' (a list, quoted for the shell), --set amp=false")
    p.add_argument("--checkpoint-dir", help="write resumable checkpoints here")
    p.add_argument("--resume", help="continue from a checkpoint folder")
    p.add_argument("--init-from", help="start from a saved model's weights")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    p.set_defaults(func=run)


def load_run_config(path) -> tuple[dict, dict]:
    """Split a ``--config`` file into (run settings, TrainConfig fields).

    Run settings are :data:`RUN_KEYS`; their relative paths are made relative to the file's folder,
    so that a job finds its data whatever its working directory.
    """
    import json
    from pathlib import Path

    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file '{p}' not found")
    text = p.read_text(encoding="utf-8")
    try:
        d = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ValueError(f"cannot parse config file '{p}': {e}") from None
    d = {} if d is None else d
    if not isinstance(d, dict):
        raise ValueError(f"config file '{p}' must hold a mapping of names to values, e.g. 'epochs: 20'")
    run = {k: d.pop(k) for k in RUN_KEYS if k in d}
    for k in _PATH_KEYS:
        if k not in run or run[k] is None:
            continue
        v = run[k]
        many = isinstance(v, (list, tuple))
        vals = [str(p.parent / x) if not Path(str(x)).is_absolute() else str(x) for x in (v if many else [v])]
        run[k] = vals if many else vals[0]
    for k in ("images", "labels"):
        if isinstance(run.get(k), str):
            run[k] = [run[k]]
    if isinstance(run.get("classes"), str):
        run["classes"] = run["classes"].split()
    return run, d


def _distributed(cfg):
    """Join the torchrun process group when WORLD_SIZE > 1.

    Returns (rank, world_size, cfg, started): gloo on CPUs, NCCL on GPUs with one GPU per process
    (LOCAL_RANK), ``cfg.device`` pinned to that GPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, cfg, False
    import torch
    import torch.distributed as dist

    device = cfg.resolved_device()
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        n_gpus = torch.cuda.device_count()
        if local >= n_gpus:
            raise ValueError(f"torchrun started {os.environ.get('LOCAL_WORLD_SIZE', local + 1)} processes on this "
                             f"machine but it has {n_gpus} GPU(s); use --nproc_per_node {n_gpus} (one per GPU)")
        torch.cuda.set_device(local)
        cfg, backend = cfg.replace(device=f"cuda:{local}"), "nccl"
    elif device == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"TrainConfig.device={device!r} cannot be used under torchrun; use 'cuda' (one GPU "
                         f"per process) or 'cpu'")
    started = not dist.is_initialized()
    if started:
        dist.init_process_group(backend=backend)  # env:// — torchrun sets MASTER_ADDR/PORT, RANK, WORLD_SIZE
    return dist.get_rank(), dist.get_world_size(), cfg, started


def run(args) -> int:
    from pathlib import Path
    from pixlab.training.config import TrainConfig
    from pixlab.training.trainer import train

    run_cfg, base = load_run_config(args.config) if args.config else ({}, {})
    images = args.image or run_cfg.get("images")
    labels = args.labels or run_cfg.get("labels")
    classes = args.classes or run_cfg.get("classes")
    output = args.output or run_cfg.get("output")
    for name, value in (("--image", images), ("--labels", labels), ("--classes", classes), ("--output", output)):
        if not value:
            key = name.lstrip("-").replace("image", "images")
            raise ValueError(f"no {name} given; pass {name} or put '{key}:' in the --config file")
    if len(images) != len(labels):
        raise ValueError(f"got {len(images)} images but {len(labels)} label files; give one label file per image")
    out = Path(output)
    overwrite = args.overwrite or bool(run_cfg.get("overwrite", False))
    if out.exists() and not overwrite:
        raise FileExistsError(f"model folder '{out}' exists; pass --overwrite to replace it")
    from pixlab._atomic import check_writable
    if out.parent.exists() or not str(out.parent):
        check_writable(out)  # fail now, not after minutes of training
    cfg = TrainConfig.from_dict({**base, **parse_set(args.set)})

    rank, world, cfg, started = _distributed(cfg)
    if rank > 0:  # every rank would print the same data warnings; rank 0 speaks for all
        import warnings
        warnings.simplefilter("ignore", UserWarning)
    try:
        model = train(list(zip(images, labels)), cfg, class_names=classes,
                      checkpoint_dir=args.checkpoint_dir or run_cfg.get("checkpoint_dir"),
                      resume=args.resume or run_cfg.get("resume"),
                      init_from=args.init_from or run_cfg.get("init_from"), progress=rank == 0)
        if rank == 0:  # every rank holds the same weights; one writes them
            model.save(out, overwrite=True)  # an existing folder was refused above without --overwrite
            best = model.metadata.get("best_epoch")
            h = model.history[best] if best is not None and best < len(model.history) else {}
            check = model.metadata.get("quality_check") or {}
            from pixlab.model.folder import epoch_text
            best_text = epoch_text(best, len(model.history))
            print(f"saved {out} (best epoch {best_text}, val mIoU {h.get('val_miou', float('nan')):.3f}, "
                  f"stopped: {model.metadata.get('stop_reason')}"
                  + (f", {world} processes" if world > 1 else "")
                  + (f"; quality check: {check['status']}" if check.get("status") else "") + ")")
    finally:
        if started:
            import torch.distributed as dist
            dist.destroy_process_group()
    return 0
