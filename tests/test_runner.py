"""pixlab.app.runner and `pixlab run`: parameters checked before anything runs, project folder, failures.

Tiny notebooks made here (no torch in the kernel) keep the kernel-running tests to a few seconds each.
"""

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

import pixlab
from pixlab.app import runner
from pixlab.app.cli import main
from pixlab.app.runner import NotebookError, Project, notebook_parameters, run_notebooks, validate_parameters


def make_notebook(path, params: str, *cells: str) -> Path:
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    p = new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p] + [new_code_cell(c) for c in cells]
    nbformat.write(nb, str(path))
    return Path(path)


PARAMS_A = '''run_dir: str = "runs/demo"  # project folder
interactive: bool = True  # set by the runner
epochs: int = 50  # maximum epochs
learning_rate: float = 0.001  # peak learning rate
tag: str = "x"  # free text
images: list = ["sample:ihc"]  # images
flags: list[int] = []  # numbers
extra: dict = {}  # anything
loose = "none"  # untyped
'''


@pytest.fixture
def nbdir(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    make_notebook(d / "01_first.ipynb", PARAMS_A,
                  "from pathlib import Path\nimport json\nPath(run_dir).mkdir(parents=True, exist_ok=True)\n"
                  "Path(run_dir, 'first.json').write_text(json.dumps(dict(epochs=epochs, lr=learning_rate, "
                  "tag=tag, interactive=interactive, flags=flags, cwd=str(Path.cwd()))))")
    make_notebook(d / "02_second.ipynb", 'run_dir: str = "runs/demo"  # project folder\nepochs: int = 50  # again',
                  "from pathlib import Path\nPath(run_dir, 'second.txt').write_text(str(epochs))")
    (d / "notes.ipynb").write_text("not an ordered notebook, ignored")
    return d


# --------------------------------------------------------------------------------------- parameters
def test_notebook_parameters_reads_types_defaults_and_help(nbdir):
    params = notebook_parameters(runner.find_notebooks(nbdir))
    assert [p.name for p in runner.find_notebooks(nbdir)] == ["01_first.ipynb", "02_second.ipynb"]
    assert params["epochs"].type == "int" and params["epochs"].default == 50
    assert params["epochs"].notebooks == ["01_first.ipynb", "02_second.ipynb"]
    assert params["learning_rate"].help == "peak learning rate"
    assert params["images"].default == ["sample:ihc"]
    assert params["loose"].type == "" and params["loose"].default == "none"


def test_parameter_line_papermill_cannot_read_is_an_error(tmp_path):
    # papermill silently skips lines with two '=' (here one hides in the help comment)
    nb = make_notebook(tmp_path / "01_x.ipynb", 'run_dir: str = "r"  # ok\nlimit: float = 0.0  # 0 = none')
    with pytest.raises(ValueError, match=r"01_x.ipynb: line 2 .*limit.*one '='"):
        notebook_parameters([nb])


def test_unknown_name_lists_valid_ones_and_closest_match(nbdir):
    declared = notebook_parameters(runner.find_notebooks(nbdir))
    with pytest.raises(ValueError) as e:
        validate_parameters({"epoch": 3}, declared)
    msg = str(e.value)
    assert "unknown notebook parameter 'epoch'" in msg and "did you mean 'epochs'" in msg
    assert "learning_rate" in msg and "run_dir" not in msg.split("valid parameters:")[1]


@pytest.mark.parametrize("name, value, expected", [
    ("epochs", "two", "a whole number"),
    ("epochs", True, "a whole number"),
    ("learning_rate", "fast", "a number"),
    ("tag", 3, "text"),
    ("extra", [1], "a mapping"),
    ("flags", ["a"], "a list of a whole number items"),
])
def test_wrong_type_names_parameter_value_and_declaration(nbdir, name, value, expected):
    declared = notebook_parameters(runner.find_notebooks(nbdir))
    with pytest.raises(ValueError) as e:
        validate_parameters({name: value}, declared)
    msg = str(e.value)
    assert f"parameter {name}={value!r}" in msg and expected in msg and declared[name].line in msg


def test_command_line_text_is_read_by_declared_type(nbdir):
    declared = notebook_parameters(runner.find_notebooks(nbdir))
    out = validate_parameters({"learning_rate": 1}, declared,
                              texts=[("epochs", "2"), ("tag", "007"), ("flags", "[1, 2]"), ("loose", "3"),
                                     ("extra", "{patience: 5}")])
    assert out == {"learning_rate": 1.0, "epochs": 2, "tag": "007", "flags": [1, 2], "loose": 3,
                   "extra": {"patience": 5}}
    assert isinstance(out["learning_rate"], float)


def test_missing_input_file_is_reported_before_running(nbdir, tmp_path):
    declared = notebook_parameters(runner.find_notebooks(nbdir))
    with pytest.raises(FileNotFoundError, match=r"parameter images: 'nope.tif' does not exist"):
        validate_parameters({}, declared, texts=[("images", "nope.tif")])
    img = tmp_path / "a.tif"
    img.write_bytes(b"")
    assert validate_parameters({"images": [str(img), "sample:ihc"]}, declared)["images"] == [str(img), "sample:ihc"]


def test_trainconfig_fields_are_validated_by_trainconfig(nbdir):
    declared = notebook_parameters(runner.find_notebooks(nbdir))
    with pytest.raises(ValueError, match=r"TrainConfig.epochs=0 is below the minimum 1"):
        validate_parameters({"epochs": 0}, declared)


def test_runner_owned_parameters_are_refused(nbdir):
    declared = notebook_parameters(runner.find_notebooks(nbdir))
    with pytest.raises(ValueError, match="'run_dir' is set by `pixlab run`"):
        validate_parameters({"run_dir": "elsewhere"}, declared)


def test_config_from_parameters_maps_sentinels_and_overrides():
    cfg = runner.config_from_parameters({"epochs": 3, "time_limit_s": 0, "channels": [], "run_dir": "x",
                                         "interactive": False}, {"patience": 4})
    assert (cfg.epochs, cfg.time_limit_s, cfg.channels, cfg.patience) == (3, None, None, 4)
    with pytest.raises(ValueError, match="unknown TrainConfig field.*'patiense'.*did you mean 'patience'"):
        runner.config_from_parameters({}, {"patiense": 4})


def test_params_file_yaml_json_and_errors(tmp_path):
    y = tmp_path / "p.yaml"
    y.write_text("epochs: 3\ntag: hello\n")
    j = tmp_path / "p.json"
    j.write_text('{"epochs": 4}')
    assert runner.read_params_file(y) == {"epochs": 3, "tag": "hello"}
    assert runner.read_params_file(j) == {"epochs": 4}
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        runner.read_params_file(bad)
    with pytest.raises(FileNotFoundError, match="parameters file .*missing.yaml"):
        runner.read_params_file(tmp_path / "missing.yaml")


# --------------------------------------------------------------------------------------- project
def test_project_sample_images_labels_and_sidecar(tmp_path):
    p = Project(tmp_path / "run")
    paths = p.set_images(["sample:ihc"], channels=["Red"])
    assert paths == [p.images_dir / "ihc.tif"]
    assert json.loads(p.images_file.read_text()) == [str(paths[0])]
    assert p.settings() == {"channels": ["Red"]}
    assert pixlab.open_image(paths[0]).shape == (3, 512, 512)
    assert p.require_labels() == [p.labels_dir / "ihc.labels.png"]
    s = p.session(autosave=False)
    _, labels, names = pixlab.datasets.sample_ihc()
    assert s.class_names == names and (s.labels == labels).all() and s.channels == ["Red"]
    assert p.run_info()["pixlab"] == pixlab.__version__
    jobs = p.prediction_jobs()
    assert jobs == [(paths[0], p.predictions_dir / "ihc.ome.tif")]


def test_project_keeps_existing_labels_and_reports_missing_inputs(tmp_path):
    p = Project(tmp_path / "run")
    p.set_images("sample:ihc")
    from pixlab.labels.masks import load_labels, save_labels
    edited = load_labels(p.labels_dir / "ihc.labels.png")
    edited[:5, :5] = 1
    save_labels(p.labels_dir / "ihc.labels.png", edited)
    p.set_images("sample:ihc")  # again: the person's strokes win over the sample's
    assert (load_labels(p.labels_dir / "ihc.labels.png")[:5, :5] == 1).all()
    with pytest.raises(FileNotFoundError, match=r"image 'nope.tif' does not exist"):
        p.set_images(["nope.tif"])
    with pytest.raises(FileNotFoundError, match="run notebook 01_annotate first"):
        Project(tmp_path / "empty").images()
    with pytest.raises(FileNotFoundError, match="run notebook 02_train first"):
        p.load_model()


def test_labels_from_a_folder_win_over_the_sample_strokes(tmp_path):
    first = Project(tmp_path / "first")
    first.set_images("sample:ihc")
    from pixlab.labels.masks import load_labels, save_labels
    mine = load_labels(first.labels_dir / "ihc.labels.png")
    mine[100:110, 100:110] = 2  # a boundary stroke painted in another project
    save_labels(first.labels_dir / "ihc.labels.png", mine)
    second = Project(tmp_path / "second")
    second.set_images(["sample:ihc"], labels_from=first.labels_dir)
    assert (load_labels(second.labels_dir / "ihc.labels.png") == mine).all()
    assert (second.labels_dir / "ihc.labels.json").is_file()
    with pytest.raises(FileNotFoundError, match="labels folder .*nowhere"):
        second.set_images(["sample:ihc"], labels_from=tmp_path / "nowhere")


def test_project_without_labels_says_how_to_get_them(tmp_path):
    img = tmp_path / "cells.tif"
    pixlab.image.io.write_ome_tiff(img, pixlab.datasets.synthetic_fluorescence((32, 32), 1, 3)[0])
    p = Project(tmp_path / "run")
    p.set_images([tmp_path])  # a folder
    with pytest.raises(FileNotFoundError, match=r"no labels for any of the 1 image\(s\).*labels_from"):
        p.require_labels()


@pytest.mark.parametrize("version, word", [("0.0.3", "older"), ("9.0.0", "newer")])
def test_run_folder_from_another_version_is_refused_with_the_fix(tmp_path, version, word):
    root = tmp_path / "old"
    root.mkdir()
    (root / "run.json").write_text(json.dumps({"format": "pixlab-run", "run_format": 1, "pixlab": version}))
    with pytest.raises(ValueError, match=rf"written by an? {word} pixlab {version} \(this is pixlab"):
        Project(root)


# --------------------------------------------------------------------------------------- running
def test_run_writes_executed_notebooks_and_run_json(nbdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pf = tmp_path / "params.yaml"
    pf.write_text("epochs: 3\ntag: from-file\n")
    lines = []
    res = run_notebooks("t", params_file=pf, texts=[("tag", "cli")], notebooks=nbdir, runs_dir=tmp_path / "runs",
                        log=lines.append)
    root = tmp_path / "runs" / "t"
    assert res.run_dir == root and [p.name for p in res.executed] == ["01_first.ipynb", "02_second.ipynb"]
    got = json.loads((root / "first.json").read_text())
    assert got == {"epochs": 3, "lr": 0.001, "tag": "cli", "interactive": False, "flags": [], "cwd": str(tmp_path)}
    assert (root / "second.txt").read_text() == "3"
    info = json.loads((root / "run.json").read_text())
    assert info["status"] == "ok" and info["pixlab"] == pixlab.__version__
    assert info["parameters"] == {"epochs": 3, "tag": "cli"}
    assert [n["status"] for n in info["notebooks"]] == ["ok", "ok"]
    executed = nbformat.read(str(root / "executed" / "01_first.ipynb"), as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    assert lines[-1].startswith("[2/2] 02_second.ipynb ok")
    assert not list((root / "executed").glob(".*"))  # no temporary files left behind


def test_failing_notebook_names_cell_keeps_notebook_and_stops(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    make_notebook(d / "01_ok.ipynb", 'run_dir: str = "r"  # folder', "x = 1")
    make_notebook(d / "02_bad.ipynb", 'run_dir: str = "r"  # folder', "y = 2",
                  "# divide\nresult = 1 / 0")
    make_notebook(d / "03_never.ipynb", 'run_dir: str = "r"  # folder',
                  "from pathlib import Path\nPath(run_dir, 'ran').write_text('yes')")
    with pytest.raises(NotebookError) as e:
        run_notebooks("f", notebooks=d, runs_dir=tmp_path / "runs", log=None)
    root = tmp_path / "runs" / "f"
    kept = root / "executed" / "02_bad.ipynb"
    # In [1] parameters, In [2] injected parameters, In [3] y = 2, In [4] the division
    assert str(e.value) == (f"notebook 02_bad.ipynb failed at cell In [4] (`result = 1 / 0`): ZeroDivisionError: "
                            f"division by zero; the executed notebook with the error is '{kept}'")
    assert (e.value.notebook, e.value.execution_count, e.value.ename) == ("02_bad.ipynb", 4, "ZeroDivisionError")
    assert e.value.executed == kept
    nb = nbformat.read(str(kept), as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors and errors[0]["ename"] == "ZeroDivisionError"
    assert not (root / "ran").exists() and not (root / "executed" / "03_never.ipynb").exists()
    info = json.loads((root / "run.json").read_text())
    assert info["status"] == "failed" and [n["status"] for n in info["notebooks"]] == ["ok", "failed", "pending"]


def test_cli_reports_a_notebook_failure_in_one_line_with_status_1(monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise NotebookError("notebook 02_x.ipynb failed at cell In [4] (`f()`): KeyError: 'a'; the executed "
                            "notebook with the error is 'runs/demo/executed/02_x.ipynb'", notebook="02_x.ipynb")
    monkeypatch.setattr(runner, "run_notebooks", fail)
    assert main(["run"]) == 1
    err = capsys.readouterr().err
    assert err == ("pixlab: error: notebook 02_x.ipynb failed at cell In [4] (`f()`): KeyError: 'a'; the executed "
                   "notebook with the error is 'runs/demo/executed/02_x.ipynb'\n")


def test_bad_parameters_fail_before_any_notebook_runs(nbdir, tmp_path, capsys):
    runs = tmp_path / "runs"
    for argv, text in [(["-p", "epoch", "2"], "unknown notebook parameter 'epoch' (did you mean 'epochs'?)"),
                       (["-p", "epochs", "two"], "parameter epochs='two' (-p) must be a whole number"),
                       (["-p", "images", "missing.tif"], "parameter images: 'missing.tif' does not exist"),
                       (["--params", str(tmp_path / "nope.yaml")], "parameters file"),
                       (["--kernel", "no-such-kernel"], "Jupyter kernel 'no-such-kernel' is not installed")]:
        code = main(["run", "--name", "b", "--notebooks", str(nbdir), "--runs-dir", str(runs)] + argv)
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("pixlab: error: ") and text in err, err
        assert err.count("\n") == 1 and not runs.exists()


def test_foreign_and_old_run_folders_need_overwrite_which_keeps_labels(tmp_path):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    make_notebook(nbdir / "01_only.ipynb", 'run_dir: str = "r"  # folder', "x = 1")
    runs = tmp_path / "runs"
    foreign = runs / "x"
    (foreign / "labels").mkdir(parents=True)
    (foreign / "labels" / "a.labels.png").write_bytes(b"strokes")
    (foreign / "model").mkdir()
    with pytest.raises(FileExistsError, match="was not made by `pixlab run`; pass --overwrite"):
        run_notebooks("x", notebooks=nbdir, runs_dir=runs, log=None)
    (foreign / "run.json").write_text(json.dumps({"format": "pixlab-run", "run_format": 1, "pixlab": "0.0.1"}))
    with pytest.raises(ValueError, match="older pixlab 0.0.1.*--overwrite"):
        run_notebooks("x", notebooks=nbdir, runs_dir=runs, log=None)
    assert (foreign / "model").is_dir()  # nothing touched by the refusals
    run_notebooks("x", notebooks=nbdir, runs_dir=runs, overwrite=True, log=None)
    assert (foreign / "labels" / "a.labels.png").read_bytes() == b"strokes"
    assert not (foreign / "model").exists()
    assert json.loads((foreign / "run.json").read_text())["pixlab"] == pixlab.__version__


def test_run_name_must_be_a_plain_name(nbdir, tmp_path):
    with pytest.raises(ValueError, match=r"run name '\.\./up' is not valid"):
        run_notebooks("../up", notebooks=nbdir, runs_dir=tmp_path, log=None)


def test_list_and_check(nbdir, capsys):
    assert main(["run", "--list", "--notebooks", str(nbdir)]) == 0
    out = capsys.readouterr().out
    assert "epochs: int = 50" in out and "maximum epochs" in out and "[01, 02]" in out
    results = {what: (ok, detail) for what, ok, detail in runner.check_setup(nbdir, train=False)}
    assert results["pixlab"] == (True, pixlab.__version__)
    assert results["notebooks"][0] and "2 notebooks" in results["notebooks"][1]
    assert results["jupyter kernel"][0], results["jupyter kernel"]


def test_find_notebooks_falls_back_to_the_repository_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./notebooks here
    found = runner.find_notebooks()
    assert found and found[0].name == "01_annotate.ipynb"
    assert found[0].parent == Path(__file__).resolve().parents[1] / "notebooks"


def test_relative_run_dirs_resolve_from_one_root(tmp_path, monkeypatch):
    # `make lab` runs notebooks with notebooks/ as working directory: runs/demo is still <repo>/runs/demo
    from pathlib import Path
    from pixlab.app.project import Project, project_root
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.delenv("PIXLAB_ROOT", raising=False)
    monkeypatch.chdir(repo / "notebooks")
    assert project_root() == repo and Project("runs/demo").root == repo / "runs" / "demo"
    monkeypatch.setenv("PIXLAB_ROOT", str(tmp_path))
    assert Project("runs/demo").root == tmp_path / "runs" / "demo"
    monkeypatch.delenv("PIXLAB_ROOT")
    monkeypatch.chdir(tmp_path)                         # outside any pixlab checkout: the working directory
    assert Project("x").root == tmp_path / "x" and Project(tmp_path / "abs").root == tmp_path / "abs"
