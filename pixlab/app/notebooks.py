"""Executing the ordered notebooks headless with papermill: :func:`run_notebooks`.

A failing cell stops the run with a :class:`NotebookError` that names the notebook and the cell;
the executed notebook, error included, is kept. Papermill is imported when a run starts.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pixlab._atomic import atomic_path
from pixlab.app.parameters import find_notebooks, notebook_parameters, read_params_file, validate_parameters
from pixlab.app.project import Project

__all__ = ["NotebookError", "RunResult", "run_notebooks"]


class NotebookError(RuntimeError):
    """A notebook failed during :func:`run_notebooks`.

    Attributes
    ----------
    notebook : str
        File name, e.g. ``02_train.ipynb``.
    executed : pathlib.Path or None
        The executed notebook, error included.
    cell_index : int or None
        Index of the failing cell in the executed notebook.
    execution_count : int or None
        The ``In [n]`` number of the failing cell.
    ename, evalue : str
        The exception's class name and message.
    """

    def __init__(self, message, *, notebook, executed=None, cell_index=None, execution_count=None,
                 ename="", evalue=""):
        super().__init__(message)
        self.notebook, self.executed = notebook, executed
        self.cell_index, self.execution_count = cell_index, execution_count
        self.ename, self.evalue = ename, evalue


@dataclass
class RunResult:
    """What :func:`run_notebooks` did.

    Attributes
    ----------
    run_dir : pathlib.Path
    executed : list of pathlib.Path
        Executed notebooks, in order.
    seconds : dict of str to float
        Wall-clock seconds per notebook.
    parameters : dict
        The parameters given (checked), without the runner's own.
    """

    run_dir: Path
    executed: list
    seconds: dict
    parameters: dict

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds.values()))


def _check_kernel(kernel: str | None) -> None:
    if kernel is None:
        return
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    ksm = KernelSpecManager()
    try:
        ksm.get_kernel_spec(kernel)
    except NoSuchKernel:
        names = sorted(ksm.find_kernel_specs())
        raise ValueError(f"Jupyter kernel {kernel!r} is not installed (installed: {', '.join(names) or 'none'}); "
                         f"omit --kernel to use this Python, or install it with `make kernel`") from None


def _kernel_arguments(kernel: str | None) -> list[str]:
    """Extra kernel arguments: quiet ipykernel's start-up warnings (cell errors still reach the notebook)."""
    if kernel is not None:
        from jupyter_client.kernelspec import KernelSpecManager
        argv = KernelSpecManager().get_kernel_spec(kernel).argv
        if not any("ipykernel" in a for a in argv):
            return []
    return ["--IPKernelApp.log_level=ERROR"]


def _failing_cell_source(nb_path: Path, exec_count, cell_index) -> str:
    """First code line of the failing cell, found by execution count (papermill inserts marker cells)."""
    try:
        import nbformat
        cells = nbformat.read(str(nb_path), as_version=4).cells
        cell = next((c for c in cells if c.cell_type == "code" and exec_count is not None
                     and c.get("execution_count") == exec_count), cells[int(cell_index)])
        src = cell.source.strip().splitlines()
        first = next((line for line in src if line.strip() and not line.lstrip().startswith("#")), src[0] if src else "")
        return first.strip()[:80]
    except Exception:  # best effort: the message is complete without the source line
        return ""


def _notebook_error(notebook: str, out: Path, failure: Exception) -> NotebookError:
    """One message naming the notebook, the failing cell (``In [n]`` and its first line) and the kept copy."""
    from papermill.exceptions import PapermillExecutionError
    if not isinstance(failure, PapermillExecutionError):
        return NotebookError(f"notebook {notebook} stopped: {type(failure).__name__}: {failure}; what ran is in "
                             f"'{out}'", notebook=notebook, executed=out, ename=type(failure).__name__,
                             evalue=str(failure))
    src = _failing_cell_source(out, failure.exec_count, failure.cell_index)
    cell = f"cell In [{failure.exec_count}]" if failure.exec_count else f"cell #{failure.cell_index}"
    evalue = str(failure.evalue).strip().splitlines()[0] if str(failure.evalue).strip() else ""
    return NotebookError(
        f"notebook {notebook} failed at {cell}" + (f" (`{src}`)" if src else "")
        + f": {failure.ename}: {evalue}; the executed notebook with the error is '{out}'",
        notebook=notebook, executed=out, cell_index=failure.cell_index, execution_count=failure.exec_count,
        ename=failure.ename, evalue=str(failure.evalue))


