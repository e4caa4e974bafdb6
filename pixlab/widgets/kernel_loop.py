"""Hand widget and Bokeh updates from worker threads to the kernel's IO loop.

ipywidgets and jupyter_bokeh send comm messages from whatever thread changes a trait or streams
data, and nothing guards that (shared/STYLE.md). Worker threads (training) therefore call
:func:`call_in_kernel`: in a Jupyter kernel the update runs on the kernel's IO loop (tornado's
``add_callback`` is thread-safe); outside a kernel (scripts, tests) or on the main thread it runs at once.
"""

from __future__ import annotations

import threading

__all__ = ["call_in_kernel"]


def _kernel_loop():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None) if shell is not None else None
    return getattr(kernel, "io_loop", None)


def call_in_kernel(fn, *args) -> None:
    """Run ``fn(*args)`` on the kernel's IO loop (at once outside a kernel or on the main thread)."""
    loop = _kernel_loop()
    if loop is None or threading.current_thread() is threading.main_thread():
        fn(*args)
    else:
        loop.add_callback(fn, *args)
