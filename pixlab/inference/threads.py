"""How many CPU threads the network gets in ``predict_file``: measured in the running pipeline.

On a CPU the network shares the cores with the reader and encoder threads. torch's OpenMP threads
spin at barriers, so when the network is cheap next to decoding and encoding (a small model, or a
fast machine's I/O), giving it every core makes it wait on cores the I/O threads hold: on 2 cores
a 1x1 convolution ran 33x slower per batch with 2 threads than with 1 while other work ran, and
``predict_file`` took 3.2x longer (bench/pipeline_ceiling.py: 10.8 s vs 3.4 s for 4096 x 4096).
When the network is the expensive part (a UNet on a CPU), all cores are faster. Which case holds
depends on the network, the image's compression and the machine, so :class:`ThreadTrial` measures
it on the image itself: after a warm-up band, one band of batches with a single thread and one with
every thread (cut short once it is slower), and keeps the faster for the rest.
"""

from __future__ import annotations

import time

__all__ = ["ThreadTrial"]


class ThreadTrial:
    """Per-batch thread counts for the network: a short trial of ``n`` against 1, then the faster.

    Parameters
    ----------
    n : int
        The threads the network would get without a trial (the caller's ``torch.get_num_threads()``).
    n_batches : int
        Batches in the whole run.
    window : int
        Batches per measured window (about one band of tiles, so that each window normalises the
        same number of bands).

    Attributes
    ----------
    chosen : int or None
        The thread count kept after the trial (``n`` when no trial ran: too few batches to repay it).
    measured : dict
        Seconds per batch of each measured option.
    """

    def __init__(self, n: int, n_batches: int, window: int):
        self.n, self.window = int(n), max(2, int(window))
        # warm-up, n, 1, and at least as many batches again to profit from the choice
        self.active = self.n > 1 and n_batches >= 6 * self.window
        self.chosen = None if self.active else self.n
        self.measured: dict = {}
        self._t0 = None

    def threads(self, b: int) -> int:
        """Threads for batch ``b`` (batches are numbered from 0 in order)."""
        if self.chosen is not None:
            return self.chosen
        w = self.window
        if b in (w, 2 * w):  # a measured window starts
            self._t0 = time.perf_counter()
        return self.n if b >= 2 * w else 1  # warm-up and the first window with one thread (cheap)

    def done(self, b: int) -> None:
        """Batch ``b`` (its network, blending and hand-over) is finished."""
        if self.chosen is not None:
            return
        w = self.window
        if b == 2 * w - 1:
            self.measured[1] = (time.perf_counter() - self._t0) / w
        elif 2 * w <= b < 3 * w:
            spent = time.perf_counter() - self._t0
            # already slower than the whole one-thread window: stop the trial (it can cost 30x per batch)
            if spent > self.measured[1] * w or b == 3 * w - 1:
                self.measured[self.n] = spent / (b - 2 * w + 1)
                self.chosen = min(self.measured, key=lambda k: (self.measured[k], -k))
