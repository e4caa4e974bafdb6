"""Nothing lost: hard kills, failed writes, resumed training, reproducible results.

- A Jupyter kernel SIGKILLed right after brush strokes: the reopened annotator shows them (autosave).
- ``pixlab train`` SIGKILLed mid-training: the last checkpoint and the best model load, no half-written
  model folder exists, and ``train(..., resume=...)`` finishes the same number of epochs.
- Every file pixlab writes goes through ``pixlab._atomic``: the underlying writer fails halfway ->
  the previous file is intact and no temporary file is left; and a whole workflow run under an
  ``open`` recorder only ever writes temporary names.
- Same seed and data on a CPU -> identical weights and predictions, end to end through the CLI; every
  bundle records library versions, the config and a hash of the training data.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import pixlab
from pixlab.app.cli import main

CLASSES = ["bg", "nuclei"]
TINY = dict(architecture="tiny_unet", pretrained=False, tile_size=64, batch_size=4, patches_per_epoch=8,
            recipe="standard", device="cpu", early_stopping=False)
TMP_NAME = re.compile(r"^\..+\.tmp")  # what _atomic's temporary files and folders are called

pytestmark = pytest.mark.filterwarnings("ignore:.*labelled pixels of class:UserWarning")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A small image + strokes on disk, and a model trained on them."""
    from pixlab.datasets import strokes_from_mask, synthetic_fluorescence
    from pixlab.image.io import write_ome_tiff
    from pixlab.labels.masks import save_labels

    d = tmp_path_factory.mktemp("reliability")
    img, truth = synthetic_fluorescence(shape=(96, 96), n_channels=2, n_nuclei=8, seed=4)
    labels = strokes_from_mask(truth, strokes_per_class=5, radius=2, length=(6, 12), seed=4)
    write_ome_tiff(d / "img.ome.tif", img.read(), channel_names=img.channel_names)
    save_labels(d / "labels.png", labels)
    model = pixlab.train([(img, labels)], pixlab.TrainConfig(**TINY, epochs=1), class_names=CLASSES,
                         progress=False)
    return {"dir": d, "img": img, "labels": labels, "truth": truth, "image_path": d / "img.ome.tif",
            "labels_path": d / "labels.png", "model": model}


