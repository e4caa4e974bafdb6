import numpy as np
import pytest

from pixlab.training.forest import FeatureClassifier, feature_margin, pixel_features

# Small and quick: a 96x96 image and 20 trees keep each fit + predict well under a second.
SHAPE = (96, 96)
DISKS = [(20, 20, 9), (22, 70, 7), (55, 45, 10), (78, 15, 6), (75, 78, 8)]


@pytest.fixture(scope="module")
def scene():
    """Bright disks on a dark noisy background, with a few strokes per class."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    truth = np.zeros(SHAPE, bool)
    for cy, cx, r in DISKS:
        truth |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    image = (0.2 + 0.6 * truth + rng.normal(0, 0.15, SHAPE)).astype(np.float32)[None]
    labels = np.zeros(SHAPE, np.uint8)
    for cy, cx, r in DISKS[:4]:
        labels[cy - 1 : cy + 2, cx - r // 2 : cx + r // 2] = 2  # a short stroke inside the disk
        labels[cy + r + 2 : cy + r + 4, cx - r : cx + r] = 1  # one just outside its lower edge
    labels[45:48, 5:25] = 1
    labels[88:91, 40:70] = 1
    labels[~truth & (labels == 2)] = 0
    labels[truth & (labels == 1)] = 0
    return image, labels, truth


def _classifier(**kwargs):
    return FeatureClassifier(**{"n_estimators": 20, "n_jobs": 1, **kwargs})


def test_foreground_iou_from_strokes(scene):
    image, labels, truth = scene
    predicted = _classifier().fit(image, labels).predict(image)
    assert predicted.dtype == np.uint8 and predicted.shape == SHAPE
    foreground = predicted == 2
    iou = (foreground & truth).sum() / (foreground | truth).sum()
    assert iou > 0.8


def test_probabilities_sum_to_one(scene):
    image, labels, _ = scene
    probs = _classifier().fit(image, labels).predict_proba(image)
    assert probs.shape == (2, *SHAPE) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)


@pytest.mark.parametrize("region", [(30, 70, 20, 60), (0, 25, 60, 96), (80, 200, -5, 40)])
def test_region_prediction_equals_whole_image(scene, region):
    image, labels, _ = scene
    clf = _classifier().fit(image, labels)
    whole = clf.predict_proba(image)
    clf.clear_cache()  # force features computed on the region plus its margin
    part = clf.predict_proba(image, region=region)
    y0, y1 = max(region[0], 0), min(region[1], SHAPE[0])
    x0, x1 = max(region[2], 0), min(region[3], SHAPE[1])
    np.testing.assert_allclose(part, whole[:, y0:y1, x0:x1], atol=1e-5)
    np.testing.assert_array_equal(clf.predict(image, region), whole[:, y0:y1, x0:x1].argmax(0) + 1)


@pytest.mark.parametrize("region", [(10, 40, 0, 30), (0, 48, 33, 48), (47, 48, 0, 48)])
def test_region_features_equal_whole_image_features(region):
    image = np.random.default_rng(1).random((2, 48, 48), dtype=np.float32)
    whole = pixel_features(image, sigma_min=1, sigma_max=4, workers=1)
    part = pixel_features(image, sigma_min=1, sigma_max=4, region=region, workers=1)
    y0, y1, x0, x1 = region
    assert whole.shape == (48, 48, 2 * 4 * 3)  # 2 channels x 4 features x sigmas 1, 2, 4
    np.testing.assert_array_equal(part, whole[y0:y1, x0:x1])
    assert feature_margin(4) == 19


def test_large_images_are_processed_in_bands(scene, monkeypatch):
    import pixlab.training.forest as features_module

    image, labels, _ = scene
    expected = _classifier().fit(image, labels).predict_proba(image)
    # Pretend the 96x96 image is "large": features computed in 10-row bands, never cached whole.
    monkeypatch.setattr(features_module, "_MAX_CACHED_PIXELS", 1000)
    monkeypatch.setattr(features_module, "_BAND_PIXELS", 960)
    clf = _classifier().fit(image, labels)
    assert not clf._cache
    np.testing.assert_array_equal(clf.predict_proba(image), expected)
    np.testing.assert_array_equal(clf.predict_proba(image, (5, 90, 3, 60)), expected[:, 5:90, 3:60])


def test_same_seed_same_probabilities(scene):
    image, labels, _ = scene
    a = _classifier(seed=3).fit(image, labels).predict_proba(image)
    b = _classifier(seed=3, n_jobs=2).fit(image, labels).predict_proba(image)
    np.testing.assert_array_equal(a, b)


def test_class_without_labels_gets_zero(scene):
    image, labels, _ = scene
    relabelled = np.where(labels == 2, 3, labels)  # classes 1 and 3 labelled, 2 not
    clf = _classifier().fit(image, relabelled, n_classes=4)
    probs = clf.predict_proba(image)
    assert probs.shape == (4, *SHAPE)
    assert not probs[1].any() and not probs[3].any()
    np.testing.assert_allclose(probs[0] + probs[2], 1.0, atol=1e-5)
    assert set(np.unique(clf.predict(image))) <= {1, 3}
    np.testing.assert_array_equal(clf.classes_, [1, 3])


def test_features_are_cached_by_content(scene):
    image, _, _ = scene
    clf = _classifier(sigma_max=4)
    first = clf.features(image)
    assert clf.features(image.copy()) is first  # same pixels, another array: cache hit
    np.testing.assert_array_equal(clf.features(image, (5, 10, 5, 10)), first[5:10, 5:10])
    edited = image.copy()
    edited[0, 0, 0] += 1
    assert clf.features(edited) is not first


def test_dense_labels_are_subsampled_reproducibly(scene):
    image, _, truth = scene
    dense = np.where(truth, 2, 1).astype(np.uint8)
    a = _classifier(max_samples_per_class=300).fit(image, dense).predict_proba(image)
    b = _classifier(max_samples_per_class=300).fit(image, dense).predict_proba(image)
    np.testing.assert_array_equal(a, b)


def test_fit_errors(scene):
    image, labels, _ = scene
    clf = _classifier()
    with pytest.raises(ValueError, match="no labelled pixels"):
        clf.fit(image, np.zeros(SHAPE, np.uint8))
    with pytest.raises(ValueError, match=r"labels have shape \(96, 90\) but the image is \(96, 96\)"):
        clf.fit(image, labels[:, :90])
    with pytest.raises(ValueError, match="class id 2 but n_classes=1"):
        clf.fit(image, labels, n_classes=1)
    with pytest.raises(ValueError, match="not fitted"):
        clf.predict_proba(image)
    with pytest.raises(ValueError, match=r"\(C, Y, X\)"):
        clf.fit(image[None], labels)
    clf.fit(image, labels)
    with pytest.raises(ValueError, match="2 channels but the classifier was fitted on 1"):
        clf.predict_proba(np.concatenate([image, image]))
    with pytest.raises(ValueError, match="does not overlap"):
        clf.predict_proba(image, region=(100, 120, 0, 10))
    with pytest.raises(ValueError, match="sigma_min"):
        FeatureClassifier(sigma_min=8, sigma_max=4)


def test_features_equal_scikit_images_multichannel_features_and_are_held_once():
    # Computed channel by channel into the result (a multichannel call holds them twice).
    import tracemalloc
    from skimage.feature import multiscale_basic_features
    rng = np.random.default_rng(0)
    image = rng.normal(0, 1, (3, 256, 256)).astype(np.float32)
    ref = multiscale_basic_features(image, intensity=True, edges=True, texture=True, sigma_min=1,
                                    sigma_max=16, channel_axis=0).astype(np.float32)
    tracemalloc.start()
    feats = pixel_features(image)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_allclose(feats, ref, rtol=1e-5, atol=1e-6)
    assert feats.dtype == np.float32 and feats.flags.c_contiguous
    assert peak < 1.8 * ref.nbytes, f"{peak / 2**20:.0f} MB for {ref.nbytes / 2**20:.0f} MB of features"
    # A region is cut from the channels' features as they come, equal to the whole image's.
    np.testing.assert_allclose(pixel_features(image, region=(50, 120, 30, 200)), ref[50:120, 30:200], rtol=1e-5,
                               atol=1e-6)
