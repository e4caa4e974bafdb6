"""The device pipeline of predict_file (issue 15): device blending equals the numpy path, float32
blending is exact, worker threads end cleanly on errors and Ctrl-C, backend="auto", background skipping."""

import os
import threading

import numpy as np
import pytest
import tifffile
import torch

import pixlab
from pixlab.image.io import Image, write_ome_tiff
from pixlab.image.tissue import TissueMask
from pixlab.inference.blend import BandBlender
from pixlab.inference.pipeline import StripReader, run_tiles
from pixlab.inference.predict import predict_file
from pixlab.inference.tiling import blend_window, predict_tiled, tile_starts
from pixlab.labels.masks import default_colours
from pixlab.model.model import Model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ["background", "nuclei", "membrane"]
STATS = {"method": "min_max", "per_channel": True, "offset": [10.0, 0.0], "scale": [4000.0, 3000.0],
         "clip": None}


def conv_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 3, 3, padding=1)).eval()


def make_model(network=None):
    cfg = pixlab.TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=64, recipe="standard",
                             device="cpu")
    return Model(network if network is not None else conv_net(), CLASSES, default_colours(3),
                 ["DAPI", "Membrane"], STATS, cfg)


def uint16_image(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4000, size=(2,) + shape, dtype=np.uint16)


def device_predict(data, net, tile, overlap, batch_size=3, window="gaussian", device="cpu", dtype_out="float32",
                   **blend_kw):
    """predict_file's device path on an in-memory image: what it stores (float32 probabilities by default)."""
    img = Image(data, ["DAPI", "Membrane"])
    height, width = data.shape[1:]
    step = max(1, round(tile * (1 - overlap)))
    boxes = [(y, x) for y in tile_starts(height, tile, step) for x in tile_starts(width, tile, step)]
    blender = BandBlender(3, height, width, tile, blend_window(tile, window), device,
                          dtype=dtype_out, **blend_kw)
    reader = StripReader(img, tile, torch.device(device), workers=2)
    rows = []
    try:
        run_tiles(reader, boxes, (height, width), tile, batch_size, STATS, net, blender,
                  lambda r: rows.append(r.ready()))
    finally:
        reader.close()
    assert [r.y0 for r in rows] == sorted(r.y0 for r in rows) and rows[-1].y1 == height
    return np.concatenate([r.out for r in rows], axis=1), rows


def numpy_predict(data, net, tile, overlap, batch_size=3, window="gaussian"):
    from pixlab.image.normalize import apply

    def infer(batch):
        with torch.inference_mode():
            return torch.softmax(net(torch.from_numpy(batch)), 1).numpy()

    return predict_tiled(lambda y0, y1, x0, x1: apply(data[:, y0:y1, x0:x1], STATS), data.shape[1:], 3, infer,
                         tile=tile, overlap=overlap, batch_size=batch_size, window=window)


@pytest.mark.parametrize("shape, tile, overlap", [((150, 170), 64, 0.25), ((97, 203), 32, 0.5),
                                                   ((40, 30), 64, 0.25), ((64, 64), 64, 0.0)])
def test_device_path_equals_the_numpy_path(shape, tile, overlap):
    data = uint16_image(shape)
    net = conv_net()
    got, _ = device_predict(data, net, tile, overlap)
    expected = numpy_predict(data, net, tile, overlap)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-6)


def test_device_quantisation_and_labels_equal_the_numpy_rules():
    from pixlab.inference.outputs import to_output

    data = uint16_image((90, 120), seed=1)
    net = conv_net(1)
    probs, rows = device_predict(data, net, 32, 0.25, labels=True, preview_factor=4)
    np.testing.assert_array_equal(np.concatenate([r.labels for r in rows]), np.argmax(probs, axis=0) + 1)
    columns = np.concatenate([r.columns for r in rows], axis=1)
    np.testing.assert_allclose(columns, np.pad(probs, ((0, 0), (0, 0), (0, 0))).reshape(3, 90, 30, 4).sum(3),
                               atol=1e-5)
    u8, _ = device_predict(data, net, 32, 0.25, dtype_out="uint8")
    np.testing.assert_array_equal(u8, to_output(probs, "probabilities", "uint8"))
    lab, _ = device_predict(data, net, 32, 0.25, output="labels")
    np.testing.assert_array_equal(lab, to_output(probs, "labels", "uint8"))