def _listing(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def _half_then_disk_full(target, data: bytes):
    """Write the first half of ``data`` to ``target`` (a path, or a binary or text file), then fail
    the way a full disk does."""
    half = data[: len(data) // 2]
    if hasattr(target, "write"):
        target.write(half if "b" in getattr(target, "mode", "b") else half.decode("utf-8", "ignore"))
        target.flush()
    else:
        with open(target, "wb") as f:
            f.write(half)
    raise OSError(errno.ENOSPC, "No space left on device (simulated halfway through the write)")


# ------------------------------------------------------------------------------------------------
# Hard kills
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_kernel_sigkill_right_after_strokes_keeps_them(tmp_path, data):
    """A real ipykernel drives the BrushAnnotator's mouse handlers, then dies by SIGKILL."""
    from jupyter_client import KernelManager

    labels_dir = tmp_path / "labels"
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(tmp_path), env={**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "agg"})
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        code = f"""
import os
from pixlab.widgets import BrushAnnotator
a = BrushAnnotator([{str(data['image_path'])!r}], {CLASSES!r}, labels_dir={str(labels_dir)!r},
                   canvas_size=(96, 96), brush_size=3, preview=False, channel_picker=False)
for k, y in ((1, 20), (2, 60)):
    a.current_class = k
    a.on_mouse_down(10, y)
    for x in range(11, 80, 4):
        a.on_mouse_move(x, y)
    a.on_mouse_up(80, y)
print("PID", os.getpid(), "DELAY", a.session.autosave_delay)
"""
        out = []
        reply = kc.execute_interactive(code, timeout=120, output_hook=lambda m: out.append(
            m["content"].get("text", "") if m["msg_type"] == "stream" else m["content"].get("evalue", "")))
        assert reply["content"]["status"] == "ok", "".join(out)
        pid, delay = re.search(r"PID (\d+) DELAY ([\d.]+)", "".join(out)).groups()
        # No save call: the debounce writes the labels; then the kernel dies with no chance to flush.
        time.sleep(float(delay) + 1.5)
        os.kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while km.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not km.is_alive()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

    # Reopen: a new annotator on the same image and labels folder shows both strokes.
    from pixlab.widgets import BrushAnnotator

    a = BrushAnnotator([data["image_path"]], CLASSES, labels_dir=labels_dir, canvas_size=(96, 96),
                       preview=False, channel_picker=False)
    lab = a.session.labels
    assert (lab[20, 12:78] == 1).all() and (lab[60, 12:78] == 2).all()
    assert set(np.unique(lab)) == {0, 1, 2}
    assert [f.name for f in labels_dir.iterdir() if TMP_NAME.match(f.name)] == []


@pytest.mark.slow
def test_training_process_sigkilled_mid_training_leaves_loadable_checkpoint_and_best_model(tmp_path, data):
    epochs = 5
    ck, out = tmp_path / "ck", tmp_path / "model"
    cmd = [sys.executable, "-m", "pixlab", "train", "--image", str(data["image_path"]), "--labels",
           str(data["labels_path"]), "--classes", *CLASSES, "--output", str(out), "--checkpoint-dir", str(ck)]
    for k, v in {**TINY, "epochs": epochs, "patches_per_epoch": 16}.items():
        cmd += ["--set", f"{k}={str(v).lower()}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        # The first complete checkpoint of epoch 1 is "last/" plus "best/" (written right after it).
        deadline = time.monotonic() + 240
        while not ((ck / "last" / "checkpoint.json").is_file() and (ck / "best" / "metadata.json").is_file()):
            assert proc.poll() is None, "training ended before writing a checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.02)
        assert proc.poll() is None, "training finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert not out.exists(), "a model folder appeared although training never finished"
    state = json.loads((ck / "last" / "checkpoint.json").read_text())
    done = state["epoch"]
    assert 1 <= done < epochs and len(state["history"]) == done
    assert sorted(p.name for p in (ck / "last").iterdir()) == ["checkpoint.json", "checkpoint.safetensors"]
    best = pixlab.load_model(ck / "best")
    assert best.class_names == CLASSES and best.predict(data["img"]).shape == (2, 96, 96)

    cfg = pixlab.TrainConfig(**{**TINY, "epochs": epochs, "patches_per_epoch": 16})
    resumed = pixlab.train([(data["image_path"], data["labels_path"])], cfg, class_names=CLASSES,
                           resume=ck, checkpoint_dir=ck, progress=False)
    assert len(resumed.history) == epochs
    assert [h["epoch"] for h in resumed.history] == list(range(epochs))
    # The epochs before the kill come from the checkpoint, not from training again.
    assert [h["train_loss"] for h in resumed.history[:done]] == [h["train_loss"] for h in state["history"]]
    assert json.loads((ck / "last" / "checkpoint.json").read_text())["epoch"] == epochs


# ------------------------------------------------------------------------------------------------
# A write that fails halfway leaves the previous version
# ------------------------------------------------------------------------------------------------
def test_labels_write_failing_halfway_keeps_the_previous_file(tmp_path, monkeypatch, data):
    from PIL import Image as PILImage

    from pixlab.labels.masks import load_labels, save_labels

    path = tmp_path / "img.labels.png"
    save_labels(path, data["labels"])
    before = _listing(tmp_path)
    real_save = PILImage.Image.save

    def png_bytes(im):
        buf = io.BytesIO()
        real_save(im, buf, format="PNG")
        return buf.getvalue()
    monkeypatch.setattr(PILImage.Image, "save", lambda im, fp, *a, **kw: _half_then_disk_full(fp, png_bytes(im)))
    with pytest.raises(OSError, match="No space left"):
        save_labels(path, np.zeros_like(data["labels"]))
    monkeypatch.undo()
    assert _listing(tmp_path) == before
    np.testing.assert_array_equal(load_labels(path), data["labels"])


@pytest.mark.parametrize("which", ["weights", "metadata"])
def test_bundle_write_failing_halfway_keeps_the_previous_bundle(tmp_path, monkeypatch, data, which):
    import safetensors.torch

    folder = tmp_path / "model"
    data["model"].save(folder)
    before = _listing(tmp_path)
    other = data["model"].copy()
    other.class_names = ["x", "y"]
    if which == "weights":
        monkeypatch.setattr(safetensors.torch, "save_file", lambda tensors, filename, metadata=None:
                            _half_then_disk_full(filename, safetensors.torch.save(tensors, metadata=metadata)))
    else:
        monkeypatch.setattr(Path, "write_text", lambda self, text, *a, **kw: _half_then_disk_full(self, text.encode()))
    with pytest.raises(OSError, match="No space left"):
        other.save(folder, overwrite=True)
    monkeypatch.undo()
    assert _listing(tmp_path) == before  # same files, same bytes, no temporary folder
    assert pixlab.load_model(folder).class_names == CLASSES


def test_checkpoint_write_failing_halfway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import safetensors.torch
    import torch

    from pixlab.training.checkpoint import load_checkpoint, save_checkpoint

    cfg = pixlab.TrainConfig(**TINY, epochs=3)
    net = torch.nn.Conv2d(2, 2, 3)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.ones(1, 2, 8, 8)).sum().backward()
    opt.step()
    folder = tmp_path / "last"
    rng_state = np.random.default_rng(0).bit_generator.state
    save_checkpoint(folder, net, opt, None, 1, [{"epoch": 0}], {"score": 1.0, "epoch": 0}, rng_state, cfg)
    before = _listing(tmp_path)

    monkeypatch.setattr(safetensors.torch, "save_file", lambda tensors, filename, metadata=None:
                        _half_then_disk_full(filename, safetensors.torch.save(tensors, metadata=metadata)))
    with torch.no_grad():
        net.weight.add_(1.0)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(folder, net, opt, None, 2, [{"epoch": 0}, {"epoch": 1}], {"score": 0.5, "epoch": 1},
                        rng_state, cfg)
    monkeypatch.undo()
    assert _listing(tmp_path) == before
    net2 = torch.nn.Conv2d(2, 2, 3)
    state = load_checkpoint(folder, net2, torch.optim.AdamW(net2.parameters(), lr=1e-3), None)
    assert state["epoch"] == 1
    assert not torch.equal(net2.weight, net.weight)  # the old weights, not the failed new ones


def test_prediction_write_failing_halfway_keeps_the_previous_outputs(tmp_path, monkeypatch, data):
    import tifffile

    out = tmp_path / "pred.ome.tif"
    pixlab.predict_file(data["model"], data["image_path"], out, measurements=True)
    before = _listing(tmp_path)
    real_write = tifffile.TiffWriter.write
    calls = []

    def write_then_fail(self, *a, **kw):
        calls.append(1)
        real_write(self, *a, **kw)  # the first image of the file is written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device (simulated halfway through the write)")
    monkeypatch.setattr(tifffile.TiffWriter, "write", write_then_fail)
    other = data["model"].copy()
    with pytest.raises(OSError, match="No space left"):
        pixlab.predict_file(other, data["image_path"], out, output="labels", measurements=True, overwrite=True)
    monkeypatch.undo()
    assert calls, "the OME-TIFF writer was not reached"
    assert _listing(tmp_path) == before
    assert tifffile.imread(out).shape == (2, 96, 96)  # still the probabilities, not the label map


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_profile_write_failing_halfway_keeps_the_previous_profile(tmp_path, monkeypatch, suffix):
    import yaml

    path = tmp_path / f"profile{suffix}"
    pixlab.TrainConfig(epochs=7).save(path)
    before = _listing(tmp_path)
    module, name = (json, "dump") if suffix == ".json" else (yaml, "safe_dump")
    real_dump = getattr(module, name)

    def text_of(obj, *a, **kw):
        buf = io.StringIO()
        real_dump(obj, buf, *a, **kw)
        return buf.getvalue().encode()
    monkeypatch.setattr(module, name, lambda obj, f, *a, **kw: _half_then_disk_full(f, text_of(obj, *a, **kw)))
    with pytest.raises(OSError, match="No space left"):
        pixlab.TrainConfig(epochs=99).save(path)
    monkeypatch.undo()
    assert _listing(tmp_path) == before
    assert pixlab.TrainConfig.load(path).epochs == 7


def test_every_file_a_workflow_writes_goes_through_a_temporary_name(tmp_path, monkeypatch, data):
    """Record every file opened for writing while pixlab saves labels, profiles, checkpoints, bundles,
    predictions (all formats), ONNX and figures: each must be a temporary name of pixlab._atomic (the
    final names only ever appear by rename)."""
    import safetensors.torch

    from pixlab.annotation import AnnotationSession
    from pixlab.image.io import write_ome_tiff
    from pixlab.labels.masks import save_labels
    from pixlab.app.runner import Project

    root = tmp_path / "work"
    root.mkdir()
    written: list[str] = []
    real_open, real_os_open, real_save_file = builtins.open, os.open, safetensors.torch.save_file
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def note(path):
        try:
            p = Path(os.fsdecode(path)).absolute()
        except TypeError:  # a file descriptor
            return
        if p.is_relative_to(root):
            written.append(p.relative_to(root).as_posix())

    def rec_open(file, mode="r", *a, **kw):
        if any(c in mode for c in "wax+"):
            note(file)
        return real_open(file, mode, *a, **kw)

    def rec_os_open(path, flags, *a, **kw):
        if flags & write_flags:
            note(path)
        return real_os_open(path, flags, *a, **kw)

    def rec_save_file(tensors, filename, *a, **kw):
        note(filename)
        return real_save_file(tensors, filename, *a, **kw)

    monkeypatch.setattr(builtins, "open", rec_open)
    monkeypatch.setattr(io, "open", rec_open)
    monkeypatch.setattr(os, "open", rec_os_open)
    monkeypatch.setattr(safetensors.torch, "save_file", rec_save_file)

    img, labels, model = data["img"], data["labels"], data["model"]
    write_ome_tiff(root / "image.ome.tif", img.read(), channel_names=img.channel_names)
    save_labels(root / "a.labels.png", labels)
    save_labels(root / "a.labels.tif", labels)
    s = AnnotationSession([root / "image.ome.tif"], CLASSES, labels_dir=root / "labels", autosave=False)
    s.paint([(10, 10), (10, 40)], 1, radius=2)
    s.flush()
    s.close()
    pixlab.TrainConfig(epochs=3).save(root / "profile.json")
    pixlab.TrainConfig(epochs=3).save(root / "profile.yaml")
    trained = pixlab.train([(img, labels)], pixlab.TrainConfig(**TINY, epochs=1), class_names=CLASSES,
                           checkpoint_dir=root / "ck", progress=False)
    trained.save(root / "model")
    pixlab.predict_file(model, root / "image.ome.tif", root / "p.ome.tif", measurements=True, geojson=True,
                        overlay=True)
    pixlab.predict_file(model, root / "image.ome.tif", root / "p.ome.zarr", output="labels")
    model.export_onnx(root / "model.onnx")
    from matplotlib.figure import Figure
    Project(root / "project").save_figure(Figure(), "empty.png")
    monkeypatch.undo()

    final = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    for expected in ("a.labels.png", "labels/image.labels.png", "profile.yaml", "ck/last/checkpoint.json",
                     "ck/best/model.safetensors", "model/metadata.json", "p.ome.tif", "p.geojson",
                     "p.measurements.csv", "p.overlay.png", "model.onnx", "project/figures/empty.png"):
        assert expected in final, f"{expected} was not written: {sorted(final)}"
    assert written, "the recorder saw no writes"
    direct = sorted({w for w in written if not any(TMP_NAME.match(part) for part in w.split("/"))})
    assert direct == [], f"written in place, not through pixlab._atomic: {direct}"
    assert not [f for f in final if any(TMP_NAME.match(part) for part in f.split("/"))], "temporary files left"


# ------------------------------------------------------------------------------------------------
# Reproducibility
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_same_seed_same_data_same_model_through_the_cli(tmp_path, data, capsys):
    import importlib.metadata as md

    import torch
    from safetensors.torch import load_file

    def cli_train(out, labels_path):
        args = ["train", "--image", str(data["image_path"]), "--labels", str(labels_path), "--classes", *CLASSES,
                "--output", str(out)]
        for k, v in {**TINY, "epochs": 1, "patches_per_epoch": 4, "seed": 3}.items():
            args += ["--set", f"{k}={str(v).lower()}"]
        assert main(args) == 0

    cli_train(tmp_path / "m1", data["labels_path"])
    cli_train(tmp_path / "m2", data["labels_path"])
    w1, w2 = (load_file(str(tmp_path / m / "model.safetensors")) for m in ("m1", "m2"))
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    m1, m2 = pixlab.load_model(tmp_path / "m1"), pixlab.load_model(tmp_path / "m2")
    np.testing.assert_array_equal(m1.predict(data["img"]), m2.predict(data["img"]))

    meta = json.loads((tmp_path / "m1" / "metadata.json").read_text())
    for pkg in ("pixlab", "torch", "segmentation-models-pytorch"):
        assert meta["versions"][pkg] == md.version(pkg)
    assert meta["config"]["seed"] == 3 and meta["config"]["epochs"] == 1
    assert meta["config"]["architecture"] == "tiny_unet" and meta["config"]["patches_per_epoch"] == 4
    fingerprint = meta["data_fingerprint"]
    assert re.fullmatch(r"[0-9a-f]{16}", fingerprint)
    assert json.loads((tmp_path / "m2" / "metadata.json").read_text())["data_fingerprint"] == fingerprint

    # Other training data -> another fingerprint (one stroke pixel less).
    from pixlab.labels.masks import save_labels
    changed = data["labels"].copy()
    changed[tuple(np.argwhere(changed == 1)[0])] = 0
    save_labels(tmp_path / "changed.png", changed)
    cli_train(tmp_path / "m3", tmp_path / "changed.png")
    assert json.loads((tmp_path / "m3" / "metadata.json").read_text())["data_fingerprint"] != fingerprint

    capsys.readouterr()
    assert main(["info", str(tmp_path / "m1")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["versions"]["torch"] == md.version("torch") and info["classes"] == CLASSES
