"""Run the ordered notebooks headless, and the project folder they share.

Two halves, both core (no Jupyter imports at module level; papermill is imported when a run starts):

- :class:`Project` - the folder ``runs/<name>/`` the notebooks read and write: ``images.json`` (the
  images), ``labels/<stem>.labels.png`` (brush labels + JSON sidecar with class names), ``model/`` (the
  bundle), ``predictions/``, ``figures/``, ``executed/`` (notebooks run by :func:`run_notebooks`) and
  ``run.json`` (pixlab version + parameters). Notebooks call its methods instead of holding logic.
- :func:`run_notebooks` - executes ``notebooks/NN_*.ipynb`` in order with papermill. Parameters come
  from a YAML/JSON file, a dict and ``-p key value`` pairs, and are checked against every notebook's
  ``parameters`` cell (papermill's ``inspect_notebook``) and :class:`pixlab.TrainConfig` *before* the
  first notebook starts. A failing cell stops the run with a :class:`NotebookError` that names the
  notebook and the cell; the executed notebook, error included, is kept.

Parameter cells follow papermill's style, one per line: ``name: type = value  # help``. Supported
type names: ``str``, ``int``, ``float``, ``bool``, ``list``, ``list[str]``, ``list[int]``, ``dict``;
a line without a type takes any value (read as YAML from the command line).
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from pixlab._atomic import atomic_path, atomic_write

__all__ = ["Project", "NotebookError", "Parameter", "RunResult", "find_notebooks", "notebook_parameters",
           "validate_parameters", "read_params_file", "config_from_parameters", "run_notebooks",
           "check_setup", "RUN_FORMAT", "RUN_FORMAT_VERSION", "SAMPLE_IHC"]

RUN_FORMAT = "pixlab-run"
RUN_FORMAT_VERSION = 1
SAMPLE_IHC = "sample:ihc"
NOTEBOOK_PATTERN = re.compile(r"^\d\d_\w+\.ipynb$")

# Parameters that every notebook shares and that the runner sets itself.
RUNNER_OWNED = ("run_dir", "interactive")
# Parameters holding input paths: checked to exist before any notebook runs.
PATH_PARAMETERS = ("images", "inputs", "labels_from", "init_from", "weights_path")
# TrainConfig fields a notebook declares with a "none" sentinel, because papermill's parameter parser
# only reads simple annotations (``float | None`` lines are silently skipped by inspect_notebook).
_NONE_SENTINELS = {"time_limit_s": 0, "patches_per_epoch": 0, "weights_path": "", "channels": [],
                   "class_weights": [], "fixed_range": []}
_IMAGE_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".png", ".jpg", ".jpeg", ".btf")


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


def _write_json(path: Path, obj) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")


def _read_json(path: Path, what: str):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} '{path}' is not valid JSON ({e}); fix or delete it") from None


# =============================================================================================
# The project folder
# =============================================================================================
class Project:
    """The folder the four notebooks share (``runs/<name>/`` by default).

    Parameters
    ----------
    run_dir : str or PathLike
        The project folder (created when something is written). A relative path is relative to the
        current working directory: the repository root for ``pixlab run``, the ``notebooks/`` folder
        for a notebook opened in JupyterLab.
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
        self.root = Path(run_dir).expanduser().absolute()
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

    # ---------------------------------------------------------------- images
    def _sample_image(self, labels: bool = True) -> Path:
        """Write the bundled IHC sample as an OME-TIFF, and (``labels``) its strokes unless labels exist."""
        from pixlab.datasets import sample_ihc
        from pixlab.image.io import write_ome_tiff
        img, strokes, class_names = sample_ihc()
        path = self.images_dir / "ihc.tif"
        if not path.is_file():
            self.images_dir.mkdir(parents=True, exist_ok=True)
            write_ome_tiff(path, img)
        if labels and self.labels_file("ihc") is None:
            self.labels_dir.mkdir(parents=True, exist_ok=True)
            from pixlab.annotation import AnnotationSession
            from pixlab.labels.masks import save_labels
            save_labels(self.labels_dir / "ihc.labels.png", strokes)
            # Reopening through the session writes the sidecar (class names, colours) it reads back.
            s = AnnotationSession([path], class_names, labels_dir=self.labels_dir, autosave=False)
            try:
                s.save(0)
            finally:
                s.close()
        return path

    def set_images(self, images, channels=None, labels_from=None) -> list[Path]:
        """Choose the project's images and write ``images.json`` (and ``settings.json``).

        Parameters
        ----------
        images : str, path or list of them
            Image files, folders (every image file in them, sorted) or ``"sample:ihc"`` (the bundled
            IHC sample, written to ``images/ihc.tif`` with its brush strokes in ``labels/``).
        channels : list of int or str, optional
            Channels used for training (names or indices); None or [] = all.
        labels_from : path, optional
            A folder of ``<image name>.labels.png`` files to start from (see :meth:`import_labels`);
            they win over the sample's strokes, labels already in the project win over both.

        Returns
        -------
        list of pathlib.Path
            Absolute image paths, in order.

        Raises
        ------
        FileNotFoundError
            If a path does not exist.
        ValueError
            If the list is empty, a folder holds no image, or a name appears twice.
        """
        items = [images] if isinstance(images, (str, os.PathLike)) else list(images or [])
        if not items:
            raise ValueError("images is empty; give image files, a folder, or 'sample:ihc' for the bundled sample")
        paths: list[Path] = []
        for item in items:
            if str(item).strip().lower() == SAMPLE_IHC:
                paths.append(self._sample_image(labels=False))
                continue
            p = Path(item).expanduser()
            if p.is_dir():
                found = sorted(f for f in p.iterdir() if f.is_file() and f.name.lower().endswith(_IMAGE_SUFFIXES)
                               and ".labels." not in f.name)
                if not found:
                    raise ValueError(f"folder '{p}' holds no image files ({', '.join(_IMAGE_SUFFIXES)}); "
                                     "give another folder or the image files themselves")
                paths.extend(f.absolute() for f in found)
            elif p.is_file():
                paths.append(p.absolute())
            else:
                raise FileNotFoundError(f"image '{item}' does not exist; check the path (relative paths start "
                                        f"at {Path.cwd()}) or use 'sample:ihc' for the bundled sample")
        from pixlab.image.io import _stem
        stems = [_stem(p) for p in paths]
        dupes = sorted({s for s in stems if stems.count(s) > 1})
        if dupes:
            raise ValueError(f"several images are named '{dupes[0]}'; their labels would share one file - rename "
                             "them or run them as separate projects")
        self.root.mkdir(parents=True, exist_ok=True)
        _write_json(self.images_file, [str(p) for p in paths])
        _write_json(self.settings_file, {"channels": list(channels) if channels else None})
        if self.run_info() is None:
            self.write_run_info(parameters={})
        if labels_from:
            self.import_labels(labels_from)
        if any(str(i).strip().lower() == SAMPLE_IHC for i in items):
            self._sample_image(labels=True)  # the sample's strokes where no labels came from elsewhere
        return paths

    def images(self) -> list[Path]:
        """The image paths saved by :meth:`set_images` (notebook 01).

        Raises
        ------
        FileNotFoundError
            If ``images.json`` or one of the images is missing.
        """
        if not self.images_file.is_file():
            raise FileNotFoundError(f"'{self.images_file}' not found; run notebook 01_annotate first "
                                    f"(with run_dir='{self.root}') to choose the images")
        items = _read_json(self.images_file, "image list")
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ValueError(f"'{self.images_file}' must hold a list of image paths; run 01_annotate again")
        out = []
        for item in items:
            if item.strip().lower() == SAMPLE_IHC:
                out.append(self._sample_image())
                continue
            p = Path(item)
            if not p.is_absolute():
                p = self.root / p
            if not p.is_file():
                raise FileNotFoundError(f"image '{p}' listed in '{self.images_file}' does not exist; "
                                        "restore it or run 01_annotate again")
            out.append(p)
        return out

    def settings(self) -> dict:
        """``settings.json`` (``{"channels": ...}``); empty when 01 has not run."""
        if not self.settings_file.is_file():
            return {}
        s = _read_json(self.settings_file, "settings file")
        return s if isinstance(s, dict) else {}

    # ---------------------------------------------------------------- labels
    def labels_file(self, image) -> Path | None:
        """The saved labels of ``image`` (a path or a name), or None."""
        from pixlab.image.io import _stem
        stem = image if isinstance(image, str) and not Path(image).suffix else _stem(image)
        for suffix in (".png", ".tif"):
            p = self.labels_dir / f"{stem}.labels{suffix}"
            if p.is_file():
                return p
        return None

    def import_labels(self, folder) -> list[Path]:
        """Copy ``<stem>.labels.png``/``.tif`` (+ ``.labels.json``) of the project's images from ``folder``.

        Labels already in the project are kept (they may hold newer strokes).

        Returns
        -------
        list of pathlib.Path
            The label files copied.
        """
        from pixlab.image.io import _stem
        src = Path(folder).expanduser()
        if not src.is_dir():
            raise FileNotFoundError(f"labels folder '{src}' does not exist; give the folder that holds "
                                    "<image name>.labels.png files")
        copied = []
        self.labels_dir.mkdir(parents=True, exist_ok=True)
        for img in self.images():
            stem = _stem(img)
            if self.labels_file(stem) is not None:
                continue
            for suffix in (".png", ".tif", ".json"):
                f = src / f"{stem}.labels{suffix}"
                if f.is_file():
                    with atomic_path(self.labels_dir / f.name) as tmp:
                        shutil.copyfile(f, tmp)
                    if suffix != ".json":
                        copied.append(self.labels_dir / f.name)
        return copied

    def session(self, class_names=None, **kwargs):
        """An :class:`pixlab.annotation.AnnotationSession` over the project's images and labels.

        Parameters
        ----------
        class_names : list of str, optional
            Default: the classes saved with the labels.
        **kwargs
            Passed to the session (``autosave``, ``channels``, ...); ``channels`` defaults to the
            channels chosen in 01.
        """
        from pixlab.annotation import AnnotationSession
        if "channels" not in kwargs and self.settings().get("channels"):
            kwargs["channels"] = self.settings()["channels"]
        return AnnotationSession(self.images(), class_names or None, labels_dir=self.labels_dir, **kwargs)

    def missing_labels(self) -> list[Path]:
        """Images of the project without a labels file."""
        return [p for p in self.images() if self.labels_file(p) is None]

    def require_labels(self) -> list[Path]:
        """The label files of the project's images; FileNotFoundError when no image has any.

        Headless runs cannot wait for a person to draw, so they stop here with the fix.
        """
        images = self.images()
        found = [f for f in (self.labels_file(p) for p in images) if f is not None]
        if not found:
            raise FileNotFoundError(
                f"no labels for any of the {len(images)} image(s) in '{self.labels_dir}'; draw them in "
                "01_annotate (interactive), or pass labels_from=FOLDER holding <image name>.labels.png files")
        return found

    def prediction_jobs(self, inputs=None, output_dir=None, suffix: str = ".ome.tif") -> list[tuple[Path, Path]]:
        """Pairs (input image, output file) for notebook 04.

        Parameters
        ----------
        inputs : list of paths or folders, optional
            Default (None or []): the project's images.
        output_dir : path, optional
            Default (None or ""): ``predictions/``.
        suffix : str
            Output suffix after the image's stem.

        Returns
        -------
        list of (pathlib.Path, pathlib.Path)
        """
        from pixlab.image.io import _stem
        if inputs:
            items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
            sources: list[Path] = []
            for item in items:
                p = Path(item).expanduser()
                if p.is_dir():
                    found = sorted(f for f in p.iterdir() if f.is_file() and ".labels." not in f.name
                                   and f.name.lower().endswith(_IMAGE_SUFFIXES))
                    if not found:
                        raise ValueError(f"folder '{p}' holds no image files; give another folder or the files")
                    sources.extend(found)
                elif p.is_file():
                    sources.append(p)
                else:
                    raise FileNotFoundError(f"input '{item}' does not exist; check the path (relative paths "
                                            f"start at {Path.cwd()})")
        else:
            sources = self.images()
        out_dir = Path(output_dir).expanduser() if output_dir else self.predictions_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        return [(p.absolute(), (out_dir / f"{_stem(p)}{suffix}").absolute()) for p in sources]

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


