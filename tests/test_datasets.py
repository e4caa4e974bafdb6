import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from pixlab.datasets import (
    IHC_CLASSES,
    sample_ihc,
    sample_ihc_reference,
    strokes_from_mask,
    synthetic_fluorescence,
)


def n_strokes(mask):
    return ndi.label(mask, structure=np.ones((3, 3)))[1]


def test_sample_ihc():
    img, labels, names = sample_ihc()
    assert img.shape == (3, 512, 512) and img.is_rgb and img.channel_names == ["Red", "Green", "Blue"]
    assert labels.shape == (512, 512) and labels.dtype == np.uint8
    assert names == IHC_CLASSES == ["background", "hematoxylin", "dab"]
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    assert (labels > 0).mean() < 0.05  # sparse strokes, not a dense mask
    for k in (1, 2, 3):
        assert n_strokes(labels == k) >= 10


def test_ihc_strokes_lie_in_the_reference_classes():
    _, labels, _ = sample_ihc()
    ref = sample_ihc_reference()
    assert ref.shape == (512, 512) and set(np.unique(ref)) == {1, 2, 3}
    labelled = labels > 0
    # The committed PNG was drawn inside this reference; allow a little drift across scikit-image versions.
    assert (labels[labelled] == ref[labelled]).mean() > 0.99


def test_ihc_reference_classes_match_colours():
    img, _, _ = sample_ihc()
    rgb = img.read().astype(float)
    ref = sample_ihc_reference()
    brightness = rgb.mean(axis=0)
    blue_minus_red = rgb[2] - rgb[0]
    assert brightness[ref == 1].mean() > brightness[ref == 3].mean() + 30  # background is bright
    assert blue_minus_red[ref == 2].mean() > 0 > blue_minus_red[ref == 3].mean()  # nuclei blue, DAB brown


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_synthetic_fluorescence(dtype):
    t0 = time.perf_counter()
    img, truth = synthetic_fluorescence(shape=(256, 256), n_channels=2, seed=3, dtype=dtype)
    assert time.perf_counter() - t0 < 0.5  # fast enough for every test
    assert img.shape == (2, 256, 256) and img.dtype == dtype
    assert img.channel_names == ["DAPI", "Membrane"]
    assert truth.shape == (256, 256) and truth.dtype == np.uint8 and set(np.unique(truth)) == {1, 2}
    data = img.read().astype(float)
    # Nuclei are bright in DAPI; the membrane channel is brightest just outside them.
    assert data[0][truth == 2].mean() > 3 * data[0][truth == 1].mean()
    ring = ndi.binary_dilation(truth == 2, iterations=2) & (truth == 1)
    assert data[1][ring].mean() > 2 * data[1][truth == 2].mean()


def test_synthetic_fluorescence_is_deterministic_and_has_markers():
    a, ta = synthetic_fluorescence(shape=(64, 96), n_channels=4, n_nuclei=5, seed=7)
    b, tb = synthetic_fluorescence(shape=(64, 96), n_channels=4, n_nuclei=5, seed=7)
    c, _ = synthetic_fluorescence(shape=(64, 96), n_channels=4, n_nuclei=5, seed=8)
    assert a.shape == (4, 64, 96)
    assert a.channel_names == ["DAPI", "Membrane", "Marker 1", "Marker 2"]
    np.testing.assert_array_equal(a.read(), b.read())
    np.testing.assert_array_equal(ta, tb)
    assert not np.array_equal(a.read(), c.read())
    one, _ = synthetic_fluorescence(shape=(32, 32), n_channels=1)
    assert one.channel_names == ["DAPI"]
    with pytest.raises(ValueError, match="n_channels"):
        synthetic_fluorescence(n_channels=0)


@pytest.mark.parametrize("radius", [0, 2, 3])
def test_strokes_stay_inside_their_class(radius):
    _, truth = synthetic_fluorescence(shape=(128, 128), n_nuclei=12, seed=2)
    labels = strokes_from_mask(truth, strokes_per_class=6, radius=radius, length=(8, 14), seed=0)
    assert labels.shape == truth.shape and labels.dtype == np.uint8
    labelled = labels > 0
    np.testing.assert_array_equal(labels[labelled], truth[labelled])
    assert set(np.unique(labels)) == {0, 1, 2}
    assert labelled.mean() < 0.2
    if radius:  # thick strokes: the brush disk fits inside each class's strokes
        for k in (1, 2):
            assert ndi.binary_erosion(labels == k, structure=np.ones((3, 3)), iterations=radius - 1 or 1).any()


def test_strokes_in_a_class_thinner_than_the_brush():
    truth = np.ones((40, 40), np.uint8)
    truth[20, 5:35] = 2  # a one-pixel line
    labels = strokes_from_mask(truth, strokes_per_class=2, radius=3, length=(5, 10), seed=0)
    assert (labels == 2).any()
    np.testing.assert_array_equal(labels[labels > 0], truth[labels > 0])


def test_strokes_count_length_and_determinism():
    truth = np.ones((200, 200), np.uint8)
    truth[50:150, 50:150] = 2
    labels = strokes_from_mask(truth, strokes_per_class=5, radius=1, length=(15, 20), seed=4)
    np.testing.assert_array_equal(labels, strokes_from_mask(truth, 5, 1, (15, 20), seed=4))
    assert not np.array_equal(labels, strokes_from_mask(truth, 5, 1, (15, 20), seed=5))
    for k in (1, 2):
        lab, n = ndi.label(labels == k, structure=np.ones((3, 3)))
        assert 1 <= n <= 5  # strokes may touch and merge
        sizes = np.bincount(lab.ravel())[1:]
        assert sizes.max() >= 15 * 3 // 2  # long, thick strokes, not dots
    empty_class = strokes_from_mask(np.ones((20, 20), np.uint8), radius=2)
    assert set(np.unique(empty_class)) <= {0, 1}


def test_strokes_argument_errors():
    with pytest.raises(ValueError, match="integer mask"):
        strokes_from_mask(np.ones((4, 4), float))
    with pytest.raises(ValueError, match="length"):
        strokes_from_mask(np.ones((4, 4), np.uint8), length=(5, 2))
