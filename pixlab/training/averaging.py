"""Exponential moving average of the weights, with a warm-up so short runs are not averaged with their start.

With a fixed decay d the average after n steps still holds d**n of the random initial weights:
0.995**70 = 0.70, so a 70-step run (a resnet UNet on a CPU in three minutes) validates and saves mostly
its initialisation. The decay therefore grows with the number of averaged steps, as in TensorFlow's
``ExponentialMovingAverage(num_updates=...)`` and timm's ``ModelEmaV3`` warm-up:
``d_n = min(d, (1 + n) / (10 + n))``; after ~2000 steps it is the configured decay.
"""

from __future__ import annotations

__all__ = ["warmup_decay", "weight_average"]


def warmup_decay(decay: float, n_averaged: int) -> float:
    """The decay used for the update after ``n_averaged`` averaged steps.

    Examples
    --------
    >>> round(warmup_decay(0.995, 0), 3), round(warmup_decay(0.995, 20), 3), warmup_decay(0.995, 10_000)
    (0.1, 0.7, 0.995)
    """
    return min(float(decay), (1.0 + n_averaged) / (10.0 + n_averaged))


def _ema_update(decay: float):
    import torch

    @torch.no_grad()
    def update(ema_params, current_params, num_averaged):
        # num_averaged counts the updates before this one (AveragedModel.n_averaged, kept in its
        # state dict, so a resumed run continues the same schedule).
        d = warmup_decay(decay, int(num_averaged))
        if torch.is_floating_point(ema_params[0]) or torch.is_complex(ema_params[0]):
            torch._foreach_lerp_(ema_params, current_params, 1.0 - d)
        else:  # integer buffers (BatchNorm's num_batches_tracked): follow the network
            for e, c in zip(ema_params, current_params):
                e.copy_(c)

    return update


def weight_average(net, decay: float):
    """A ``torch.optim.swa_utils.AveragedModel`` of ``net`` with the warm-up decay above.

    ``use_buffers=True``: BatchNorm running statistics are averaged with the weights, so the average
    is usable as it is (no extra pass over the data to re-estimate them).
    """
    from torch.optim.swa_utils import AveragedModel
    return AveragedModel(net, multi_avg_fn=_ema_update(decay), use_buffers=True)
