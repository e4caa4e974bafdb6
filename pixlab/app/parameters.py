"""Notebook parameters: reading the ``parameters`` cells, typing and checking values, the config.

Parameter cells follow papermill's style, one per line: ``name: type = value  # help``. Supported
type names: ``str``, ``int``, ``float``, ``bool``, ``list``, ``list[str]``, ``list[int]``, ``dict``;
a line without a type takes any value (read as YAML from the command line). Everything is checked
against every notebook's cell and :class:`pixlab.TrainConfig` before the first notebook starts.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from pixlab.app.project_inputs import SAMPLE_IHC

__all__ = ["Parameter", "find_notebooks", "notebook_parameters", "read_params_file", "config_from_parameters",
           "validate_parameters", "RUNNER_OWNED", "PATH_PARAMETERS"]

NOTEBOOK_PATTERN = re.compile(r"^\d\d_\w+\.ipynb$")

# Parameters that every notebook shares and that the runner sets itself.
RUNNER_OWNED = ("run_dir", "interactive")
# Parameters holding input paths: checked to exist before any notebook runs.
PATH_PARAMETERS = ("images", "inputs", "labels_from", "init_from", "weights_path")
# TrainConfig fields a notebook declares with a "none" sentinel, because papermill's parameter parser
# only reads simple annotations (``float | None`` lines are silently skipped by inspect_notebook).
_NONE_SENTINELS = {"time_limit_s": 0, "patches_per_epoch": 0, "weights_path": "", "channels": [],
                   "class_weights": [], "fixed_range": []}


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
        repo = Path(__file__).resolve().parents[2] / "notebooks"  # <repo>/pixlab/app/parameters.py
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