# =============================================================================================
# Parameters
# =============================================================================================
@dataclass
class Parameter:
    """One notebook parameter, as declared in a ``parameters`` cell.

    Attributes
    ----------
    name, type, help : str
        ``type`` is the annotation text ("" when the line has none).
    default : object
        The default value (the literal after ``=``).
    notebooks : list of str
        The notebooks declaring it.
    line : str
        The declaration, for error messages.
    """

    name: str
    type: str
    default: Any
    help: str
    notebooks: list = field(default_factory=list)
    line: str = ""


def find_notebooks(folder=None) -> list[Path]:
    """The ordered notebooks ``NN_name.ipynb`` of ``folder``.

    Parameters
    ----------
    folder : path, optional
        Default: ``./notebooks`` if it exists, else the ``notebooks/`` folder of the source checkout
        pixlab was installed from (``pip install -e``).

    Returns
    -------
    list of pathlib.Path
        Sorted by name (01, 02, ...).
    """
    if folder is None:
        here = Path.cwd() / "notebooks"
        repo = Path(__file__).resolve().parent.parent / "notebooks"
        folder = here if here.is_dir() else repo
        if not folder.is_dir():
            raise FileNotFoundError(f"no notebooks folder at '{here}' or '{repo}'; run from the repository root "
                                    "or pass --notebooks DIR")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"notebooks folder '{folder}' does not exist; pass the folder that holds "
                                "01_annotate.ipynb ... (e.g. --notebooks notebooks)")
    found = sorted(p for p in folder.iterdir() if NOTEBOOK_PATTERN.match(p.name))
    if not found:
        raise FileNotFoundError(f"notebooks folder '{folder}' holds no NN_name.ipynb notebooks; pass the folder "
                                "that holds 01_annotate.ipynb ...")
    return found


