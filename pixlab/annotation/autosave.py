"""Autosave: a debounce thread that saves a moment after the last edit.

The thread only calls the session's ``flush`` (which writes dirty chunks atomically); it changes no
process-wide state (no umask, thread-count or warning-filter changes), so it can run beside training.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

__all__ = ["Autosaver"]


class Autosaver:
    """Call ``flush()`` ``delay`` seconds after the last :meth:`touch` (a debounce), in a daemon thread.

    Parameters
    ----------
    flush : callable
        Writes pending edits; called from the thread.
    on_error : callable
        ``on_error(message)`` when ``flush`` raises (the thread keeps running; the view shows it).
    delay : float
        Seconds of quiet after the last edit before saving.
    """

    def __init__(self, flush: Callable[[], object], on_error: Callable[[str], None], delay: float = 0.5):
        self._flush = flush
        self._on_error = on_error
        self.delay = float(delay)
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def started(self) -> bool:
        """Whether the thread was ever started (it starts on the first edit)."""
        return self._thread is not None

    def touch(self) -> None:
        """An edit happened: save ``delay`` seconds from now (unless another edit comes first)."""
        with self._cond:
            if self._closed:
                return
            self._deadline = time.monotonic() + self.delay
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="pixlab-autosave", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._deadline is None or time.monotonic() < self._deadline):
                    timeout = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
                    self._cond.wait(timeout)
                if self._closed:
                    return
                self._deadline = None
            try:
                self._flush()
            except Exception as e:  # keep the thread alive; the view shows the message
                self._on_error(str(e))

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (pending edits are the caller's to flush)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
