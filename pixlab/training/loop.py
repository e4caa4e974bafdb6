"""The epoch loop: optimizer steps, validation on held-out strokes, best-epoch choice, checkpoints.

Everything a run needs is gathered in one :class:`Run` built by :func:`pixlab.training.trainer.train`;
this module only advances it, so resuming (which restores a Run's state from a checkpoint) and a
fresh start go through the same loop.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pixlab.training.augmentation import collate
from pixlab.training.distributed import all_reduce, broadcast_buffers
from pixlab.training.losses import confusion, edge_loss, miou_from_confusion, sparse_loss
from pixlab.training.sampling import Prefetcher
from pixlab.training.seeding import seeded, step_seed

__all__ = ["Run", "run_epochs", "validate", "epoch_score"]


@dataclass
class Run:
    """The state of one training run (network, optimizer, data) that the loop advances."""

    cfg: object
    device: str
    net: object
    fwd: object                # net, or its DistributedDataParallel wrapper
    ema: object | None         # torch.optim.swa_utils.AveragedModel or None
    opt: object
    sched: object | None
    sampler: object            # pixlab.training.sampling.TileSampler
    val_tiles: list
    augment: object | None
    class_weights: object | None
    steps: int                 # optimizer steps per epoch
    n_classes: int
    rank: int = 0
    world: int = 1
    t_start: float = field(default_factory=time.monotonic)
    callbacks: tuple = ()
    cancel: object | None = None
    checkpoint_dir: object | None = None
    make_model: Callable | None = None   # state dict -> Model (for the "best" checkpoint bundle)
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"score": None, "epoch": None, "state": None})
    start_epoch: int = 0
    scaler: object | None = None

    @property
    def eval_net(self):
        """The weights that are validated and returned: the average when there is one."""
        return self.ema.module if self.ema is not None else self.net

    def elapsed(self) -> float:
        return time.monotonic() - self.t_start

    def emit(self, ev: dict) -> bool:
        """Send an event to the callbacks; False when one of them (or ``cancel``) asks to stop."""
        ok = True
        for cb in self.callbacks:
            try:
                if cb(ev) is False:
                    ok = False
            except Exception as e:  # a broken plot must not kill a long training run
                warnings.warn(f"training callback {cb!r} failed: {e}")
        return ok and not (self.cancel is not None and self.cancel.is_set())


def validate(run: Run):
    """(held-out loss, mIoU, per-class IoU) of :attr:`Run.eval_net` on the validation tiles."""
    import torch
    net, K, bs = run.eval_net, run.n_classes, run.cfg.batch_size
    net.eval()
    cm = np.zeros((K, K), dtype=np.int64)
    loss_sum, loss_n = 0.0, 0
    with torch.inference_mode():
        for j in range(0, len(run.val_tiles), bs):
            chunk = run.val_tiles[j:j + bs]
            x = torch.from_numpy(np.stack([c[0] for c in chunk])).to(run.device)
            y = torch.from_numpy(np.stack([c[1] for c in chunk])).to(run.device)
            logits = net(x).float()
            if (y >= 0).any():
                ce = torch.nn.functional.cross_entropy(logits, y.clamp_min(0), reduction="none")[y >= 0]
                loss_sum, loss_n = loss_sum + float(ce.sum()), loss_n + int(ce.numel())
            cm += confusion(logits.argmax(1).cpu().numpy().ravel(), y.cpu().numpy().ravel(), K)
    red = all_reduce([loss_sum, loss_n, *cm.ravel().tolist()])
    loss_sum, loss_n = red[0], red[1]
    cm = np.asarray(red[2:], dtype=np.int64).reshape(K, K)
    miou, iou = miou_from_confusion(cm)
    return (loss_sum / loss_n if loss_n else float("nan")), miou, iou


def epoch_score(cfg, val_loss: float, val_miou: float) -> float:
    """The number the best epoch minimises (``cfg.monitor``)."""
    if cfg.monitor == "val_loss":
        return val_loss
    # A few held-out strokes saturate mIoU (often 1.0 after a few epochs); among equal mIoU the
    # lower held-out loss wins, instead of the first epoch that reached it. The loss term
    # (< 5e-4) never outweighs a 1e-3 step of the rounded mIoU.
    return -round(val_miou, 3) + 1e-5 * min(val_loss, 50.0) if not math.isnan(val_miou) else float("nan")


def _step(run: Run, x, y, p) -> float:
    import torch
    cfg = run.cfg
    x, y, p = x.to(run.device), y.to(run.device), p.to(run.device)
    run.opt.zero_grad(set_to_none=True)
    with torch.autocast(torch.device(run.device).type, enabled=run.scaler is not None):
        logits = run.fwd(x)
    loss = sparse_loss(logits.float(), y, p, cfg, run.class_weights)
    if cfg.edge_weight:
        loss = loss + cfg.edge_weight * edge_loss(logits.float(), x)
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        run.scaler.step(run.opt)
        run.scaler.update()
    else:
        loss.backward()
        run.opt.step()
    if run.ema is not None:
        run.ema.update_parameters(run.net)
    if run.sched is not None and cfg.scheduler != "plateau":
        run.sched.step()
    return float(loss.item())


def _train_epoch(run: Run, epoch: int):
    """One epoch of optimizer steps. Returns (losses, stop reason or None)."""
    cfg = run.cfg
    run.net.train()
    base_seed = cfg.seed * 1_000_003 + epoch * 10_007 + run.rank * 101

    def make_batch(b):
        tiles = [run.sampler.draw() for _ in range(cfg.batch_size)]
        return collate(tiles, run.augment, base_seed + b)

    pf = Prefetcher(make_batch, run.steps)
    losses, reason = [], None
    try:
        for b, (x, y, p) in enumerate(pf):
            # dropout/drop-path draw from torch's global RNG: seeded per step, restored after
            with seeded(step_seed(cfg.seed, epoch, b, run.rank), run.device):
                losses.append(_step(run, x, y, p))
            elapsed = run.elapsed()
            ok = run.emit({"event": "batch", "epoch": epoch, "batch": b, "train_loss": losses[-1],
                           "lr": run.opt.param_groups[0]["lr"], "elapsed_s": elapsed})
            over_time = cfg.time_limit_s is not None and elapsed > cfg.time_limit_s
            if run.world > 1:  # every rank must stop at the same step, or DDP hangs
                ok, over_time = all_reduce([float(not ok), float(over_time)], "max")
                ok, over_time = not ok, bool(over_time)
            if not ok:
                reason = "cancelled"
                break
            if over_time:
                reason = "time_limit"
                break
    finally:
        pf.close()
    return losses, reason


def _checkpoint(run: Run, epoch: int, stopped: bool, improved: bool) -> None:
    if run.checkpoint_dir is None or run.rank != 0:  # only rank 0 writes
        return
    from pixlab.training.checkpoint import save_checkpoint
    if (epoch + 1) % run.cfg.checkpoint_every == 0 or stopped:
        save_checkpoint(Path(run.checkpoint_dir) / "last", run.net, run.opt, run.sched, epoch + 1, run.history,
                        run.best, run.sampler.rng.bit_generator.state, run.cfg, run.ema)
    if improved:
        run.make_model(run.best["state"]).save(Path(run.checkpoint_dir) / "best", overwrite=True)


def run_epochs(run: Run, bar=None) -> str:
    """Train from ``run.start_epoch`` until the epochs, the time limit, early stopping or a cancel.

    Returns the stop reason: "epochs", "time_limit", "early_stopping" or "cancelled".
    """
    cfg = run.cfg
    stop_reason = "epochs"
    since_best = 0 if run.best["epoch"] is None else len(run.history) - 1 - run.best["epoch"]
    for epoch in range(run.start_epoch, cfg.epochs):
        losses, reason = _train_epoch(run, epoch)
        stopped = reason is not None
        if reason is not None:
            stop_reason = reason
        if not losses:
            break
        if run.world > 1:  # one set of BatchNorm statistics for validation and the saved weights
            broadcast_buffers(run.net)
            if run.ema is not None:
                broadcast_buffers(run.ema.module)
        val_loss, val_miou, val_iou = validate(run)
        if run.sched is not None and cfg.scheduler == "plateau":
            run.sched.step(val_loss)
        score = epoch_score(cfg, val_loss, val_miou)
        improved = run.best["score"] is None or (not math.isnan(score) and score < run.best["score"])
        if improved:
            run.best = {"score": float(score), "epoch": epoch,
                        "state": {k: v.detach().cpu().clone() for k, v in run.eval_net.state_dict().items()}}
            since_best = 0
        else:
            since_best += 1
        rec = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
               "val_miou": val_miou, "val_iou": val_iou, "lr": run.opt.param_groups[0]["lr"],
               "elapsed_s": run.elapsed(), "steps": len(losses), "best": improved}
        run.history.append(rec)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train=f"{rec['train_loss']:.3f}", val=f"{val_loss:.3f}", miou=f"{val_miou:.3f}")
        _checkpoint(run, epoch, stopped, improved)
        ok = run.emit({"event": "epoch", **rec, "best_epoch": run.best["epoch"]})
        if run.world > 1:
            ok = not all_reduce([float(not ok)], "max")[0]
        if stopped:
            break
        if not ok:
            stop_reason = "cancelled"
            break
        if cfg.early_stopping and since_best >= cfg.patience:
            stop_reason = "early_stopping"
            break
        over = cfg.time_limit_s is not None and run.elapsed() > cfg.time_limit_s
        if run.world > 1:
            over = bool(all_reduce([float(over)], "max")[0])
        if over:
            stop_reason = "time_limit"
            break
    return stop_reason
