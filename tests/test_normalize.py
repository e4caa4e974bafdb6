import json
import warnings

import dask.array as da
import numpy as np
import pytest
import torch

from pixlab.image.io import Image, open_image, write_ome_tiff
from pixlab.image.normalize import METHODS, apply, apply_torch, compute_stats, parse_method


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    data = np.stack([rng.normal(100, 10, (64, 80)), rng.gamma(2.0, 300, (64, 80))]).astype(np.float32)
    return data


@pytest.mark.parametrize("method, expected", [
    ("percentile_99", lambda x: (np.percentile(x, 1), np.percentile(x, 99) - np.percentile(x, 1), [0.0, 1.0])),
    ("min_max", lambda x: (x.min(), x.max() - x.min(), [0.0, 1.0])),
    ("z_score", lambda x: (x.mean(), x.std(), None)),
])
def test_methods_match_numpy(image, method, expected):
    stats = compute_stats(image, method=method)
    for c in range(2):
        off, scale, clip = expected(image[c].astype(np.float64))
        assert stats["offset"][c] == pytest.approx(off, rel=1e-6)
        assert stats["scale"][c] == pytest.approx(scale, rel=1e-6)
    assert stats["clip"] == clip
    assert stats["method"] == method and stats["per_channel"] is True
    json.dumps(stats)  # stored with the model

    out = apply(image, stats)
    assert out.dtype == np.float32 and out.shape == image.shape
    off, scale, clip = expected(image[1].astype(np.float64))
    ref = (image[1] - off) / scale
    if clip is not None:
        ref = np.clip(ref, *clip)
    np.testing.assert_allclose(out[1], ref, rtol=1e-5, atol=1e-6)


def test_upper_case_names_and_unknown_method(image):
    assert compute_stats(image, method="MIN_MAX") == compute_stats(image, method="min_max")
    assert parse_method("Z_SCORE").value == "z_score"
    with pytest.raises(ValueError, match=r"unknown normalisation method 'median'.*percentile_99"):
        compute_stats(image, method="median")
    assert METHODS == ["percentile_99", "min_max", "z_score", "fixed_range"]


def test_fixed_range(image):
    stats = compute_stats(image, method="FIXED_RANGE", fixed_range=(0, 400))
    assert stats["offset"] == [0.0, 0.0] and stats["scale"] == [400.0, 400.0] and stats["clip"] == [0.0, 1.0]
    np.testing.assert_allclose(apply(image, stats), np.clip(image / 400, 0, 1), rtol=1e-6)
    per = compute_stats(image, method="fixed_range", fixed_range=[(50, 150), (0, 2000)])
    assert per["offset"] == [50.0, 0.0] and per["scale"] == [100.0, 2000.0]


@pytest.mark.parametrize("bad, match", [
    (None, "needs fixed_range=\\(min, max\\), got None"),
    ((5, 5), "min < max"),
    ((10, 0), "min < max"),
    ((1, 2, 3), "fixed_range must be"),
    ([(0, 1)] * 3, "one \\(min, max\\) per channel \\(2\\)"),
])
def test_fixed_range_errors(image, bad, match):
    with pytest.raises(ValueError, match=match):
        compute_stats(image, method="fixed_range", fixed_range=bad)


def test_per_channel_false_pools_channels(image):
    stats = compute_stats(image, method="min_max", per_channel=False)
    assert stats["per_channel"] is False
    assert stats["offset"] == [pytest.approx(float(image.min()))] * 2
    assert stats["scale"] == [pytest.approx(float(image.max() - image.min()))] * 2
    z = compute_stats(image, method="z_score", per_channel=False)
    assert z["offset"][0] == z["offset"][1] == pytest.approx(image.astype(np.float64).mean(), rel=1e-6)


def test_list_of_images_gives_pooled_stats(image):
    a, b = image[:, :32], image[:, 32:]
    pooled = compute_stats([a, b], method="min_max")
    assert pooled == compute_stats(image, method="min_max")
    p = compute_stats([a, b])
    assert p["offset"][1] == pytest.approx(np.percentile(image[1], 1), rel=1e-6)
    with pytest.raises(ValueError, match="same number of channels"):
        compute_stats([image, image[:1]])
    with pytest.raises(ValueError, match="empty list"):
        compute_stats([])


