"""Cancel and time-limit checks while a training run is prepared (before its first optimizer step).

Preparation (reading the images, normalisation statistics, splitting strokes, random-forest
pseudo-labels, building the network) takes seconds on a small image and can take minutes on a large
one. ``TrainConfig.time_limit_s`` counts from the call to :func:`pixlab.train`, so preparation is
part of it, and the Cancel of a training panel (``cancel``) must work during it too. Cancelling
before the first step leaves nothing to return: :class:`TrainingCancelled` is raised.
"""

from __future__ import annotations

import time
import warnings

__all__ = ["TrainingCancelled", "Preparation", "PSEUDO_SHARE"]

# Random-forest pseudo-labels stop at this share of the time limit (their pixel budget aims at ~20 %):
# the rest of the limit is for the network, which is what the user asked to train.
PSEUDO_SHARE = 0.25


class TrainingCancelled(RuntimeError):
    """Training was cancelled before its first optimizer step, so there is no model to return."""


class Preparation:
    """The steps of preparing a run: tells the callbacks, checks ``cancel`` and the clock.

    Parameters
    ----------
    cancel : threading.Event or None
        Set by a user (the Cancel button) to stop.
    callbacks : sequence of callables
        Training callbacks; each gets ``{"event": "prepare", "phase": ..., "elapsed_s": ...}``, and
        returning ``False`` cancels, as during training.
    t_start : float
        ``time.monotonic()`` at the call to :func:`pixlab.train`.
    time_limit_s : float or None
        The run's time limit.
    """

    def __init__(self, cancel=None, callbacks=(), t_start: float | None = None, time_limit_s=None):
        self.cancel, self.callbacks = cancel, tuple(callbacks)
        self.t_start = time.monotonic() if t_start is None else t_start
        self.time_limit_s = time_limit_s
        self.phase_name = "starting"

    def elapsed(self) -> float:
        return time.monotonic() - self.t_start

    def phase(self, name: str) -> None:
        """Start phase ``name`` ("reading images", ...): tell the callbacks, then :meth:`check`."""
        self.phase_name = name
        stop = False
        ev = {"event": "prepare", "phase": name, "elapsed_s": self.elapsed()}
        for cb in self.callbacks:
            try:
                stop |= cb(ev) is False
            except Exception as e:  # as in the training loop: a broken plot must not kill the run
                warnings.warn(f"training callback {cb!r} failed: {e}")
        if stop and self.cancel is not None:
            self.cancel.set()
        self.check(stop)

    def check(self, stop: bool = False) -> None:
        """Raise :class:`TrainingCancelled` when ``cancel`` is set (cheap: call it inside long loops)."""
        if stop or (self.cancel is not None and self.cancel.is_set()):
            raise TrainingCancelled(f"training was cancelled while {self.phase_name}, before its first step: "
                                    "no model was trained")

    def over_share(self, share: float) -> bool:
        """Whether more than ``share`` of the time limit has gone (never without a limit)."""
        return self.time_limit_s is not None and self.elapsed() > share * self.time_limit_s
