"""Multi-process training: ``pixlab train --config cfg.yaml`` under torchrun (CPU, gloo backend)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml

import pixlab
from pixlab.app.cli import main

# Runs under torchrun in each rank: wraps train() and the two writers to log, per rank, the final
# weights (hash per tensor) and every bundle/checkpoint that rank writes, then runs the real CLI.
HELPER = textwrap.dedent('''
    import hashlib, json, os, sys
    import pixlab.model.folder, pixlab.training.checkpoint, pixlab.app.cli
    train_mod = sys.modules["pixlab.training.trainer"]
    rank = int(os.environ["RANK"])
    log = os.path.join(sys.argv[1], f"rank{rank}.jsonl")

    def record(**entry):
        with open(log, "a") as f:
            f.write(json.dumps(entry) + "\\n")

    def wrap(mod, name, kind):
        orig = getattr(mod, name)
        def wrapper(*a, **k):
            record(kind=kind, path=str(a[1] if kind == "bundle" else a[0]))
            return orig(*a, **k)
        setattr(mod, name, wrapper)

    wrap(pixlab.model.folder, "save_model", "bundle")
    wrap(pixlab.training.checkpoint, "save_checkpoint", "checkpoint")
    orig_train = train_mod.train
    def train(*a, **k):
        model = orig_train(*a, **k)
        sd = model.network.state_dict()
        record(kind="weights", world=model.metadata["world_size"],
               hashes={n: hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
                       for n, t in sd.items()},
               buffers=[n for n, _ in model.network.named_buffers()])
        return model
    train_mod.train = train
    sys.exit(pixlab.app.cli.main(sys.argv[2:]))
''')


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Image, labels and a config file holding everything (relative paths)."""
    from pixlab.datasets import strokes_from_mask, synthetic_fluorescence
    from pixlab.image.io import write_ome_tiff
    from pixlab.labels.masks import save_labels
    d = tmp_path_factory.mktemp("ddp")
    (d / "data").mkdir()
    img, truth = synthetic_fluorescence(shape=(96, 96), n_channels=2, n_nuclei=8, seed=3)
    write_ome_tiff(d / "data" / "img.ome.tif", img, pyramid=False)
    save_labels(d / "data" / "labels.png", strokes_from_mask(truth, strokes_per_class=6, radius=2,
                                                            length=(6, 12), seed=3))
    cfg = {"images": ["data/img.ome.tif"], "labels": ["data/labels.png"], "classes": ["background", "nuclei"],
           "output": "model", "checkpoint_dir": "ck",
           "architecture": "tiny_unet", "pretrained": False, "tile_size": 64, "epochs": 2, "batch_size": 4,
           "patches_per_epoch": 8, "recipe": "standard", "device": "cpu", "early_stopping": False}
    (d / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return d


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_one_model(run_dir, tmp_path):
    helper = tmp_path / "helper.py"
    helper.write_text(HELPER)
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(helper), str(logs), "train", "--config", str(run_dir / "cfg.yaml")]
    # cwd elsewhere: the config's relative paths must resolve against the config file's folder.
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 processes" in proc.stdout

    r0, r1 = _records(logs / "rank0.jsonl"), _records(logs / "rank1.jsonl")
    w0 = next(r for r in r0 if r["kind"] == "weights")
    w1 = next(r for r in r1 if r["kind"] == "weights")
    assert w0["world"] == w1["world"] == 2
    assert w0["hashes"] == w1["hashes"]  # parameters and BatchNorm buffers, bit for bit
    assert w0["buffers"]  # the network has buffers, so the comparison above covers them

    # Only rank 0 wrote: the final bundle, the best bundle and the resumable checkpoints.
    assert not [r for r in r1 if r["kind"] != "weights"]
    written = {(r["kind"], os.path.basename(r["path"])) for r in r0 if r["kind"] != "weights"}
    assert written == {("bundle", "model"), ("bundle", "best"), ("checkpoint", "last")}
    assert not (tmp_path / "model").exists()  # not relative to the working directory

    model = pixlab.load_model(run_dir / "model")
    assert model.metadata["world_size"] == 2 and len(model.history) == 2
    probs = model.predict(run_dir / "data" / "img.ome.tif")
    assert probs.shape == (2, 96, 96)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    pixlab.load_model(run_dir / "ck" / "best")


def test_config_file_alone_describes_a_single_process_run(run_dir, tmp_path, capsys):
    cfg = yaml.safe_load((run_dir / "cfg.yaml").read_text())
    cfg.update(output=str(tmp_path / "m"), checkpoint_dir=None, epochs=1)
    (run_dir / "single.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(run_dir / "single.yaml")]) == 0
    m = pixlab.load_model(tmp_path / "m")
    assert m.class_names == ["background", "nuclei"] and m.metadata["world_size"] == 1
    assert len(m.history) == 1 and "saved" in capsys.readouterr().out


def test_config_file_without_images_is_one_clear_error(run_dir, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("epochs: 1\nclasses: [a, b]\noutput: out\n")
    assert main(["train", "--config", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--image" in err and "'images:'" in err
    (tmp_path / "typo.yaml").write_text("images: [x.tif]\nlabels: [y.png]\nclasses: [a, b]\noutput: o\nepoch: 1\n")
    assert main(["train", "--config", str(tmp_path / "typo.yaml")]) == 2
    assert "did you mean 'epochs'" in capsys.readouterr().err
