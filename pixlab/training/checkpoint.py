"""Resumable training checkpoints: safetensors for tensors, JSON for the rest (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["save_checkpoint", "load_checkpoint"]


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
    tensors["torch_rng"] = torch.get_rng_state()
    sched_state = sched.state_dict() if sched is not None else None
    meta = {"format": "pixlab-checkpoint", "epoch": epoch, "history": history,
            "best": {"score": best.get("score"), "epoch": best.get("epoch")},
            "optimizer": opt_s, "scheduler": sched_state, "sampler_state": sampler_state,
            "config": cfg.to_dict()}
    text = json.dumps(meta, default=_json_safe)
    with atomic_dir(folder) as tmp:
        save_file(tensors, str(Path(tmp) / "checkpoint.safetensors"))
        (Path(tmp) / "checkpoint.json").write_text(text, encoding="utf-8")


def load_checkpoint(folder, net, opt, sched, ema=None) -> dict:
    """Restore network/optimizer/scheduler from a checkpoint folder; return the training state.

    ``folder`` may be the ``last`` folder itself or the checkpoint_dir holding it.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if (folder / "last" / "checkpoint.json").is_file():
        folder = folder / "last"
    if not (folder / "checkpoint.json").is_file():
        raise FileNotFoundError(f"no checkpoint in '{folder}'; pass the checkpoint_dir (or its 'last' folder) "
                                f"of an earlier train(..., checkpoint_dir=...) run")
    meta = json.loads((folder / "checkpoint.json").read_text(encoding="utf-8"))
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
    torch.set_rng_state(tensors["torch_rng"])
    best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    best = {**meta["best"], "state": best_state}
    return {"epoch": meta["epoch"], "history": meta["history"], "best": best,
            "sampler_state": meta["sampler_state"]}