def _literal(text: str, where: str):
    import ast
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        raise ValueError(f"{where}: default {text.strip()!r} is not a literal; parameters cells may only hold "
                         "literals (numbers, strings, lists, dicts, True/False/None)") from None


_ASSIGNMENT = re.compile(r"^(\w+)\s*(:[^=]*)?=[^=]")


def _check_parameter_lines(nb: Path, found: dict) -> None:
    """Raise if papermill skipped a line of the parameters cell (it skips lines with two '=')."""
    import nbformat
    book = nbformat.read(str(nb), as_version=4)
    cell = next((c for c in book.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        return
    for i, line in enumerate(cell.source.splitlines(), start=1):
        m = _ASSIGNMENT.match(line)
        if m and m.group(1) not in found:
            raise ValueError(f"{nb.name}: line {i} of the parameters cell ({line.strip()!r}) cannot be read by "
                             "papermill; keep one '=' per line (none in the # help comment)")


def notebook_parameters(notebooks: Iterable) -> dict[str, Parameter]:
    """The parameters declared by ``notebooks`` (papermill's ``inspect_notebook``), by name.

    A parameter declared by several notebooks (``run_dir``) is one entry; its type and default are
    the first notebook's.
    """
    import papermill as pm
    params: dict[str, Parameter] = {}
    for nb in notebooks:
        nb = Path(nb)
        try:
            found = pm.inspect_notebook(str(nb))
        except Exception as e:  # nbformat/json errors of a damaged file
            raise ValueError(f"cannot read notebook '{nb}': {e}") from None
        _check_parameter_lines(nb, found)
        for name, p in found.items():
            ptype = "" if p["inferred_type_name"] in (None, "None") else str(p["inferred_type_name"])
            if name not in params:
                default = _literal(p["default"], f"{nb.name} parameter {name!r}")
                line = f"{name}{': ' + ptype if ptype else ''} = {p['default']}"
                params[name] = Parameter(name, ptype, default, p.get("help") or "", [nb.name], line)
            else:
                params[name].notebooks.append(nb.name)
    return params


def read_params_file(path) -> dict:
    """Read a YAML or JSON mapping of parameter names to values.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file; unparsable text or not a mapping.
    """
    import yaml
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parameters file '{path}' not found; check the path given to --params")
    text = path.read_text(encoding="utf-8")
    try:
        # YAML is a superset of JSON, so one parser reads both.
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"cannot parse parameters file '{path}': {e}".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ValueError(f"parameters file '{path}' must hold a mapping of parameter names to values, "
                         "e.g. 'epochs: 5'")
    return data


_TYPE_WORDS = {"str": "text", "int": "a whole number", "float": "a number", "bool": "true or false",
               "list": "a list like [a, b]", "dict": "a mapping like {key: value}"}


def _type_parts(type_name: str) -> tuple[str, str]:
    t = type_name.replace(" ", "")
    base, _, inner = t.partition("[")
    return base, inner.rstrip("]")


def _check_value(p: Parameter, value, source: str):
    """``value`` converted to ``p``'s type, or one ValueError naming the parameter, value and fix.

    Hand-written rather than pydantic/typeguard: parameter cells only use six builtin type names, and
    those libraries would be a new dependency for a dozen lines.
    """
    base, inner = _type_parts(p.type)
    if base not in _TYPE_WORDS:  # no annotation (or one we do not know): any value, checked downstream
        return value

    def bad(expected):
        where = ", ".join(p.notebooks)
        return ValueError(f"parameter {p.name}={value!r} ({source}) must be {expected}; {where} declares "
                          f"`{p.line}`" + (f"  # {p.help}" if p.help else ""))

    if base == "bool":
        if not isinstance(value, bool):
            raise bad(_TYPE_WORDS["bool"])
        return value
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise bad(_TYPE_WORDS["int"])
        return value
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad(_TYPE_WORDS["float"])
        return float(value)
    if base == "str":
        if not isinstance(value, str):
            raise bad(_TYPE_WORDS["str"])
        return value
    if base == "dict":
        if not isinstance(value, dict):
            raise bad(_TYPE_WORDS["dict"])
        return value
    # list
    if isinstance(value, (str, int, float)) and not isinstance(value, bool) and inner in ("str", "int", "float", ""):
        value = [value]  # `-p images a.tif`: one item is a list of one
    if not isinstance(value, (list, tuple)):
        raise bad(_TYPE_WORDS["list"])
    value = list(value)
    if inner:
        item = Parameter(f"{p.name}[i]", inner, None, p.help, p.notebooks, p.line)
        try:
            value = [_check_value(item, v, source) for v in value]
        except ValueError:
            raise bad(f"a list of {_TYPE_WORDS.get(_type_parts(inner)[0], inner)} items") from None
    return value


def _from_text(p: Parameter, text: str):
    """A command-line value: text for ``str`` parameters, else read as YAML (``2``, ``true``, ``[a, b]``)."""
    if _type_parts(p.type)[0] == "str":
        return text
    import yaml
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ValueError(f"-p {p.name} {text!r}: cannot read the value; write a number, true/false, a word, "
                         "a list like [1, 2] or a mapping like {a: 1}") from None


def config_from_parameters(values: dict, overrides: dict | None = None):
    """A :class:`pixlab.TrainConfig` from notebook parameters.

    Keys that are not TrainConfig fields are ignored (``run_dir``, ``interactive``, ...). The
    "none" sentinels of parameter cells become None: ``time_limit_s=0``, ``patches_per_epoch=0``,
    ``weights_path=""``, ``channels=[]``, ``class_weights=[]``, ``fixed_range=[]``.

    Parameters
    ----------
    values : dict
        Parameter values, e.g. ``dict(epochs=epochs, tile_size=tile_size)`` in a notebook.
    overrides : dict, optional
        Any other TrainConfig fields (the ``train_overrides`` parameter); they win over ``values``.

    Returns
    -------
    TrainConfig

    Raises
    ------
    ValueError
        TrainConfig's message naming the field, the value and what is allowed.

    Examples
    --------
    >>> config_from_parameters({"epochs": 3, "time_limit_s": 0, "run_dir": "x"}).time_limit_s is None
    True
    """
    from pixlab.training.config import TrainConfig
    from dataclasses import fields as _fields
    names = {f.name for f in _fields(TrainConfig)}
    d = {k: v for k, v in dict(values).items() if k in names}
    if overrides:
        if not isinstance(overrides, dict):
            raise ValueError(f"train_overrides={overrides!r} must be a mapping of TrainConfig fields, e.g. "
                             "{'weight_decay': 0.0}")
        d.update(overrides)
    for k, none in _NONE_SENTINELS.items():
        if k in d and d[k] == none and not isinstance(d[k], bool):
            d[k] = None
    return TrainConfig.from_dict(d)


def validate_parameters(params: dict, declared: dict[str, Parameter], *, texts: Sequence[tuple[str, str]] = (),
                        sources: dict | None = None) -> dict:
    """Check parameter names and types against the notebooks' declarations; return the values to inject.

    Parameters
    ----------
    params : dict
        Values (from a file or Python), by name.
    declared : dict of str to Parameter
        From :func:`notebook_parameters`.
    texts : list of (name, text)
        Command-line ``-p name value`` pairs; they win over ``params``. Text is read as YAML unless
        the parameter is a ``str``.
    sources : dict, optional
        Where each ``params`` entry came from, for messages (default "given").

    Returns
    -------
    dict
        Checked values (ints widened to float where the type is float).

    Raises
    ------
    ValueError
        Unknown name (with the closest match and the valid names), wrong type, a value TrainConfig
        rejects, or a runner-owned parameter (``run_dir``, ``interactive``).
    FileNotFoundError
        An input path (``images``, ``inputs``, ...) that does not exist.
    """
    sources = dict(sources or {})
    raw: dict[str, tuple[Any, str]] = {k: (v, sources.get(k, "given")) for k, v in dict(params or {}).items()}
    for name, text in texts:
        raw[name] = (("__text__", text), "-p")
    valid = sorted(declared)
    out: dict[str, Any] = {}
    for name, (value, source) in raw.items():
        if name in RUNNER_OWNED:
            raise ValueError(f"parameter {name!r} is set by `pixlab run` itself (run_dir from --runs-dir/--name, "
                             "interactive=False); remove it from the parameters")
        if name not in declared:
            close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown notebook parameter {name!r}{hint}; valid parameters: "
                             f"{', '.join(v for v in valid if v not in RUNNER_OWNED)}")
        p = declared[name]
        if isinstance(value, tuple) and len(value) == 2 and value[0] == "__text__":
            value = _from_text(p, value[1])
        out[name] = _check_value(p, value, source)
    # TrainConfig fields (with the notebooks' defaults for the rest) must make a valid configuration.
    merged = {n: p.default for n, p in declared.items()}
    merged.update(out)
    config_from_parameters(merged, merged.get("train_overrides") or None)
    _check_paths(merged)
    return out


def _check_paths(values: dict) -> None:
    for name in PATH_PARAMETERS:
        v = values.get(name)
        items = v if isinstance(v, (list, tuple)) else [v]
        for item in items:
            if item is None or str(item).strip() == "" or str(item).strip().lower() == SAMPLE_IHC:
                continue
            if not Path(str(item)).expanduser().exists():
                raise FileNotFoundError(f"parameter {name}: '{item}' does not exist (relative paths start at "
                                        f"{Path.cwd()}); check the path")


# =============================================================================================
# Running
# =============================================================================================
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


# =============================================================================================
# Set-up check (workshops)
# =============================================================================================
def check_setup(notebooks=None, train: bool = True) -> list[tuple[str, bool, str]]:
    """Check that this machine can run the workshop: Python, libraries, kernel, notebooks, a tiny training.

    Parameters
    ----------
    notebooks : path, optional
        Notebooks folder (see :func:`find_notebooks`).
    train : bool
        Also train a tiny network for a few seconds (checks torch and times the CPU).

    Returns
    -------
    list of (what, ok, detail)
    """
    import platform
    results: list[tuple[str, bool, str]] = []

    def check(what, fn):
        try:
            results.append((what, True, str(fn())))
        except Exception as e:  # every failure becomes a line of the report
            results.append((what, False, f"{type(e).__name__}: {e}"))

    check("python", lambda: f"{platform.python_version()} ({sys.executable})")
    check("pixlab", _pixlab_version)

    def libs():
        import importlib.metadata as md
        names = ("torch", "segmentation-models-pytorch", "papermill", "ipykernel", "ipywidgets", "ipycanvas",
                 "jupyter_bokeh", "jupyterlab")
        missing = []
        found = []
        for n in names:
            try:
                found.append(f"{n} {md.version(n)}")
            except md.PackageNotFoundError:
                missing.append(n)
        if missing:
            raise ModuleNotFoundError(f"missing {', '.join(missing)}; install with `pip install -e .[lab]`")
        return ", ".join(found)
    check("libraries", libs)

    def kernel():
        from jupyter_client.kernelspec import KernelSpecManager
        spec = KernelSpecManager().get_kernel_spec("python3")
        exe = spec.argv[0]
        if exe in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"):
            exe = sys.executable  # jupyter_client starts "python" kernels with the running interpreter
        if Path(exe).absolute() != Path(sys.executable).absolute():
            raise RuntimeError(f"kernel python3 runs {exe}, not this Python {sys.executable}; run "
                               "`make kernel` and pass --kernel pixlab")
        return f"python3 -> {exe}"
    check("jupyter kernel", kernel)

    def nbs():
        found = find_notebooks(notebooks)
        return f"{len(found)} notebooks: {', '.join(p.name for p in found)}; {len(notebook_parameters(found))} parameters"
    check("notebooks", nbs)

    def sample():
        from pixlab.datasets import sample_ihc
        img, labels, names = sample_ihc()
        return f"sample IHC image {img.shape}, {int((labels > 0).sum())} labelled pixels, classes {names}"
    check("sample data", sample)

    if train:
        def tiny_training():
            import torch
            from pixlab.training.config import TrainConfig
            from pixlab.datasets import sample_ihc
            from pixlab.training.trainer import train as _train
            img, labels, names = sample_ihc()
            cfg = TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=64, epochs=2, batch_size=4,
                              patches_per_epoch=8, recipe="standard", device="cpu", early_stopping=False)
            t0 = time.monotonic()
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _train([(img, labels)], cfg, class_names=names, progress=False)
            return f"2 tiny epochs in {time.monotonic() - t0:.1f} s on {torch.get_num_threads()} CPU thread(s)"
        check("training", tiny_training)
    return results
