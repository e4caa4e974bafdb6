import threading
import time

import numpy as np
import pytest

from pixlab.inference.tiling import blend_window, predict_tiled, tile_starts


def _reader(image):
    return lambda y0, y1, x0, x1: image[:, y0:y1, x0:x1]


def _random_image(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize(
    "length, tile, step, expected",
    [
        (10, 4, 3, [0, 3, 6]),
        (11, 4, 3, [0, 3, 6, 7]),
        (4, 4, 2, [0]),
        (3, 4, 2, [0]),
        (1, 1, 1, [0]),
    ],
)
def test_tile_starts(length, tile, step, expected):
    assert tile_starts(length, tile, step) == expected


@pytest.mark.parametrize("length, tile, step", [(100, 32, 24), (33, 32, 16), (257, 64, 48)])
def test_tile_starts_cover_axis_without_gaps(length, tile, step):
    starts = tile_starts(length, tile, step)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()
    assert starts[-1] + tile == length
    assert all(b - a <= step for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("kind", ["gaussian", "cosine", "GAUSSIAN"])
@pytest.mark.parametrize("tile", [1, 7, 32])
def test_blend_window_positive_symmetric(kind, tile):
    w = blend_window(tile, kind)
    assert w.shape == (tile, tile) and w.dtype == np.float32
    assert w.min() > 0 and w.max() == pytest.approx(1.0)
    np.testing.assert_array_equal(w, w.T)
    np.testing.assert_array_equal(w, w[::-1, ::-1])


def test_blend_window_unknown_kind():
    with pytest.raises(ValueError, match="gaussian"):
        blend_window(8, "box")


@pytest.mark.parametrize("window", ["gaussian", "cosine"])
@pytest.mark.parametrize("shape", [(70, 90), (20, 13), (1, 50), (50, 1)])
def test_constant_network_gives_exact_constant(window, shape):
    values = np.array([0.1, 0.7, 1 / 3], dtype=np.float32)

    def infer(batch):
        out = np.empty((len(batch), 3) + batch.shape[2:], np.float32)
        out[:] = values[None, :, None, None]
        return out

    image = _random_image((1,) + shape)
    out = predict_tiled(
        _reader(image), shape, 3, infer, tile=32, overlap=0.4, batch_size=3, window=window
    )
    assert out.shape == (3,) + shape and out.dtype == np.float32
    expected = np.broadcast_to(values[:, None, None], out.shape)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("prefetch", [True, False])
@pytest.mark.parametrize(
    "shape", [(64, 64), (70, 90), (33, 100), (20, 13), (1, 50), (50, 1), (1, 1), (5, 40)]
)
def test_identity_reproduces_input(shape, prefetch):
    image = _random_image((2,) + shape, seed=sum(shape))
    out = predict_tiled(
        _reader(image), shape, 2, lambda b: b, tile=32, overlap=0.25, batch_size=4,
        prefetch=prefetch,
    )
    np.testing.assert_allclose(out, image, atol=1e-5)


@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_overlap_extremes(overlap):
    image = _random_image((1, 45, 61))
    out = predict_tiled(
        _reader(image), (45, 61), 1, lambda b: b, tile=16, overlap=overlap, batch_size=2
    )
    np.testing.assert_allclose(out, image, atol=1e-5)


def test_sink_receives_ordered_bands_covering_every_row_once():
    shape = (100, 37)
    image = _random_image((1,) + shape)
    bands = []

    def sink(y0, y1, block):
        assert block.shape == (1, y1 - y0, shape[1]) and block.dtype == np.float32
        bands.append((y0, y1, block.copy()))

    returned = predict_tiled(
        _reader(image), shape, 1, lambda b: b, tile=32, overlap=0.25, batch_size=5, sink=sink
    )
    assert returned is None
    assert len(bands) > 1  # streamed, not one block at the end
    assert bands[0][0] == 0 and bands[-1][1] == shape[0]
    assert all(a[1] == b[0] for a, b in zip(bands, bands[1:]))
    assert all(y1 > y0 for y0, y1, _ in bands)
    stitched = np.concatenate([block for _, _, block in bands], axis=1)
    np.testing.assert_allclose(stitched, image, atol=1e-5)


def test_read_tile_sees_only_tile_sized_regions_inside_image():
    shape = (70, 90)
    image = _random_image((1,) + shape)
    regions = []

    def read(y0, y1, x0, x1):
        regions.append((y0, y1, x0, x1))
        return image[:, y0:y1, x0:x1]

    predict_tiled(read, shape, 1, lambda b: b, tile=32, overlap=0.5, batch_size=4)
    assert all(y1 - y0 == 32 and x1 - x0 == 32 for y0, y1, x0, x1 in regions)
    assert all(0 <= y0 and y1 <= 70 and 0 <= x0 and x1 <= 90 for y0, y1, x0, x1 in regions)
    assert len(regions) == len(set(regions))


def test_prefetch_reads_next_batch_while_infer_runs():
    image = _random_image((1, 32, 32 * 8))  # 8 tiles, one per batch
    read_threads = []

    def slow_read(y0, y1, x0, x1):
        read_threads.append(threading.get_ident())
        time.sleep(0.05)
        return image[:, y0:y1, x0:x1]

    def slow_infer(batch):
        time.sleep(0.05)
        return batch

    def run(prefetch):
        start = time.perf_counter()
        predict_tiled(slow_read, image.shape[1:], 1, slow_infer, 32, 0.0, 1, prefetch=prefetch)
        return time.perf_counter() - start

    sequential = run(prefetch=False)  # 8 reads + 8 infers: ~0.8 s
    assert set(read_threads) == {threading.get_ident()}
    read_threads.clear()
    overlapped = run(prefetch=True)  # reads hidden behind infers: ~0.45 s
    assert threading.get_ident() not in read_threads
    assert overlapped < 0.8 * sequential


def test_read_errors_propagate():
    def broken_read(y0, y1, x0, x1):
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        predict_tiled(broken_read, (64, 64), 1, lambda b: b, tile=32, overlap=0.25, batch_size=2)


def test_tiled_conv_net_matches_untiled_in_tile_interiors():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    # Two 3x3 convs: receptive-field radius 2, well inside the 8-px overlap (tile 32, overlap 0.25).
    radius, tile, overlap = 2, 32, 0.25
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(8, 3, 3, padding=1)
    ).eval()
    shape = (70, 90)
    image = _random_image((2,) + shape)

    def infer(batch):
        with torch.no_grad():
            return net(torch.from_numpy(batch)).numpy()

    tiled = predict_tiled(_reader(image), shape, 3, infer, tile=tile, overlap=overlap, batch_size=4)
    untiled = infer(image[None])[0]

    # A tile's prediction is wrong only within `radius` of a tile edge inside the image (the
    # network's zero padding there does not match the true neighbours): mask those pixels out.
    step = round(tile * (1 - overlap))
    valid = np.ones(shape, bool)
    for axis, length in enumerate(shape):
        line = np.ones(length, bool)
        for start in tile_starts(length, tile, step):
            if start > 0:
                line[start : start + radius] = False
            if start + tile < length:
                line[start + tile - radius : start + tile] = False
        valid &= line[:, None] if axis == 0 else line[None, :]
    assert valid.mean() > 0.5
    np.testing.assert_allclose(tiled[:, valid], untiled[:, valid], atol=1e-4)


@pytest.mark.parametrize("overlap", [-0.1, 0.6, 1.0, 25, float("nan"), "a lot"])
def test_bad_overlap_raises(overlap):
    image = _random_image((1, 40, 40))
    with pytest.raises(ValueError, match="overlap"):
        predict_tiled(
            _reader(image), (40, 40), 1, lambda b: b, tile=16, overlap=overlap, batch_size=2
        )


def test_wrong_infer_shape_raises():
    image = _random_image((1, 40, 40))
    with pytest.raises(ValueError, match="infer returned shape"):
        predict_tiled(_reader(image), (40, 40), 2, lambda b: b, tile=16, overlap=0.25, batch_size=2)
