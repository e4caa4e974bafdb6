"""Handing freed memory back to the operating system between the stages of a training run.

Pseudo-labels, the training loop and the post-training check each allocate and free hundreds of MB
of short-lived arrays (forest features, normalised blocks, batches) in several threads. glibc keeps
much of that in its per-thread heaps after it is freed, so the resident size of a long run on a
slide ratchets up stage after stage (0.2 GB on the whole-slide benchmark) although nothing holds it.
:func:`release_memory` asks the allocator to return it (``malloc_trim``, what dask's workers do); it
changes no setting and is a no-op where glibc is absent.
"""

from __future__ import annotations

import ctypes
import gc
import sys

__all__ = ["release_memory"]

_LIBC = None


def release_memory() -> bool:
    """Collect garbage and return freed heap memory to the OS; True when ``malloc_trim`` ran.

    Examples
    --------
    >>> release_memory() in (True, False)
    True
    """
    global _LIBC
    gc.collect()
    if not sys.platform.startswith("linux"):
        return False
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
    except (OSError, AttributeError):  # musl or another libc without malloc_trim
        return False
    return True
