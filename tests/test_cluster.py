"""pixlab.inference.cluster: Dask batch inference (one task per image, model loaded once per worker)."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
from distributed import Client, WorkerPlugin

import pixlab
import pixlab.inference.predict
from pixlab.inference import cluster
from pixlab.inference.cluster import make_local_cluster, predict_many
from pixlab.inference.predict import output_paths, predict_file

# Helpers below run on spawned Dask workers, which cannot import this test module: ship them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

N_IMAGES = 4


def _real_predict_file():
    """pixlab.inference.predict.predict_file as it was before a test replaced it on this worker."""
    p = pixlab.inference.predict
    return vars(p).get("_pixlab_test_orig") or p.predict_file


class _UsePredictFile(WorkerPlugin):
    """Make the workers' pixlab.inference.predict.predict_file ``fn`` (None: the real one).

    A plugin (not client.run) so that workers restarted after a crash get it too.
    """

    def __init__(self, fn=None):
        self.fn = fn

    def setup(self, worker):
        p = pixlab.inference.predict
        if "_pixlab_test_orig" not in vars(p):
            p._pixlab_test_orig = p.predict_file
        p.predict_file = self.fn or p._pixlab_test_orig


class _HideModule(WorkerPlugin):
    """Make a module unimportable on the workers (a worker environment without a dependency)."""

    def __init__(self, name):
        self.name = name

    def setup(self, worker):
        self.saved = sys.modules.get(self.name)
        sys.modules[self.name] = None

    def teardown(self, worker):
        if self.saved is None:
            del sys.modules[self.name]
        else:
            sys.modules[self.name] = self.saved


def _die_once(marker_dir, victim):
    def fn(model, in_path, out_path, overwrite=False, **kw):
        marker = Path(marker_dir) / (Path(in_path).name + ".attempt")
        if Path(in_path).name == victim and not marker.exists():
            marker.write_text("1")
            os._exit(1)  # the worker process dies mid-task, as when the OOM killer hits it
        return _real_predict_file()(model, in_path, out_path, overwrite=overwrite, **kw)
    return fn


def _flaky_once(marker_dir):
    def fn(model, in_path, out_path, overwrite=False, **kw):
        marker = Path(marker_dir) / (Path(in_path).name + ".attempt")
        if not marker.exists():
            marker.write_text("1")
            raise RuntimeError("transient: network filesystem hiccup")
        return _real_predict_file()(model, in_path, out_path, overwrite=overwrite, **kw)
    return fn


def _oom(model, in_path, out_path, overwrite=False, **kw):
    if "img0" in str(in_path):
        raise MemoryError()
    raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.7 GiB total capacity)")


def _loads():
    return cluster.LOADS


# ---------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny trained bundle and N_IMAGES small 2-channel OME-TIFFs."""
    from pixlab.datasets import strokes_from_mask, synthetic_fluorescence
    from pixlab.image.io import write_ome_tiff
    root = tmp_path_factory.mktemp("cluster")
    img, truth = synthetic_fluorescence(shape=(96, 96), n_channels=2, n_nuclei=8, seed=1)
    labels = strokes_from_mask(truth, strokes_per_class=6, radius=2, length=(6, 12), seed=1)
    cfg = pixlab.TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=64, epochs=1, batch_size=4,
                             patches_per_epoch=8, recipe="standard", device="cpu", early_stopping=False)
    pixlab.train([(img, labels)], cfg, class_names=["background", "nuclei"], progress=False).save(root / "model")
    ins = root / "in"
    ins.mkdir()
    for i in range(N_IMAGES):
        im, _ = synthetic_fluorescence(shape=(96, 80 + 8 * i), n_channels=2, n_nuclei=6, seed=10 + i)
        write_ome_tiff(ins / f"img{i}.ome.tif", im, pyramid=False)
    return root


@pytest.fixture(scope="module")
def client():
    # Not the default scheduler of this process: the serial reference path must read images locally.
    with make_local_cluster(2) as lc, Client(lc, set_as_default=False) as c:
        c.register_plugin(_UsePredictFile(), name="pixlab-test-predict")
        yield c


