"""Resumable training checkpoints: safetensors for tensors, JSON for the rest (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["save_checkpoint", "load_checkpoint", "resume_config", "RUN_CONTROL_FIELDS"]

#: Fields a resumed run takes from the caller: they steer this run (where, how long, how often it
#: saves) but do not change what the stored weights, optimizer state, schedule or tile stream mean.
RUN_CONTROL_FIELDS = ("device", "num_threads", "amp", "time_limit_s", "checkpoint_every", "early_stopping",
                      "patience", "weights_path", "version")


def _flatten_optimizer(opt) -> tuple[dict, dict]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able structure."""
    import torch
    sd = opt.state_dict()
    tensors, state_json = {}, {}
    for pid, st in sd["state"].items():
        state_json[str(pid)] = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt.{pid}.{k}"] = v.detach().cpu().contiguous().clone()
                state_json[str(pid)][k] = "__tensor__"
            else:
                state_json[str(pid)][k] = v
    return tensors, {"state": state_json, "param_groups": sd["param_groups"]}


def _unflatten_optimizer(tensors: dict, structure: dict) -> dict:
    state = {}
    for pid, st in structure["state"].items():
        state[int(pid)] = {k: (tensors[f"opt.{pid}.{k}"] if v == "__tensor__" else v) for k, v in st.items()}
    return {"state": state, "param_groups": structure["param_groups"]}


def _json_safe(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(type(o).__name__)


def save_checkpoint(folder, net, opt, sched, epoch: int, history: list, best: dict, sampler_state: dict, cfg,
                    ema=None) -> None:
    """Write a resumable checkpoint folder atomically (it replaces the previous one whole).

    ``ema``: the ``torch.optim.swa_utils.AveragedModel`` holding the weight average, if any.
    """
    import torch
    from safetensors.torch import save_file
    from pixlab._atomic import atomic_dir

    tensors = {f"net.{k}": v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    if best.get("state") is not None:
        tensors.update({f"best.{k}": v.contiguous() for k, v in best["state"].items()})
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous().clone() for k, v in ema.state_dict().items()})
    opt_t, opt_s = _flatten_optimizer(opt)
    tensors.update(opt_t)
    sched_state = sched.state_dict() if sched is not None else None
    meta = {"format": "pixlab-checkpoint", "epoch": epoch, "history": history,
            "best": {"score": best.get("score"), "epoch": best.get("epoch")},
            "optimizer": opt_s, "scheduler": sched_state, "sampler_state": sampler_state,
            "config": cfg.to_dict()}
    text = json.dumps(meta, default=_json_safe)
    with atomic_dir(folder) as tmp:
        save_file(tensors, str(Path(tmp) / "checkpoint.safetensors"))
        (Path(tmp) / "checkpoint.json").write_text(text, encoding="utf-8")


def _read_meta(folder) -> tuple[Path, dict]:
    """(the ``last`` folder, its checkpoint.json); ``folder`` may be the checkpoint_dir holding it."""
    folder = Path(folder)
    if (folder / "last" / "checkpoint.json").is_file():
        folder = folder / "last"
    if not (folder / "checkpoint.json").is_file():
        raise FileNotFoundError(f"no checkpoint in '{folder}'; pass the checkpoint_dir (or its 'last' folder) "
                                f"of an earlier train(..., checkpoint_dir=...) run")
    try:
        meta = json.loads((folder / "checkpoint.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read checkpoint '{folder}': {e}; it is damaged, resume from another "
                         f"checkpoint or train afresh") from None
    return folder, meta


def _same(a, b) -> bool:
    """Equal as stored in JSON (tuples and lists alike)."""
    return json.dumps(a, default=_json_safe, sort_keys=True) == json.dumps(b, default=_json_safe, sort_keys=True)


def resume_config(folder, cfg=None):
    """The configuration to resume a checkpoint with: the one it was trained with.

    The stored (resolved) configuration is what the weights, optimizer state, learning-rate schedule
    and tile stream of the checkpoint belong to, so a resumed run uses it. ``cfg`` may change the
    :data:`RUN_CONTROL_FIELDS` (device, threads, time limit, ...) and, when the schedule does not
    depend on it (scheduler 'none' or 'plateau'), ``epochs``. Any other field of ``cfg`` that is not
    at its default value must equal the stored one; a field at its default value defers to the
    checkpoint (so ``pixlab train --resume`` needs no repeated options).

    Parameters
    ----------
    folder : path
        The checkpoint_dir or its ``last`` folder.
    cfg : TrainConfig, optional
        The caller's configuration.

    Returns
    -------
    TrainConfig

    Raises
    ------
    ValueError
        When ``cfg`` sets fields that differ from the checkpoint's (all of them are named).
    """
    import dataclasses
    from pixlab.training.config import TrainConfig

    folder, meta = _read_meta(folder)
    if not isinstance(meta.get("config"), dict):
        raise ValueError(f"checkpoint '{folder}' stores no training config; it was not written by "
                         f"pixlab.train, resume from another checkpoint or train afresh")
    stored = TrainConfig.from_dict(meta["config"])
    if cfg is None:
        return stored
    free = set(RUN_CONTROL_FIELDS)
    if stored.scheduler in ("none", "plateau"):  # no schedule sized by epochs x steps in the optimizer state
        free.add("epochs")
    defaults, mine_resolved = TrainConfig(), cfg.resolved()
    conflicts = []
    for f in dataclasses.fields(TrainConfig):
        mine, theirs = getattr(cfg, f.name), getattr(stored, f.name)
        # the stored config is resolved: the caller's value may match it before or after resolving
        if f.name in free or _same(mine, getattr(defaults, f.name)) or _same(mine, theirs) \
                or _same(getattr(mine_resolved, f.name), theirs):
            continue
        conflicts.append(f"{f.name}={mine!r} (checkpoint: {theirs!r})")
    if conflicts:
        raise ValueError(f"cannot resume '{folder}' with a different config: {', '.join(conflicts)}; resume with "
                         f"the checkpoint's own config (leave these at their defaults, or cfg=None), or train "
                         f"afresh; only {', '.join(sorted(free - {'version'}))} may change on resume")
    # The caller's run-control values where set; the device always (the checkpoint may come from
    # another machine, and 'auto' picks what this one has).
    changes = {name: getattr(cfg, name) for name in free - {"version"} if getattr(cfg, name) != getattr(defaults, name)}
    return stored.replace(**{**changes, "device": cfg.device})


def load_checkpoint(folder, net, opt, sched, ema=None) -> dict:
    """Restore network/optimizer/scheduler from a checkpoint folder; return the training state.

    ``folder`` may be the ``last`` folder itself or the checkpoint_dir holding it.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder, meta = _read_meta(folder)
    try:
        tensors = load_file(str(folder / "checkpoint.safetensors"))
    except (SafetensorError, OSError) as e:  # never unpickled; a damaged file is a user error, not a crash
        raise ValueError(f"cannot read checkpoint '{folder}': {e}; it is damaged, resume from another "
                         f"checkpoint or train afresh") from None
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    if ema is not None:
        ema_state = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
        if not ema_state:
            raise ValueError(f"checkpoint '{folder}' has no weight average but the config asks for "
                             f"weight_average='ema'; resume with the checkpoint's own config")
        ema.load_state_dict(ema_state)
    opt.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    if sched is not None and meta.get("scheduler") is not None:
        sched.load_state_dict(meta["scheduler"])
    best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    best = {**meta["best"], "state": best_state}
    return {"epoch": meta["epoch"], "history": meta["history"], "best": best,
            "sampler_state": meta["sampler_state"]}
