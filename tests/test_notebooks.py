"""The notebooks in notebooks/: committed clean, parameters that `pixlab run` can read, and a full
headless run with tiny parameters that leaves every artefact and no error in any executed notebook."""

import json
from pathlib import Path

import nbformat
import numpy as np
import pytest

import pixlab
from pixlab.app.runner import find_notebooks, notebook_parameters, run_notebooks

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
OURS = ("01_annotate.ipynb", "02_train.ipynb", "04_inference.ipynb")

# Tiny settings: 2 epochs of one batch of a small UNet, no preview forest, the standard recipe (the quick
# CPU recipe would add random-forest pseudo-labels). 128 px rather than 64 px tiles: inference in 03 and
# 04 uses the training tile size, and 4x more tiles cost more than the bigger training batch.
TINY = [("architecture", "tiny_unet"), ("pretrained", "false"), ("epochs", "2"), ("tile_size", "128"),
        ("batch_size", "4"), ("recipe", "standard"), ("time_limit_s", "0"), ("preview", "false"),
        ("train_overrides", "{patches_per_epoch: 4, early_stopping: false}")]


def all_notebooks():
    return find_notebooks(NOTEBOOKS)


@pytest.mark.parametrize("path", all_notebooks(), ids=lambda p: p.name)
def test_committed_notebook_has_no_outputs(path):
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, \
                f"{path.name} cell {i} has outputs; run `python scripts/strip_notebooks.py`"
        assert "papermill" not in cell.metadata and "execution" not in cell.metadata
    assert "papermill" not in nb.metadata and "widgets" not in nb.metadata


def test_our_notebooks_exist_share_conventions_and_end_with_advice():
    names = [p.name for p in all_notebooks()]
    assert all(n in names for n in OURS)
    params = notebook_parameters(all_notebooks())
    for name in OURS:
        nb = nbformat.read(str(NOTEBOOKS / name), as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and nb.cells[1] is tagged[0], name
        assert name in params["run_dir"].notebooks and name in params["interactive"].notebooks
        assert nb.cells[-1].cell_type == "markdown" and "What to try next" in nb.cells[-1].source
        assert nb.metadata.kernelspec.name == "python3"
    assert params["run_dir"].default == "runs/demo" and params["interactive"].default is True
    # the knobs the guide's advice names are parameters of 02
    for knob in ("epochs", "learning_rate", "tile_size", "freeze_blocks", "encoder", "time_limit_s", "seed"):
        assert "02_train.ipynb" in params[knob].notebooks


def _errors(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]


@pytest.mark.slow
def test_all_notebooks_run_headless_and_leave_their_artefacts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run_notebooks("tiny", texts=TINY, notebooks=NOTEBOOKS, runs_dir=tmp_path / "runs", log=None)
    root = tmp_path / "runs" / "tiny"
    names = [p.name for p in all_notebooks()]
    assert [p.name for p in res.executed] == names
    for path in res.executed:
        nb = nbformat.read(str(path), as_version=4)
        assert not _errors(nb), path.name
        assert all(c.execution_count is not None for c in nb.cells if c.cell_type == "code"), path.name
    # 01: images + labels (the sample's strokes) + a figure
    images = json.loads((root / "images.json").read_text())
    assert images == [str(root / "images" / "ihc.tif")]
    img, strokes, classes = pixlab.datasets.sample_ihc()
    from pixlab.labels.masks import load_labels
    np.testing.assert_array_equal(load_labels(root / "labels" / "ihc.labels.png"), strokes)
    # 02: a model bundle trained with the parameters, and the loss curve in the notebook and on disk
    model = pixlab.load_model(root / "model")
    assert model.class_names == classes and model.config.architecture == "tiny_unet"
    assert model.config.tile_size == 128 and len(model.history) == 2
    train_nb = nbformat.read(str(root / "executed" / "02_train.ipynb"), as_version=4)
    assert any("image/png" in o.get("data", {}) for c in train_nb.cells for o in c.get("outputs", []))
    for fig in ("labels.png", "loss.png"):
        assert (root / "figures" / fig).stat().st_size > 1000, fig
    # 04: a prediction OME-TIFF of the whole image, with measurements, objects and an overlay
    out = pixlab.open_image(root / "predictions" / "ihc.ome.tif")
    assert out.shape == (3, 512, 512) and out.channel_names == classes
    for side in ("ihc.measurements.csv", "ihc.geojson", "ihc.overlay.png", "ihc.objects.csv"):
        assert (root / "predictions" / side).stat().st_size > 100, side
    infer_nb = nbformat.read(str(root / "executed" / "04_inference.ipynb"), as_version=4)
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                   for c in infer_nb.cells for o in c.get("outputs", []))
    assert " objects {" in text and "centroid_x_px" in text  # the count and the objects table
    info = json.loads((root / "run.json").read_text())
    assert info["status"] == "ok" and info["parameters"]["epochs"] == 2


@pytest.mark.slow
def test_interactive_mode_shows_the_widgets_and_waits_for_the_person(tmp_path):
    # What "Run All" in JupyterLab does before anyone clicks: widgets built, no training started.
    import papermill as pm
    run_dir = tmp_path / "proj"
    views = {}
    for name, extra in (("01_annotate.ipynb", {"preview": False}), ("02_train.ipynb", {})):
        nb = pm.execute_notebook(str(NOTEBOOKS / name), str(tmp_path / name), cwd=str(tmp_path), progress_bar=False,
                                 parameters={"run_dir": str(run_dir), "interactive": True, **extra})
        assert not _errors(nb), name
        outputs = [o for c in nb.cells for o in c.get("outputs", [])]
        views[name] = sum("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
        text = "".join(o.get("text", "") for o in outputs)
    assert views["01_annotate.ipynb"] >= 1  # the brush annotator
    assert views["02_train.ipynb"] >= 2  # the form and the training panel
    assert "No model yet: press 'Start training'" in text and not (run_dir / "model").exists()


def test_environment_yml_lists_every_dependency_of_pyproject():
    import re
    import tomllib
    import yaml
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = proj["dependencies"] + proj["optional-dependencies"]["lab"]
    conda = {re.split(r"[<>=\s]", d)[0].lower().replace("_", "-") for d in env["dependencies"] if isinstance(d, str)}
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda |= {re.split(r"[<>=\s]", d)[0].lower().replace("_", "-") for d in pip if not d.startswith("-e")}
    rename = {"torch": "pytorch-cpu", "matplotlib": "matplotlib-base"}
    for req in wanted:
        name = re.split(r"[<>=\[\s]", req)[0].lower().replace("_", "-")
        assert rename.get(name, name) in conda, f"{name} (pyproject) is missing from environment.yml"
    assert any(d.startswith("python=3.11") for d in env["dependencies"] if isinstance(d, str))
    assert pip[-1] == "-e .[lab]"


def test_diagnostics_notebook_says_it_has_no_model_instead_of_training_one(tmp_path):
    import papermill
    with pytest.raises(papermill.PapermillExecutionError, match="no model in .*run notebook 02"):
        papermill.execute_notebook(str(NOTEBOOKS / "03_diagnostics.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters={"run_dir": str(tmp_path / "empty"), "interactive": False},
                                   progress_bar=False, cwd=str(NOTEBOOKS))
    assert not (tmp_path / "empty" / "model").exists()
