"""Real JupyterLab + real Chromium for the widget tests (marked ``browser``).

- ``lab``: one JupyterLab server for the session on a free 127.0.0.1 port, with a random token, its
  own temporary root/config/data/runtime/IPython/settings folders and the offline flags checked in
  shared/JUPYTER-NOTES.md (``labtools.LabServer``).
- ``page``: a Playwright (Python) page in Debian's Chromium (``/usr/bin/chromium``; never
  ``playwright install``), headless, fresh profile; one per test module.
- ``labtools.Notebook``: open a notebook, Run All, wait for the kernel to be idle, read error outputs,
  take screenshots into ``test-artifacts/browser/``, and evaluate Python in the notebook's kernel
  through a second jupyter_client (kernel-side checks while the browser drives the widgets).

Every test here is skipped, with the reason, when ``/usr/bin/chromium`` is absent (``make chromium``
installs it as root).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from labtools import CHROMIUM, CHROMIUM_ARGS, SKIP_REASON, LabServer


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)  # each needs a JupyterLab server (and most a browser)
            if not CHROMIUM.is_file():
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@pytest.fixture(scope="session")
def lab():
    """One JupyterLab server for all browser tests (loopback, token, temporary everything)."""
    base = Path(tempfile.mkdtemp(prefix="pixlab-lab-"))
    server = LabServer(base)
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def browser_context(tmp_path_factory):
    """A headless Chromium (Debian's) with a fresh profile, via Playwright for Python."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    pw = sync_playwright().start()
    ctx = pw.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 1000}, offline=False)
    yield ctx
    ctx.close()
    pw.stop()


@pytest.fixture(scope="module")
def page(browser_context):
    p = browser_context.new_page()
    p.set_default_timeout(60_000)
    yield p
    p.close()
