"""The project folder the ordered notebooks share (``runs/<name>/``): :class:`Project`.

``images.json`` (the images), ``labels/<stem>.labels.png`` (brush labels + JSON sidecar with class
names), ``model/`` (the bundle), ``predictions/``, ``figures/``, ``executed/`` (notebooks run by
:func:`pixlab.app.notebooks.run_notebooks`) and ``run.json`` (pixlab version + parameters).
Notebooks call its methods instead of holding logic. Its images, labels and prediction jobs are
:mod:`pixlab.app.project_inputs`.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from pixlab._atomic import atomic_path
from pixlab.app.project_inputs import SAMPLE_IHC, InputsMixin, _read_json, _write_json  # noqa: F401

__all__ = ["Project", "RUN_FORMAT", "RUN_FORMAT_VERSION", "SAMPLE_IHC", "project_root"]


def project_root(start=None) -> Path:
    """The one folder relative project paths (``run_dir="runs/demo"``) are resolved against.

    ``$PIXLAB_ROOT`` when set; else the nearest folder at or above ``start`` (default: the current
    directory) holding pixlab's ``pyproject.toml`` (the repository root, also when JupyterLab runs a
    notebook with ``notebooks/`` as its working directory); else ``start`` itself.
    """
    import os
    env = os.environ.get("PIXLAB_ROOT", "").strip()
    if env:
        return Path(env).expanduser().absolute()
    here = Path(start or Path.cwd()).absolute()
    for folder in (here, *here.parents):
        toml = folder / "pyproject.toml"
        try:
            if toml.is_file() and 'name = "pixlab"' in toml.read_text(encoding="utf-8", errors="replace"):
                return folder
        except OSError:
            continue
    return here

RUN_FORMAT = "pixlab-run"
RUN_FORMAT_VERSION = 1


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _pixlab_version() -> str:
    from pixlab import __version__
    return __version__


def _release(version: str) -> tuple:
    """(major, minor) of a version string; runs are compatible within one minor release."""
    from packaging.version import InvalidVersion, Version
    try:
        return Version(str(version)).release[:2]
    except InvalidVersion:
        return (str(version),)


class Project(InputsMixin):
    """The folder the four notebooks share (``runs/<name>/`` by default).

    Parameters
    ----------
    run_dir : str or PathLike
        The project folder (created when something is written). A relative path is relative to :func:`project_root`
        (``$PIXLAB_ROOT``, else the repository root found from the working directory, else the working
        directory), so ``runs/demo`` is one folder for ``pixlab run`` and for a notebook that JupyterLab
        runs in ``notebooks/``.
    check_version : bool
        Refuse a folder written by an incompatible pixlab (see :meth:`check_version`).

    Raises
    ------
    ValueError
        If the folder was written by an incompatible pixlab version (see :meth:`check_version`).

    Examples
    --------
    >>> p = Project("runs/demo")                                   # doctest: +SKIP
    >>> p.set_images(["sample:ihc"])                                # doctest: +SKIP
    [PosixPath('.../runs/demo/images/ihc.tif')]
    """

    def __init__(self, run_dir, *, check_version: bool = True):
        if run_dir is None or str(run_dir).strip() == "":
            raise ValueError("run_dir is empty; give the project folder, e.g. run_dir='runs/demo'")
        path = Path(run_dir).expanduser()
        self.root = path if path.is_absolute() else project_root() / path
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"run_dir '{self.root}' is a file; give a folder, e.g. runs/demo")
        if check_version:
            self.check_version()

    def __repr__(self) -> str:
        return f"Project({str(self.root)!r})"

    # ---------------------------------------------------------------- paths
    @property
    def images_file(self) -> Path:
        """``images.json``: the list of image paths (absolute)."""
        return self.root / "images.json"

    @property
    def settings_file(self) -> Path:
        """``settings.json``: choices made in 01 that later notebooks reuse (channels)."""
        return self.root / "settings.json"

    @property
    def run_file(self) -> Path:
        """``run.json``: pixlab version and parameters of the last run."""
        return self.root / "run.json"

    @property
    def images_dir(self) -> Path:
        """``images/``: copies of bundled sample images."""
        return self.root / "images"

    @property
    def labels_dir(self) -> Path:
        """``labels/``: ``<image stem>.labels.png`` + ``.labels.json`` per image."""
        return self.root / "labels"

    @property
    def model_dir(self) -> Path:
        """``model/``: the trained model bundle."""
        return self.root / "model"

    @property
    def predictions_dir(self) -> Path:
        """``predictions/``: outputs of 04."""
        return self.root / "predictions"

    @property
    def figures_dir(self) -> Path:
        """``figures/``: PNG figures (loss curve, diagnostics, overlays)."""
        return self.root / "figures"

    @property
    def executed_dir(self) -> Path:
        """``executed/``: notebooks as run by :func:`run_notebooks`, outputs included."""
        return self.root / "executed"

    # ---------------------------------------------------------------- version
    def run_info(self) -> dict | None:
        """The content of ``run.json``, or None when there is none."""
        if not self.run_file.is_file():
            return None
        info = _read_json(self.run_file, "run file")
        if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
            raise ValueError(f"'{self.run_file}' is not a pixlab run file (no \"format\": \"{RUN_FORMAT}\"); "
                             "delete it or use another run folder")
        return info

    def check_version(self) -> None:
        """Raise a ValueError if ``run.json`` was written by an incompatible pixlab.

        Runs are compatible within one minor release (0.1.x with 0.1.y) and one run-format version.
        """
        info = self.run_info()
        if info is None:
            return
        theirs, ours = str(info.get("pixlab", "unknown")), _pixlab_version()
        fmt = int(info.get("run_format", 0) or 0)
        if fmt > RUN_FORMAT_VERSION or _release(theirs) > _release(ours):
            raise ValueError(f"run folder '{self.root}' was written by a newer pixlab {theirs} (this is "
                             f"pixlab {ours}); upgrade pixlab, or use another run folder")
        if fmt != RUN_FORMAT_VERSION or _release(theirs) != _release(ours):
            raise ValueError(f"run folder '{self.root}' was written by an older pixlab {theirs} (this is "
                             f"pixlab {ours}), whose model and outputs may not load; start it afresh with "
                             f"`pixlab run --overwrite` (your labels are kept) or choose another --name / run_dir")

    def write_run_info(self, **fields_) -> dict:
        """Create or update ``run.json`` (format, pixlab version, plus ``fields_``), atomically."""
        info = self.run_info() or {"format": RUN_FORMAT, "run_format": RUN_FORMAT_VERSION, "created": _now()}
        info.update(format=RUN_FORMAT, run_format=RUN_FORMAT_VERSION, pixlab=_pixlab_version(),
                    updated=_now(), **fields_)
        self.root.mkdir(parents=True, exist_ok=True)
        _write_json(self.run_file, info)
        return info

    # ---------------------------------------------------------------- model, figures
    @property
    def has_model(self) -> bool:
        """Whether ``model/`` holds a model bundle."""
        return (self.model_dir / "metadata.json").is_file()

    def load_model(self):
        """The model bundle in ``model/`` (FileNotFoundError naming 02_train when absent)."""
        from pixlab.model.bundle import load_model
        if not self.has_model:
            raise FileNotFoundError(f"no trained model in '{self.model_dir}'; run notebook 02_train first "
                                    f"(with run_dir='{self.root}')")
        return load_model(self.model_dir)

    def save_figure(self, fig, name: str, dpi: int = 100) -> Path:
        """Save a matplotlib figure as ``figures/<name>`` (PNG unless the name says otherwise), atomically."""
        name = name if Path(name).suffix else f"{name}.png"
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        path = self.figures_dir / name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=Path(name).suffix[1:])
        return path

    def outputs(self) -> dict[str, list[str]]:
        """What the project folder holds: images, labels, model, predictions, figures, executed notebooks."""
        def ls(folder: Path, pattern="*"):
            return sorted(str(p) for p in folder.glob(pattern) if not p.name.startswith(".")) if folder.is_dir() else []
        return {"labels": ls(self.labels_dir, "*.labels.*"), "model": ls(self.model_dir),
                "predictions": ls(self.predictions_dir), "figures": ls(self.figures_dir),
                "executed": ls(self.executed_dir, "*.ipynb")}
