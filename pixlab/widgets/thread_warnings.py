"""Collect the warnings raised in one thread without touching other threads' warnings.

``warnings.catch_warnings()`` swaps the warnings module's state for the whole process: a training
thread using it would capture (or hide) the warnings of the kernel's cells, the autosave and the
preview, and restoring it at the end races with any other thread doing the same. Instead one
``showwarning`` hook is put in place (under a lock, re-installed if something replaced it): a warning
raised in a thread that is collecting goes to that thread's list, every other warning goes on to the
previous hook unchanged. Python's filters still apply as everywhere (a warning already shown from the
same line is not repeated unless the filters say "always").
"""

from __future__ import annotations

import contextlib
import threading
import warnings

__all__ = ["collect_warnings"]

_local = threading.local()
_lock = threading.Lock()
_previous = {"hook": None}


def _hook(message, category, filename, lineno, file=None, line=None):
    sink = getattr(_local, "sink", None)
    if sink is not None:
        sink.append(message)
    elif _previous["hook"] is not None:
        _previous["hook"](message, category, filename, lineno, file, line)


@contextlib.contextmanager
def collect_warnings():
    """Within the block, warnings raised in this thread are appended to the yielded list instead of shown."""
    with _lock:
        if warnings.showwarning is not _hook:
            _previous["hook"], warnings.showwarning = warnings.showwarning, _hook
    outer = getattr(_local, "sink", None)
    _local.sink = []
    try:
        yield _local.sink
    finally:
        _local.sink = outer