@pytest.fixture
def use(client):
    """use(fn): run fn as predict_file on the workers for this test only."""
    def set_fn(fn):
        client.register_plugin(_UsePredictFile(fn), name="pixlab-test-predict")
    yield set_fn
    client.register_plugin(_UsePredictFile(), name="pixlab-test-predict")


def _read(path):
    return np.asarray(pixlab.open_image(path).read())


def _fresh_model(data, name):
    # A different folder is a different cache key: workers must load it anew.
    dst = data / name
    if not dst.exists():
        shutil.copytree(data / "model", dst)
    return dst


# ---------------------------------------------------------------------------------------- tests
def _out(p, folder):
    return output_paths(p, folder, ["ome-tiff"])["ome-tiff"]


@pytest.mark.slow
def test_two_workers_match_the_serial_path_and_load_the_model_once_per_worker(data, client, tmp_path):
    model_dir = _fresh_model(data, "model_parity")
    model = pixlab.load_model(model_dir)
    inputs = sorted((data / "in").iterdir())
    (tmp_path / "serial").mkdir()
    for p in inputs:
        predict_file(model, p, _out(p, tmp_path / "serial"), dtype="float32", backend="eager")

    before = sum(client.run(_loads).values())
    rows = predict_many(model_dir, data / "in", tmp_path / "dask", client=client, dtype="float32",
                        backend="eager", progress=False)
    loads = sum(client.run(_loads).values()) - before

    assert [r["status"] for r in rows] == ["done"] * N_IMAGES, rows
    assert [Path(r["input"]).name for r in rows] == [p.name for p in inputs]  # input order
    assert {r["worker"] for r in rows} <= set(client.scheduler_info()["workers"])
    for p, r in zip(inputs, rows):
        assert Path(r["output"]) == _out(p, tmp_path / "dask")
        a, b = _read(r["output"]), _read(_out(p, tmp_path / "serial"))
        assert a.dtype == np.float32 and a.shape == b.shape == (2, *pixlab.open_image(p).shape[1:])
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert 1 <= loads <= 2, loads  # once per worker, not once per image
    # Nothing else was written next to the outputs (no temp files left behind).
    assert sorted(os.listdir(tmp_path / "dask")) == sorted(_out(p, ".").name for p in inputs)

    # Existing outputs are skipped unless overwrite=True.
    again = predict_many(model_dir, data / "in", tmp_path / "dask", client=client, progress=False)
    assert [r["status"] for r in again] == ["skipped"] * N_IMAGES
    one = predict_many(model_dir, inputs[:1], tmp_path / "dask", client=client, overwrite=True,
                       formats=["ome-tiff", "csv"], progress=False)
    assert one[0]["status"] == "done" and _read(one[0]["output"]).dtype == np.uint8  # predict_file's default
    assert Path(one[0]["outputs"]["csv"]).is_file() and (tmp_path / "dask" / "measurements.csv").is_file()