class ConstantLogits(torch.nn.Module):
    def __init__(self, values):
        super().__init__()
        self.values = torch.tensor(values, dtype=torch.float32)

    def forward(self, x):
        return self.values[None, :, None, None].expand(x.shape[0], -1, x.shape[2], x.shape[3]).clone()


@pytest.mark.parametrize("overlap", [0.1, 0.25, 0.5])
def test_float32_blending_of_a_constant_network_is_constant_within_one_ulp(overlap):
    values = [0.3, -1.1, 2.7]
    expected = torch.softmax(torch.tensor(values), 0).numpy()
    data = uint16_image((131, 157), seed=2)
    net = ConstantLogits(values)
    on_device, _ = device_predict(data, net, 32, overlap)
    in_numpy = numpy_predict(data, net, 32, overlap)
    for got in (on_device, in_numpy):
        assert got.dtype == np.float32
        ulp = np.spacing(expected)[:, None, None]
        assert np.abs(got - expected[:, None, None]).max(axis=(1, 2)).tolist() <= (ulp[:, 0, 0]).tolist()


def test_numpy_accumulators_are_float32(monkeypatch):
    dtypes = []
    real_zeros = np.zeros

    def spy(shape, dtype=float, **kw):
        dtypes.append(np.dtype(dtype))
        return real_zeros(shape, dtype=dtype, **kw)

    monkeypatch.setattr(np, "zeros", spy)
    numpy_predict(uint16_image((40, 50)), conv_net(), 32, 0.25)
    assert np.dtype(np.float32) in dtypes and np.dtype(np.float64) not in dtypes


# -- threads end cleanly on errors and Ctrl-C ---------------------------------------------------------


@pytest.fixture
def big_image_file(tmp_path):
    data = uint16_image((300, 280), seed=4)
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, data, tile=(32, 32), compression="zlib", photometric="minisblack")
    return path


def _pixlab_threads():
    # the pipeline's own threads (an annotation session's preview thread left by another test is not one)
    return {t for t in threading.enumerate()
            if t.name.startswith(("pixlab-read", "pixlab-encode", "pixlab-writer", "pixlab-compute"))}


def _new_threads(before):
    # Libraries' lazily started unnamed pools (zarr's codec executor) persist by design; every
    # pipeline thread is named pixlab-*, and no other thread may appear.
    return {t for t in set(threading.enumerate()) - before if not t.name.startswith("ThreadPoolExecutor-")}


def _threads_after_a_warm_up(path, tmp_path, suffix=".ome.tif"):
    """Threads alive after one successful prediction: libraries' own long-lived daemons (zarr's I/O
    loop, tqdm's monitor) exist by then, so any thread beyond these was left by the failed call."""
    warm = tmp_path / "warm"
    warm.mkdir()
    predict_file(make_model(), path, warm / ("w" + suffix), tiff_tile=32)
    return set(threading.enumerate())


def test_a_reader_that_fails_mid_image_stops_every_thread_and_leaves_no_output(big_image_file, tmp_path,
                                                                              monkeypatch):
    import pixlab.inference.prepare as prepare

    real = prepare.read_rows
    calls = []

    def failing(img, y0, y1):
        calls.append(y0)
        if y0 >= 128:
            raise ValueError("cannot read image: simulated damaged strip")
        return real(img, y0, y1)

    before = _threads_after_a_warm_up(big_image_file, tmp_path)
    monkeypatch.setattr(prepare, "read_rows", failing)
    listing = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError, match="simulated damaged strip"):
        predict_file(make_model(), big_image_file, tmp_path / "o.ome.tif", measurements=True, tiff_tile=32)
    assert calls and max(calls) >= 128
    assert _new_threads(before) == set() and not _pixlab_threads()
    assert sorted(os.listdir(tmp_path)) == listing  # no output, no spool, no temporary file


