"""torch.distributed helpers for DDP training under torchrun (no-ops in a single process)."""

from __future__ import annotations

__all__ = ["dist_info", "broadcast_buffers", "all_reduce"]


def dist_info() -> tuple[int, int]:
    """(rank, world_size) under torch.distributed (torchrun), else (0, 1)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast_buffers(net, src: int = 0) -> None:
    """Give every rank the buffers (BatchNorm running statistics) of rank ``src``.

    DDP broadcasts buffers before each forward pass, so after an epoch's last step each rank holds
    statistics updated with its own batch only.
    """
    import torch.distributed as dist
    for b in net.buffers():
        dist.broadcast(b.data, src)


def all_reduce(values, op="sum"):
    """Reduce a list of floats across ranks (no-op in a single process)."""
    import torch
    import torch.distributed as dist
    if dist_info()[1] == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t.cpu().tolist()