def test_transient_error_is_retried_by_dask(data, client, use, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    use(_flaky_once(str(markers)))
    rows = predict_many(data / "model", data / "in" / "img0.ome.tif", tmp_path / "out", client=client,
                        progress=False)
    assert rows[0]["status"] == "done" and Path(rows[0]["output"]).is_file()
    # With retries=0 the same failure is reported for that image, with its message.
    rows = predict_many(data / "model", data / "in" / "img2.ome.tif", tmp_path / "out", client=client,
                        retries=0, progress=False)
    assert rows[0]["status"] == "failed" and "hiccup" in rows[0]["error"]
    assert not Path(rows[0]["output"]).exists()


def test_out_of_memory_is_reported_per_image_with_a_hint(data, client, use, tmp_path):
    use(_oom)
    ins = [data / "in" / "img0.ome.tif", data / "in" / "img1.ome.tif"]
    rows = predict_many(data / "model", ins, tmp_path / "out", client=client, progress=False)
    assert [r["status"] for r in rows] == ["failed", "failed"]
    for r in rows:
        assert "out of memory" in r["error"] and "batch_size" in r["error"] and "tile_size" in r["error"]
        assert r["worker"] is not None
    assert not any((tmp_path / "out").iterdir())


def test_worker_without_a_dependency_gets_a_clear_per_image_error(data, client, tmp_path):
    model_dir = _fresh_model(data, "model_deps")  # not cached on the workers yet
    client.register_plugin(_HideModule("safetensors"), name="pixlab-test-hide")
    try:
        rows = predict_many(model_dir, data / "in" / "img0.ome.tif", tmp_path / "out", client=client,
                            progress=False)
    finally:
        client.unregister_worker_plugin("pixlab-test-hide")
    err = rows[0]["error"]
    assert rows[0]["status"] == "failed"
    assert "safetensors" in err and "install" in err and "torch" in err  # names the module and versions


@pytest.mark.slow  # last of the cluster tests: the restarted worker starts cold
def test_worker_killed_mid_run_is_retried_and_completes(data, client, use, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    use(_die_once(str(markers), "img1.ome.tif"))
    rows = predict_many(data / "model", data / "in", tmp_path / "out", client=client, progress=False)
    assert (markers / "img1.ome.tif.attempt").exists()  # the worker did die once on it
    assert [r["status"] for r in rows] == ["done"] * N_IMAGES, rows
    predict_file(data / "model", data / "in" / "img1.ome.tif", tmp_path / "ref.ome.tif")
    np.testing.assert_array_equal(_read(rows[1]["output"]), _read(tmp_path / "ref.ome.tif"))


@pytest.mark.slow
def test_cli_scheduler_local_starts_and_closes_its_own_cluster(data, tmp_path):
    # A fresh process (distributed not imported yet), as a user runs it: the default cluster path.
    cmd = [sys.executable, "-m", "pixlab", "predict", "--model", str(data / "model"), "--input",
           str(data / "in" / "img3.ome.tif"), "--output", str(tmp_path / "o") + os.sep,
           "--scheduler", "local", "--no-progress"]  # one image: a one-worker cluster
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "1 done, 0 skipped" in r.stdout and "Traceback" not in r.stderr
    assert os.listdir(tmp_path / "o") == ["img3.ome.tif"]


def test_local_cluster_is_sized_to_the_machine():
    # The default cluster (scheduler=None) runs the code the fixture above runs, sized like this;
    # bench/dask_predict.py exercises it end to end.
    n = cluster._default_workers()
    assert 1 <= n <= max(cluster._usable_cores(), 1)
    with pytest.raises(ValueError, match="n_workers"):
        make_local_cluster(0)


def test_unreachable_scheduler_is_a_clear_error(data, tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "SCHEDULER_TIMEOUT_S", 1)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    addr = f"tcp://127.0.0.1:{port}"
    with pytest.raises(ValueError, match="cannot reach Dask scheduler at") as e:
        predict_many(data / "model", data / "in", tmp_path / "out", scheduler=addr, progress=False)
    assert addr in str(e.value) and "dask scheduler" in str(e.value)
    assert not any((tmp_path / "out").iterdir())


def test_bad_arguments_fail_before_any_work(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder"):
        predict_many(tmp_path / "nope", data / "in", tmp_path / "out")
    with pytest.raises(ValueError, match="model.save"):
        predict_many(pixlab.load_model(data / "model"), data / "in", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        predict_many(data / "model", [tmp_path / "missing.tif"], tmp_path / "out")
    with pytest.raises(ValueError, match="input image"):  # would overwrite its own input
        predict_many(data / "model", data / "in", data / "in", overwrite=True)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(data / "in" / "img0.ome.tif", tmp_path / "a" / "x.tif")
    shutil.copy(data / "in" / "img0.ome.tif", tmp_path / "b" / "x.tif")
    with pytest.raises(ValueError, match="both be written"):
        predict_many(data / "model", [tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    with pytest.raises(ValueError, match="either client= or scheduler="):
        predict_many(data / "model", data / "in", tmp_path / "out", client=object(), scheduler="local")
    with pytest.raises(ValueError, match="retries"):
        predict_many(data / "model", data / "in", tmp_path / "out", retries=-1)
    assert not (tmp_path / "out").exists()  # nothing created by a failed call
