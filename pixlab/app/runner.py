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

The code lives in one module per concern; every name is re-exported here so that
``from pixlab.app.runner import Project`` (the notebooks) keeps working:
:mod:`pixlab.app.project`, :mod:`pixlab.app.parameters`, :mod:`pixlab.app.notebooks`,
:mod:`pixlab.app.setup_check`.
"""

from pixlab.app.notebooks import NotebookError, RunResult, run_notebooks
from pixlab.app.parameters import (PATH_PARAMETERS, RUNNER_OWNED, Parameter, config_from_parameters,  # noqa: F401
                                   find_notebooks, notebook_parameters, read_params_file, validate_parameters)
from pixlab.app.project import RUN_FORMAT, RUN_FORMAT_VERSION, SAMPLE_IHC, Project
from pixlab.app.setup_check import check_setup

__all__ = ["Project", "NotebookError", "Parameter", "RunResult", "find_notebooks", "notebook_parameters",
           "validate_parameters", "read_params_file", "config_from_parameters", "run_notebooks",
           "check_setup", "RUN_FORMAT", "RUN_FORMAT_VERSION", "SAMPLE_IHC"]
