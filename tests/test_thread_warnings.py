"""A training thread collects its own warnings; other threads' warnings and the filters are untouched."""

import threading
import warnings

from pixlab.widgets.kernel_loop import call_in_kernel
from pixlab.widgets.thread_warnings import collect_warnings


def test_only_the_collecting_thread_is_captured(recwarn):
    filters = list(warnings.filters)
    inside, started, release = [], threading.Event(), threading.Event()

    def worker():
        with collect_warnings() as caught:
            started.set()
            warnings.warn("from the training thread")
            release.wait(5)
        inside.extend(str(w) for w in caught)

    t = threading.Thread(target=worker)
    t.start()
    started.wait(5)
    warnings.warn("from the main thread while training runs")  # not swallowed by the worker
    release.set()
    t.join(5)
    assert inside == ["from the training thread"]
    assert [str(w.message) for w in recwarn] == ["from the main thread while training runs"]
    assert warnings.filters == filters


def test_call_in_kernel_runs_at_once_outside_a_kernel():
    seen = []
    t = threading.Thread(target=call_in_kernel, args=(seen.append, 1))
    t.start()
    t.join()
    assert seen == [1]
