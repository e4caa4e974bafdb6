"""Helpers for the browser tests: a JupyterLab server, notebook driving, canvas pixels, mouse drags.

Kept out of conftest.py so that test modules import them under a unique module name (``tests/`` has
its own conftest.py too).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "browser"
# Flags from shared/JUPYTER-NOTES.md: headless, no GPU, nothing that phones home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SKIP_REASON = ("browser tests need Debian's Chromium at /usr/bin/chromium; install it with "
               "`make chromium` (as root: apt-get install -y chromium)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """A running JupyterLab: ``url``, ``token``, ``root`` (its root folder) and REST/kernel helpers."""

    def __init__(self, base: Path):
        self.base = base
        self.root = base / "root"
        self.runtime_dir = base / "runtime"
        for d in ("root", "config", "data", "runtime", "ipython", "settings", "workspaces", "mpl"):
            (base / d).mkdir(parents=True, exist_ok=True)
        # No "get notified about Jupyter news?" toast over the screenshots, no update checks.
        notif = base / "settings" / "@jupyterlab" / "apputils-extension"
        notif.mkdir(parents=True, exist_ok=True)
        (notif / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        self.port = _free_port()
        self.token = secrets.token_hex(24)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(base / "jupyterlab.log", "wb")
        env = dict(os.environ)
        env.update(JUPYTER_CONFIG_DIR=str(base / "config"), JUPYTER_DATA_DIR=str(base / "data"),
                   JUPYTER_RUNTIME_DIR=str(self.runtime_dir), IPYTHONDIR=str(base / "ipython"),
                   MPLCONFIGDIR=str(base / "mpl"), MPLBACKEND="agg", OMP_NUM_THREADS="2",
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                   PYDEVD_DISABLE_FILE_VALIDATION="1")
        env.pop("JUPYTER_TOKEN", None)
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
               f"--LabApp.user_settings_dir={base / 'settings'}", f"--LabApp.workspaces_dir={base / 'workspaces'}",
               "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--LabApp.extension_manager=readonly", "--LabApp.expose_app_in_browser=True"]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self._wait_ready(timeout=90)

    # ---------------------------------------------------------------- server
    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                self.api("status")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.3)
        raise TimeoutError(f"JupyterLab did not answer within {timeout} s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        self.log.flush()
        return (self.base / "jupyterlab.log").read_text(errors="replace")

    def api(self, path: str, method: str = "GET", body=None, token: str | None = None):
        """Call the REST API; returns the decoded JSON (None for an empty answer)."""
        req = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode())
        tok = self.token if token is None else token
        if tok:
            req.add_header("Authorization", f"token {tok}")
        with urllib.request.urlopen(req, timeout=10) as r:
            data = r.read()
        return json.loads(data) if data else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            # The server and the kernels it started share its process group (start_new_session).
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        self.log.close()

    # ---------------------------------------------------------------- notebooks and kernels
    def add_notebook(self, source: Path, name: str, parameters: dict | None = None) -> str:
        """Copy a notebook into the server root with papermill-style injected parameters; returns its name."""
        import nbformat

        if parameters:
            from papermill.iorw import load_notebook_node
            from papermill.parameterize import parameterize_notebook

            nb = parameterize_notebook(load_notebook_node(str(source)), parameters)
        else:
            nb = nbformat.read(source, as_version=4)
        nbformat.write(nb, self.root / name)
        return name

    def shutdown_sessions(self, path: str) -> None:
        """Shut down the kernel(s) of the notebook ``path`` (frees memory for the next test)."""
        for sess in self.api("sessions") or []:
            if sess.get("path") == path:
                self.api(f"sessions/{sess['id']}", method="DELETE")

    def kernel_client(self, kernel_id: str):
        """A started BlockingKernelClient on the same kernel as the browser (via its connection file)."""
        from jupyter_client import BlockingKernelClient

        cf = self.runtime_dir / f"kernel-{kernel_id}.json"
        deadline = time.monotonic() + 30
        while not cf.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        kc = BlockingKernelClient(connection_file=str(cf))
        kc.load_connection_file()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        return kc


def kernel_eval(kc, code: str, timeout: float = 60):
    """Run ``code`` in the kernel; its last line must be an expression whose value is JSON-able.

    The value is printed as JSON by the kernel and parsed here, so the test sees plain Python data.
    """
    lines = code.strip().splitlines()
    body, last = "\n".join(lines[:-1]), lines[-1]
    wrapped = f"{body}\nimport json as _j\nprint('@@JSON@@' + _j.dumps({last}))"
    out: list[str] = []
    errors: list[str] = []

    def hook(msg):
        t = msg["msg_type"]
        if t == "stream":
            out.append(msg["content"]["text"])
        elif t == "error":
            errors.append("\n".join(msg["content"]["traceback"]))

    reply = kc.execute_interactive(wrapped, output_hook=hook, timeout=timeout, store_history=False)
    if errors or reply["content"]["status"] != "ok":
        raise AssertionError(f"kernel code failed:\n{code}\n{''.join(errors)}")
    text = "".join(out)
    marker = text.rfind("@@JSON@@")
    assert marker >= 0, f"no value printed by the kernel: {text!r}"
    return json.loads(text[marker + len("@@JSON@@"):].splitlines()[0])


def poll(fn, timeout: float = 30.0, interval: float = 0.25, what: str = "condition"):
    """Call ``fn`` until it returns something ready (an array, or any other truthy value); return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value is not None and (hasattr(value, "shape") or bool(value)):
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def canvas_pixels(locator):
    """The pixels a ``<canvas>`` shows in the browser, as an (H, W, 4) uint8 array."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    url = locator.evaluate("c => c.toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGBA"))


def drag(page, locator, points, steps: int = 12) -> None:
    """Press the mouse at ``points[0]`` (canvas x, y), move through the others, release at the last."""
    box = locator.bounding_box()
    sx = box["width"] / float(locator.evaluate("c => c.width"))
    sy = box["height"] / float(locator.evaluate("c => c.height"))
    (x0, y0), rest = points[0], points[1:]
    page.mouse.move(box["x"] + x0 * sx, box["y"] + y0 * sy)
    page.mouse.down()
    for x, y in rest:
        page.mouse.move(box["x"] + x * sx, box["y"] + y * sy, steps=steps)
    page.mouse.up()


class Notebook:
    """A notebook open in JupyterLab in ``page`` (uses ``window.jupyterapp``, exposed for tests)."""

    def __init__(self, lab: LabServer, page, name: str, shots: str):
        self.lab, self.page, self.name, self.shots = lab, page, name, shots
        self._n = 0
        self._kc = None

    # The notebook's panel in the page, found by path (not "the current widget": other tabs may be open).
    _PANEL = ("const w = [...window.jupyterapp.shell.widgets('main')]"
              ".find(x => x.context && x.context.path === name);")

    def _js(self, body: str):
        return self.page.evaluate(f"(name) => {{ {self._PANEL} {body} }}", self.name)

    def open(self, timeout: float = 90):
        """Load JupyterLab on this notebook, in a workspace of its own started afresh (``?reset``)."""
        self.page.goto(f"{self.lab.url}/lab/workspaces/{self.shots}/tree/{self.name}?reset&token={self.lab.token}")
        self.page.wait_for_function(f"(name) => {{ if (!window.jupyterapp) return false; {self._PANEL}"
                                    " return !!(w && w.sessionContext); }", arg=self.name, timeout=timeout * 1000)
        self.wait_kernel_ready(timeout)
        return self

    def wait_kernel_ready(self, timeout: float = 90) -> None:
        self.page.wait_for_function(
            f"""(name) => {{ {self._PANEL}
                       const k = w && w.sessionContext.session && w.sessionContext.session.kernel;
                       return !!k && k.connectionStatus === 'connected' && k.status === 'idle'; }}""",
            arg=self.name, timeout=timeout * 1000)

    def kernel_status(self) -> str | None:
        """The kernel status JupyterLab shows ('idle', 'busy', 'restarting', 'autorestarting', 'dead', ...)."""
        return self._js("const k = w.sessionContext.session && w.sessionContext.session.kernel;"
                        " return k ? k.status : null;")

    @property
    def kernel_id(self) -> str:
        return self._js("return w.sessionContext.session.kernel.id;")

    def run_all(self, timeout: float = 180) -> None:
        """Run → Run All Cells (the menu's command, on this notebook), then wait until every cell has run."""
        self._js("window.jupyterapp.shell.activateById(w.id);"
                 " return window.jupyterapp.commands.execute('notebook:run-all-cells');")
        self.wait_idle(timeout)

    def wait_idle(self, timeout: float = 180) -> None:
        """Wait until no cell is queued or running and the kernel is idle (twice in a row, 0.5 s apart)."""
        body = """const k = w.sessionContext.session && w.sessionContext.session.kernel;
                  if (!k || k.status !== 'idle') return false;
                  const prompts = [...w.node.querySelectorAll('.jp-InputPrompt')].map(p => p.textContent);
                  return !prompts.some(t => t.includes('*'));"""
        deadline = time.monotonic() + timeout
        calm = 0
        while time.monotonic() < deadline:
            calm = calm + 1 if self._js(body) else 0
            if calm >= 2:
                return
            time.sleep(0.5)
        self.screenshot("timeout")
        raise TimeoutError(f"{self.name}: cells still running after {timeout} s")

    def errors(self) -> list[str]:
        """``ename: evalue`` of every error output in the notebook."""
        return self._js("""const cells = w.content.model.cells; const out = [];
                           for (let i = 0; i < cells.length; i++) { const c = cells.get(i);
                             if (!c.outputs) continue;
                             for (const o of c.outputs.toJSON()) if (o.output_type === 'error')
                               out.push(o.ename + ': ' + o.evalue); }
                           return out;""")

    def screenshot(self, step: str) -> Path:
        """Save ``test-artifacts/browser/<test>-<nn>-<step>.png`` (what the browser window shows)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self._n += 1
        path = ARTIFACTS / f"{self.shots}-{self._n:02d}-{step}.png"
        self.page.screenshot(path=str(path))
        return path

    # ---------------------------------------------------------------- kernel side
    def kernel(self):
        """A jupyter_client on this notebook's kernel (reconnected after a kernel restart)."""
        kid = self.kernel_id
        if self._kc is None or self._kc_id != kid:
            self.close_kernel_client()
            self._kc, self._kc_id = self.lab.kernel_client(kid), kid
        return self._kc

    def eval(self, code: str, timeout: float = 60):
        """Evaluate Python in the notebook's kernel; see :func:`kernel_eval`."""
        return kernel_eval(self.kernel(), code, timeout)

    def close_kernel_client(self) -> None:
        if self._kc is not None:
            self._kc.stop_channels()
            self._kc = None

    def close(self) -> None:
        """Disconnect the kernel client and shut the notebook's kernel down."""
        self.close_kernel_client()
        self.lab.shutdown_sessions(self.name)