def test_constant_channel_gets_scale_one_and_warning():
    data = np.stack([np.full((8, 8), 7.0), np.arange(64.0).reshape(8, 8)])
    with pytest.warns(UserWarning, match=r"\['Channel 1'\] are constant"):
        stats = compute_stats(data, method="min_max")
    assert stats["scale"] == [1.0, 63.0]
    assert np.all(apply(data, stats)[0] == 0)


def test_nan_pixels_are_ignored_but_empty_channel_is_an_error(image):
    with_nan = image.copy()
    with_nan[0, :3] = np.nan
    stats = compute_stats(with_nan, method="min_max")
    assert stats["offset"][0] == pytest.approx(float(image[0, 3:].min()))
    with_nan[1] = np.nan
    with pytest.raises(ValueError, match=r"\['Channel 2'\] hold no finite values"):
        compute_stats(with_nan)


class CountingArray:
    """Array-like wrapper that records the biggest block dask asks for."""

    def __init__(self, arr):
        self.arr, self.shape, self.dtype, self.ndim = arr, arr.shape, arr.dtype, arr.ndim
        self.largest = 0

    def __getitem__(self, key):
        block = self.arr[key]
        self.largest = max(self.largest, block.size)
        return block


def test_large_lazy_image_is_sampled_not_loaded():
    rng = np.random.default_rng(5)
    full = rng.integers(0, 1000, (2, 2000, 3000)).astype(np.uint16)
    src = CountingArray(full)
    img = Image(da.from_array(src, chunks=(1, 250, 250)))
    stats = compute_stats(img, method="min_max", max_samples=10_000)
    assert src.largest <= 250 * 250  # chunk by chunk, never the whole array
    step = int(np.ceil(np.sqrt(2000 * 3000 / 10_000)))
    assert step == 25
    # the sample is a strided grid: its min/max are those of some strided sub-grid of the image
    assert stats["offset"][0] >= full[0].min() and stats["offset"][0] <= full[0, ::step, ::step].min() + 5
    assert 10 < stats["scale"][0] <= 999
    # same seed, same sample; z-score close to the full-image values
    z = compute_stats(img, method="z_score", max_samples=10_000)
    assert z == compute_stats(img, method="z_score", max_samples=10_000)
    assert z["offset"][0] == pytest.approx(full[0].mean(), rel=0.02)


def test_pyramid_level_is_used_for_sampling(tmp_path):
    rng = np.random.default_rng(6)
    data = rng.integers(0, 1000, (1, 1024, 1024)).astype(np.uint16)
    write_ome_tiff(tmp_path / "p.ome.tif", data)
    img = open_image(tmp_path / "p.ome.tif")  # levels 1024, 512, 256
    stats = compute_stats(img, method="min_max", max_samples=300 * 300)
    level = img.read(level=2).astype(np.float64)
    assert stats["offset"] == [level.min()] and stats["scale"] == [level.max() - level.min()]


def test_apply_torch_matches_apply(image):
    stats = compute_stats(image)
    batch = np.stack([image, image[:, ::-1]])
    out = apply_torch(torch.from_numpy(batch), stats)
    assert out.dtype == torch.float32 and out.shape == batch.shape
    np.testing.assert_allclose(out.numpy()[1], apply(image[:, ::-1], stats), rtol=1e-6)
    with pytest.raises(ValueError, match="stats are for 2 channels but the data has 1"):
        apply_torch(torch.zeros(1, 1, 4, 4), stats)


def test_apply_checks_stats(image):
    with pytest.raises(ValueError, match="stats must be the dict"):
        apply(image, {"offset": [0, 0]})
    with pytest.raises(ValueError, match="2 channels but the data has 3"):
        apply(np.zeros((3, 4, 4)), compute_stats(image))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compute_stats(image)  # no spurious warnings on ordinary data