def _prepare_run_dir(project: Project, overwrite: bool) -> None:
    """Refuse a foreign or incompatible folder unless ``overwrite``; with it, clear previous outputs."""
    root = project.root
    if not root.exists():
        return
    foreign = not project.run_file.is_file() and any(root.iterdir())
    if not overwrite:
        if foreign:
            raise FileExistsError(f"run folder '{root}' exists and was not made by `pixlab run`; pass --overwrite "
                                  "to use it anyway (labels/ is kept) or choose another --name")
        return  # a pixlab run folder of this version: re-running it replaces its outputs
    # Start afresh: drop outputs, keep the user's annotations (labels/) and the images they point at.
    for name in ("model", "predictions", "figures", "executed", "run.json", "images.json", "settings.json"):
        p = root / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def run_notebooks(name: str = "demo", params: dict | None = None, *, params_file=None,
                  texts: Sequence[tuple[str, str]] = (), notebooks=None, runs_dir="runs", overwrite: bool = False,
                  kernel: str | None = None, progress: bool = False, log=print, start_timeout: float = 120) -> RunResult:
    """Execute the ordered notebooks with papermill into ``<runs_dir>/<name>/executed/``.

    Every notebook gets ``run_dir=<runs_dir>/<name>`` (absolute) and ``interactive=False``, plus the
    parameters it declares. All parameters are checked before the first notebook starts.

    Parameters
    ----------
    name : str
        Run name: letters, digits, ``.``, ``_``, ``-``.
    params : dict, optional
        Parameter values (win over ``params_file``).
    params_file : path, optional
        YAML or JSON mapping of parameter values.
    texts : list of (name, text)
        ``-p name value`` pairs from the command line (win over both).
    notebooks : path, optional
        Folder of ``NN_name.ipynb`` notebooks (see :func:`find_notebooks`).
    runs_dir : path
        Parent folder of run folders.
    overwrite : bool
        Use a run folder that was not made by this pixlab version (or not by ``pixlab run``); its
        outputs are removed first, ``labels/`` is kept. Without it, re-running a run folder of this
        pixlab version replaces its outputs.
    kernel : str, optional
        Jupyter kernel name; default the notebooks' kernel (``python3``), which jupyter_client starts
        with the Python running this function.
    progress : bool
        Show papermill's per-cell progress bar.
    log : callable or None
        Where one status line per notebook goes (``print`` by default).
    start_timeout : float
        Seconds to wait for a kernel to start (a loaded 2-core machine can take a while).

    Returns
    -------
    RunResult

    Raises
    ------
    ValueError, FileNotFoundError, FileExistsError
        Bad name, parameters, paths, kernel or run folder - before any notebook runs.
    NotebookError
        A notebook failed; its executed copy (with the error) is kept and named in the message.
    """
    log = log or (lambda *_: None)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ValueError(f"run name {name!r} is not valid; use letters, digits, '.', '_' and '-', e.g. --name demo")
    nbs = find_notebooks(notebooks)
    declared = notebook_parameters(nbs)
    given: dict = {}
    sources: dict = {}
    if params_file is not None:
        given.update(read_params_file(params_file))
        sources.update({k: f"from {params_file}" for k in given})
    if params:
        given.update(params)
        sources.update({k: "given" for k in params})
    values = validate_parameters(given, declared, texts=texts, sources=sources)
    _check_kernel(kernel)

    # --overwrite is the escape hatch for a folder of another pixlab version, so check only without it.
    project = Project(Path(runs_dir) / name, check_version=not overwrite)
    _prepare_run_dir(project, overwrite)
    project.executed_dir.mkdir(parents=True, exist_ok=True)
    record = [{"notebook": nb.name, "status": "pending"} for nb in nbs]
    project.write_run_info(name=name, status="running", parameters=values, notebooks=record,
                           notebooks_dir=str(nbs[0].parent.absolute()), kernel=kernel)

    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    extra = _kernel_arguments(kernel)
    executed, seconds = [], {}
    for i, nb in enumerate(nbs):
        out = project.executed_dir / nb.name
        inject = {k: v for k, v in values.items() if k in declared and nb.name in declared[k].notebooks}
        own = {"run_dir": str(project.root), "interactive": False}
        inject.update({k: v for k, v in own.items() if k in declared and nb.name in declared[k].notebooks})
        log(f"[{i + 1}/{len(nbs)}] {nb.name} ...")
        t0 = time.monotonic()
        failure = None
        # The executed notebook is written to a temporary name and renamed when papermill is done -
        # also when a cell failed, so the error stays visible in the kept notebook.
        try:
            with atomic_path(out) as tmp:
                try:
                    pm.execute_notebook(str(nb), tmp, parameters=inject, kernel_name=kernel, progress_bar=progress,
                                        cwd=os.getcwd(), start_timeout=start_timeout, log_output=False,
                                        extra_arguments=extra)
                except PapermillExecutionError as e:
                    failure = e
                except Exception as e:  # kernel died, timeout, ...: keep what ran, if anything did
                    if os.path.getsize(tmp) == 0:
                        raise
                    failure = e
        except BaseException:
            record[i].update(status="interrupted")
            project.write_run_info(status="interrupted", notebooks=record)
            raise
        seconds[nb.name] = round(time.monotonic() - t0, 1)
        record[i].update(status="failed" if failure else "ok", seconds=seconds[nb.name], executed=str(out))
        if failure is not None:
            project.write_run_info(status="failed", notebooks=record)
            raise _notebook_error(nb.name, out, failure)
        executed.append(out)
        log(f"[{i + 1}/{len(nbs)}] {nb.name} ok ({seconds[nb.name]:.0f} s)")
    project.write_run_info(status="ok", notebooks=record, seconds_total=round(sum(seconds.values()), 1))
    return RunResult(project.root, executed, seconds, values)
