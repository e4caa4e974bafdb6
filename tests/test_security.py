"""Security: no pickle anywhere, no path outside a bundle followed, JupyterLab on loopback with a token.

The malicious files here create a marker file when unpickled (what an attacker's checkpoint would do
with a shell command instead); every loading path must refuse them with an explanation and the
marker must never appear.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import pixlab
from pixlab.app.cli import main

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["bg", "nuclei"]
TINY = dict(architecture="tiny_unet", pretrained=False, tile_size=64, epochs=1, batch_size=2,
            patches_per_epoch=4, recipe="standard", device="cpu")

pytestmark = [pytest.mark.filterwarnings("ignore:.*labelled pixels of class:UserWarning"),
              pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")]


class _Evil:
    """Unpickling this creates ``path``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A bundle and a checkpoint folder written by ``pixlab train`` (the CLI), and its inputs."""
    from pixlab.datasets import strokes_from_mask, synthetic_fluorescence
    from pixlab.image.io import write_ome_tiff
    from pixlab.labels.masks import save_labels

    d = tmp_path_factory.mktemp("security")
    img, truth = synthetic_fluorescence(shape=(64, 64), n_channels=2, n_nuclei=5, seed=6)
    write_ome_tiff(d / "img.ome.tif", img.read(), channel_names=img.channel_names)
    save_labels(d / "labels.png", strokes_from_mask(truth, strokes_per_class=4, seed=6))
    args = ["train", "--image", str(d / "img.ome.tif"), "--labels", str(d / "labels.png"), "--classes", *CLASSES,
            "--output", str(d / "model"), "--checkpoint-dir", str(d / "ck")]
    for k, v in TINY.items():
        args += ["--set", f"{k}={str(v).lower()}"]
    assert main(args) == 0
    return d


@pytest.fixture
def evil(tmp_path):
    """Malicious files (raw pickle and PyTorch zip format) and the marker their unpickling would create."""
    import torch

    marker = tmp_path / "pwned"
    raw = tmp_path / "evil-raw.pkl"
    raw.write_bytes(pickle.dumps(_Evil(str(marker))))
    zipped = tmp_path / "evil-zip.pth"
    torch.save({"state_dict": {"weight": _Evil(str(marker))}}, zipped)
    assert not marker.exists()
    return {"marker": marker, "files": [raw, zipped]}


def _as(path: Path, name: str) -> Path:
    """A copy of ``path`` under another name (suffix) in the same folder."""
    target = path.parent / name
    shutil.copyfile(path, target)
    return target


def _safetensors_layout(path: Path) -> tuple[dict, int]:
    """(header, size): a safetensors file is an 8-byte length, a JSON header, then raw tensor bytes."""
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), len(blob) - 8 - n


# ------------------------------------------------------------------------------------------------
# Bundles and checkpoints hold only safetensors + JSON
# ------------------------------------------------------------------------------------------------
def test_bundles_and_checkpoints_hold_only_safetensors_and_json(trained):
    folders = {"model": ["metadata.json", "model.safetensors"],
               "ck/best": ["metadata.json", "model.safetensors"],
               "ck/last": ["checkpoint.json", "checkpoint.safetensors"]}
    for folder, names in folders.items():
        d = trained / folder
        assert sorted(p.name for p in d.iterdir()) == names
        for p in d.iterdir():
            if p.suffix == ".json":
                json.loads(p.read_text(encoding="utf-8"))
            else:
                header, payload = _safetensors_layout(p)
                # Every byte after the header belongs to a declared tensor: nothing else can hide there.
                spans = sorted(tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__")
                assert spans[0][0] == 0 and spans[-1][1] == payload
                assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
                assert all(isinstance(v, str) for v in header.get("__metadata__", {}).values())


# ------------------------------------------------------------------------------------------------
# Malicious pickles are never unpickled
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".pkl", ".bin"])
def test_load_model_refuses_pickle_files_with_an_explanation(evil, suffix):
    for f in evil["files"]:
        with pytest.raises(ValueError, match=r"pickle file; pixlab does not unpickle files because loading a "
                                             r"pickle can run arbitrary code"):
            pixlab.load_model(_as(f, f"model{suffix}"))
        with pytest.raises(ValueError, match="pickle"):
            pixlab.TrainConfig.from_model(_as(f, f"settings{suffix}"))
    assert not evil["marker"].exists()


def test_load_model_refuses_a_folder_of_pickles_and_pickles_posing_as_safetensors(evil, trained, tmp_path):
    folder = tmp_path / "pickles"
    folder.mkdir()
    for f in evil["files"]:
        shutil.copyfile(f, folder / f"{f.stem}.pth")
    with pytest.raises(FileNotFoundError, match=r"no metadata\.json.*pickle-based file\(s\).*arbitrary code"):
        pixlab.load_model(folder)
    for f in evil["files"]:
        bundle = tmp_path / f"disguised-{f.stem}"
        shutil.copytree(trained / "model", bundle)
        shutil.copyfile(f, bundle / "model.safetensors")  # a pickle named like safetensors
        with pytest.raises(ValueError, match=r"cannot read weights .*damaged"):
            pixlab.load_model(bundle)
        meta = json.loads((bundle / "metadata.json").read_text())
        shutil.copyfile(f, bundle / "weights.pth")  # metadata naming a pickle inside the bundle
        (bundle / "metadata.json").write_text(json.dumps({**meta, "weights": "weights.pth"}))
        with pytest.raises(ValueError, match=r"cannot read weights"):
            pixlab.load_model(bundle)
    assert not evil["marker"].exists()


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".torch"])
def test_pretrained_weight_files_are_read_with_weights_only(evil, suffix):
    from pixlab.nn.networks import build_network

    for f in evil["files"]:
        with pytest.raises(ValueError, match=r"is not a plain tensor state dict \(UnpicklingError\).*"
                                             r"weights_only=True"):
            build_network("unet", "resnet18", 3, 2, weights_path=_as(f, f"encoder{suffix}"))
    assert not evil["marker"].exists()


def test_training_refuses_pickles_as_resume_checkpoint_and_init_from(evil, trained, tmp_path):
    from pixlab.labels.masks import load_labels

    samples = [(trained / "img.ome.tif", load_labels(trained / "labels.png"))]
    cfg = pixlab.TrainConfig(**TINY)
    for f in evil["files"]:
        ck = tmp_path / f"ck-{f.stem}"
        shutil.copytree(trained / "ck", ck)
        shutil.copyfile(f, ck / "last" / "checkpoint.safetensors")
        with pytest.raises(ValueError, match=r"cannot read checkpoint .*damaged"):
            pixlab.train(samples, cfg, class_names=CLASSES, resume=ck, progress=False)
        with pytest.raises(ValueError, match="pickle"):
            pixlab.train(samples, cfg, class_names=CLASSES, init_from=_as(f, "init.pth"), progress=False)
    # Through the CLI too: one line, no traceback.
    args = ["train", "--image", str(trained / "img.ome.tif"), "--labels", str(trained / "labels.png"),
            "--classes", *CLASSES, "--output", str(tmp_path / "m"), "--resume", str(ck)]
    for k, v in TINY.items():
        args += ["--set", f"{k}={str(v).lower()}"]
    assert main(args) == 2
    assert not (tmp_path / "m").exists()
    assert not evil["marker"].exists()


# ------------------------------------------------------------------------------------------------
# Paths inside metadata are never followed outside the bundle folder
# ------------------------------------------------------------------------------------------------
def test_weight_paths_in_metadata_cannot_leave_the_bundle(trained, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copyfile(trained / "model" / "model.safetensors", outside / "model.safetensors")  # valid weights
    cases = {"relative": "../outside/model.safetensors", "absolute": str(outside / "model.safetensors")}
    for name, weights in cases.items():
        bundle = tmp_path / name
        shutil.copytree(trained / "model", bundle)
        meta = json.loads((bundle / "metadata.json").read_text())
        (bundle / "metadata.json").write_text(json.dumps({**meta, "weights": weights}))
        with pytest.raises(ValueError, match="outside the model folder; refusing to follow it"):
            pixlab.load_model(bundle)
    # A symlink inside the bundle that points outside is refused as well.
    bundle = tmp_path / "symlinked"
    shutil.copytree(trained / "model", bundle)
    (bundle / "model.safetensors").unlink()
    (bundle / "model.safetensors").symlink_to(outside / "model.safetensors")
    with pytest.raises(ValueError, match="outside the model folder"):
        pixlab.load_model(bundle)


def test_loading_a_bundle_opens_nothing_outside_it(trained, tmp_path, monkeypatch, evil):
    """A config in the metadata may name files (pretrained weights_path); loading never opens them."""
    import builtins
    import io

    bundle = tmp_path / "bundle"
    shutil.copytree(trained / "model", bundle)
    meta = json.loads((bundle / "metadata.json").read_text())
    meta["config"]["weights_path"] = str(_as(evil["files"][1], "encoder.pth"))
    (bundle / "metadata.json").write_text(json.dumps(meta))
    opened = []
    real_open = builtins.open

    def rec_open(file, *a, **kw):
        if isinstance(file, (str, os.PathLike)):
            opened.append(Path(os.fsdecode(file)).absolute())
        return real_open(file, *a, **kw)
    monkeypatch.setattr(builtins, "open", rec_open)
    monkeypatch.setattr(io, "open", rec_open)
    model = pixlab.load_model(bundle)
    monkeypatch.undo()
    assert model.class_names == CLASSES
    mine = [p for p in opened if p.is_relative_to(tmp_path)]
    assert mine and all(p.is_relative_to(bundle) for p in mine), mine
    assert not evil["marker"].exists()


# ------------------------------------------------------------------------------------------------
# JupyterLab: loopback only, with a token
# ------------------------------------------------------------------------------------------------
def _lab_command() -> str:
    """The command `make lab` runs (dry run: nothing is executed)."""
    r = subprocess.run(["make", "-n", "-s", "lab"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.replace("\\\n", " ").splitlines() if "jupyter lab" in line]
    assert len(lines) == 1, r.stdout
    return lines[0].strip()


# Settings that would open a Jupyter server to the network or drop its authentication.
_OPEN_ACCESS = re.compile(r"\bip=(?!127\.0\.0\.1\b|localhost\b)|token=(''|\"\"|\s|$)|password=(''|\"\")|"
                          r"disable_check_xsrf|allow_remote_access|allow_origin")


def test_no_runner_starts_jupyter_lab_off_loopback_or_without_a_token():
    cmd = _lab_command()
    assert "--ServerApp.ip=127.0.0.1" in cmd and not _OPEN_ACCESS.search(cmd), cmd
    # Anything else in the project that starts a Jupyter server must say 127.0.0.1 and keep the token.
    files = [REPO / "Makefile", *REPO.glob(".ci/*"), *REPO.glob("scripts/*"), *REPO.glob("pixlab/**/*.py")]
    starters = [p for p in files if p.is_file() and re.search(
        r"jupyter[\"', ]+(lab|server|notebook)\b|ServerApp\b|serverapp", p.read_text(errors="replace"))]
    assert REPO / "Makefile" in starters
    for p in starters:
        text = p.read_text(errors="replace")
        assert "127.0.0.1" in text and not _OPEN_ACCESS.search(text), p


@pytest.mark.slow
def test_make_lab_command_serves_only_loopback_and_requires_its_token(tmp_path):
    """Run the exact `make lab` command (plus a free port): unauthenticated requests are refused, the
    printed token works, and every listening socket is on 127.0.0.1."""
    import psutil

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data"), "IPYTHONDIR": str(tmp_path / "ipy")}
    env.pop("JUPYTER_TOKEN", None)
    log = tmp_path / "lab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", "-c", f"{_lab_command()} --ServerApp.port={port} "
                                 "--ServerApp.port_retries=0 --no-browser"],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        token = None
        while token is None:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            m = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=([0-9a-f]+)", log.read_text())
            token = m.group(1) if m else time.sleep(0.3)
        assert len(token) >= 32
        url = f"http://127.0.0.1:{port}/api/contents"
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url, timeout=10)
        assert denied.value.code == 403
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"token {token}"}),
                                    timeout=10) as r:
            assert r.status == 200
        shell = psutil.Process(proc.pid)
        listening = []
        for p in [shell, *shell.children(recursive=True)]:
            try:
                listening += [c.laddr for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
            except psutil.NoSuchProcess:
                pass  # a short-lived helper the server ran (CI saw one exit between the listing and this call)
        assert listening and all(a.ip == "127.0.0.1" for a in listening), listening
    finally:
        for sig, wait in ((15, 20), (9, 10)):  # the server and the shell `make lab` runs it in
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        if proc.returncode is None:
            proc.wait(timeout=10)