class InterruptedNetwork(torch.nn.Module):
    """A network that is interrupted (Ctrl-C) on its third batch."""

    def __init__(self):
        super().__init__()
        self.net = conv_net()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 3:
            raise KeyboardInterrupt
        return self.net(x)


@pytest.mark.parametrize("suffix", [".ome.tif", ".ome.zarr"])
def test_ctrl_c_from_the_network_mid_image_stops_every_thread_and_leaves_no_output(big_image_file, tmp_path,
                                                                                  suffix):
    net = InterruptedNetwork()
    before = _threads_after_a_warm_up(big_image_file, tmp_path, suffix)
    listing = sorted(os.listdir(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        predict_file(make_model(net), big_image_file, tmp_path / ("o" + suffix), geojson=True, measurements=True,
                     tiff_tile=32, batch_size=2)
    assert net.calls == 3  # it stopped at the interruption instead of running on
    assert _new_threads(before) == set() and not _pixlab_threads()
    assert sorted(os.listdir(tmp_path)) == listing


def test_a_writer_error_mid_image_stops_the_readers_too(big_image_file, tmp_path, monkeypatch):
    import pixlab.inference.rasters as rasters

    real = rasters._TiffSpool.emit
    seen = []

    def failing(self, level, y0, block):
        seen.append(y0)
        if len(seen) == 3:
            raise OSError(28, "No space left on device")
        return real(self, level, y0, block)

    monkeypatch.setattr(rasters._TiffSpool, "emit", failing)
    listing = sorted(os.listdir(tmp_path))
    with pytest.raises(OSError, match="No space left"):
        predict_file(make_model(), big_image_file, tmp_path / "o.ome.tif", tiff_tile=32)
    assert not _pixlab_threads() and sorted(os.listdir(tmp_path)) == listing


# -- backend="auto" ---------------------------------------------------------------------------------------


def test_auto_backend_agrees_with_eager_float32_and_says_what_it_picked(big_image_file, tmp_path, capfd):
    from pixlab.inference.backends import AUTO_MIN_LABEL_AGREEMENT, measure_backends

    model = make_model()
    eager = predict_file(model, big_image_file, tmp_path / "e.ome.tif", output="labels", backend="eager")
    auto = predict_file(model, big_image_file, tmp_path / "a.ome.tif", output="labels", backend="auto")
    err = capfd.readouterr().err
    assert f"picked {auto['backend']!r}" in err and "eager" in err
    same = (tifffile.imread(tmp_path / "e.ome.tif") == tifffile.imread(tmp_path / "a.ome.tif")).mean()
    assert eager["backend"] == "eager" and same >= AUTO_MIN_LABEL_AGREEMENT

    sample = torch.rand(2, 2, 64, 64)
    rows = {r["backend"]: r for r in measure_backends(model, sample)}
    assert rows["eager"]["ok"] and rows["eager"]["max_prob_diff"] == 0
    for name, row in rows.items():
        if row["engine"] is not None:  # every candidate that ran was compared with eager float32
            assert row["ok"] == (row["label_agreement"] >= AUTO_MIN_LABEL_AGREEMENT and
                                 row["max_prob_diff"] <= 2e-2), name


def test_auto_never_keeps_a_candidate_that_disagrees(monkeypatch):
    import pixlab.inference.backends as backends

    model = make_model()
    real = backends._candidates

    class Wrong(backends.TorchEngine):
        def logits(self, x):  # fast and wrong: the classes swapped
            return super().logits(x).flip(1)

    def with_wrong(m):
        cands = real(m)
        cands["wrong"] = lambda: Wrong(m, "wrong", amp=None)
        return cands

    monkeypatch.setattr(backends, "_candidates", with_wrong)
    backends._AUTO_CHOICE.pop(model, None)
    rows = {r["backend"]: r for r in backends.measure_backends(model, torch.rand(2, 2, 32, 32))}
    assert rows["wrong"]["engine"] is not None and not rows["wrong"]["ok"]
    assert backends.get_backend(model, "auto", torch.rand(2, 2, 32, 32), verbose=False).name != "wrong"


# -- background skipping ------------------------------------------------------------------------------------


def test_background_mask_skips_tiles_and_marks_them_background(tmp_path):
    data = uint16_image((256, 256), seed=5)
    path = tmp_path / "in.ome.tif"
    write_ome_tiff(path, Image(data, ["DAPI", "Membrane"]))
    mask = np.zeros((16, 16), bool)
    mask[:, :5] = True  # tissue only in the left ~80 columns
    tm = TissueMask.from_array(mask, (256, 256))
    model = make_model()
    full = predict_file(model, path, tmp_path / "f.ome.tif", dtype="float32", background="none")
    part = predict_file(model, path, tmp_path / "p.ome.tif", dtype="float32", background=tm)
    assert full["tiles_skipped"] == 0 and 0 < part["tiles_skipped"] < part["tiles"]
    a, b = tifffile.imread(tmp_path / "f.ome.tif"), tifffile.imread(tmp_path / "p.ome.tif")
    np.testing.assert_array_equal(b[:, :, -40:], np.array([1.0, 0, 0], np.float32)[:, None, None] + 0 * b[:, :, -40:])
    np.testing.assert_allclose(b[:, :, :40], a[:, :, :40], atol=1e-5)  # covered only by computed tiles
    # "auto" on an image that is not a whole slide predicts everything
    auto = predict_file(model, path, tmp_path / "u.ome.tif", dtype="float32")
    assert auto["tiles_skipped"] == 0
    with pytest.raises(ValueError, match="background must be"):
        predict_file(model, path, tmp_path / "x.ome.tif", background="tissue")
    with pytest.raises(ValueError, match="background mask is for an image of size"):
        predict_file(model, path, tmp_path / "y.ome.tif", background=TissueMask(np.ones((16, 64), bool), 16.0, (256, 1024)))


def test_all_background_writes_a_background_map_without_running_the_network(tmp_path):
    data = uint16_image((128, 96), seed=6)
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    net = InterruptedNetwork()
    tm = TissueMask.from_array(np.zeros((8, 6), bool), (128, 96))
    res = predict_file(make_model(net), path, tmp_path / "o.ome.tif", output="labels", measurements=True,
                       background=tm)
    assert net.calls == 0 and res["tiles_skipped"] == res["tiles"]
    assert np.unique(tifffile.imread(tmp_path / "o.ome.tif")).tolist() == [1]
    assert res["measurements"]["pixels"].tolist() == [128 * 96, 0, 0]


def test_finished_rows_event_is_recorded_on_the_blenders_own_cuda_device(monkeypatch):
    # The compute thread's current CUDA device is cuda:0; for a model on cuda:1 the event that the
    # writer waits on must be recorded on cuda:1's stream, or rows are read before their copy ends.
    recorded = []

    class FakeEvent:
        def record(self, stream=None):
            recorded.append(stream)

        def synchronize(self):
            pass

    real_empty = torch.empty
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: ("stream of", torch.device(device)))
    monkeypatch.setattr(torch, "empty", lambda *a, pin_memory=False, **k: real_empty(*a, **k))
    blender = BandBlender(2, 8, 8, 8, np.ones((8, 8), np.float32), "cpu")
    blender.device = torch.device("cuda:1")  # only _to_host's CUDA branch runs, on CPU tensors
    rows = blender._to_host(0, 8, {"out": torch.ones((2, 8, 8), dtype=torch.uint8)}).ready()
    assert recorded == [("stream of", torch.device("cuda:1"))]
    assert rows.out.shape == (2, 8, 8) and (rows.out == 1).all()
