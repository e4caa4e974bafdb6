"""Cross-validation over images, or over spatial blocks of one image."""

import numpy as np
import pytest

import pixlab
import pixlab.training.crossval
from pixlab.training.crossval import cross_validate
from pixlab.datasets import strokes_from_mask, synthetic_fluorescence

NAMES = ["background", "nuclei"]


def _sample(seed, shape=(64, 64)):
    img, truth = synthetic_fluorescence(shape=shape, n_channels=2, n_nuclei=8, seed=seed)
    return img, strokes_from_mask(truth, strokes_per_class=6, radius=2, length=(6, 12), seed=seed)


@pytest.fixture
def cfg(tiny_cfg):
    return tiny_cfg.replace(epochs=3, learning_rate=1e-2)  # learns the nuclei in 6 steps


class _Constant:
    """Stands in for a trained model: predicts class 1 everywhere, records what it was trained on."""

    inference_tile_size = 16

    def __init__(self, samples):
        self.samples = samples

    def predict_labels(self, image):
        return np.ones(pixlab.open_image(image).shape[1:], np.uint8)


@pytest.mark.slow
def test_images_folds_real_training(cfg):
    samples = [_sample(s) for s in (1, 2, 3)]
    table = cross_validate(samples, cfg, NAMES, folds=2)
    assert list(table.index) == ["fold 1", "fold 2", "mean", "sd"]
    assert table.attrs["mode"] == "images"
    held = sorted(i for fold in table.attrs["folds"] for i in fold["test_items"])
    assert held == [0, 1, 2]  # each image held out exactly once
    folds = table.iloc[:2]
    for name in [*NAMES, "mean_iou"]:
        assert folds[name].between(0, 1).all()
        assert table.loc["mean", name] == pytest.approx(folds[name].mean())
        assert table.loc["sd", name] == pytest.approx(folds[name].std(ddof=1))
        assert table.attrs["summary"][name] == f"{folds[name].mean():.3f} ± {folds[name].std(ddof=1):.3f}"
    for fold in table.attrs["folds"]:
        expected = sum(int((samples[i][1] > 0).sum()) for i in fold["test_items"])
        assert table.loc[f"fold {fold['fold']}", "labelled_pixels"] == expected
    assert table.loc["mean", "mean_iou"] > 0.5  # bright nuclei on a dark background are learnable


@pytest.mark.slow
def test_spatial_blocks_scored_like_a_whole_image_prediction(monkeypatch, cfg):
    from pixlab.analysis.diagnostics import confusion_matrix, metrics_from_confusion

    img, labels = _sample(5, (96, 96))
    model = pixlab.train([(img, labels)], cfg, NAMES, progress=False)
    monkeypatch.setattr(pixlab.training.crossval, "train", lambda *a, **kw: model)  # one real model for every fold
    table = cross_validate([(img, labels)], cfg, NAMES, folds=2, blocks=2)
    assert table.attrs["mode"] == "blocks"
    assert all(cell.startswith("block") for cell in table["held_out"].iloc[:2])
    whole = model.predict_labels(img)
    for fold in table.attrs["folds"]:
        held = np.zeros(labels.shape, bool)
        for y0, y1, x0, x1 in fold["boxes"]:
            held[y0:y1, x0:x1] = True
        iou = metrics_from_confusion(confusion_matrix(np.where(held, labels, 0), whole, 2), NAMES)["iou"]
        row = table.loc[f"fold {fold['fold']}"]
        # windows around the blocks are predicted with a tile of context: as the whole image, up to
        # blending differences at a few pixels
        np.testing.assert_allclose(row[NAMES].to_numpy(float), iou.to_numpy(), atol=0.03)


def test_block_bookkeeping(monkeypatch, cfg):
    img, labels = _sample(6, (96, 96))
    trained_on = []

    def fake_train(samples, cfg, class_names, **kw):
        trained_on.append(samples[0][1])
        return _Constant(samples)

    monkeypatch.setattr(pixlab.training.crossval, "train", fake_train)
    table = cross_validate([(img, labels)], cfg, NAMES, folds=3, blocks=(3, 2))
    total = 0
    for fold, train_labels in zip(table.attrs["folds"], trained_on):
        held = np.zeros(labels.shape, bool)
        for y0, y1, x0, x1 in fold["boxes"]:
            held[y0:y1, x0:x1] = True
        assert not train_labels[held].any()                            # no held-out label leaks in
        np.testing.assert_array_equal(train_labels[~held], labels[~held])  # all other labels kept
        test = labels[held]
        n_bg, n_nuc = int((test == 1).sum()), int((test == 2).sum())
        row = table.loc[f"fold {fold['fold']}"]
        assert row["labelled_pixels"] == n_bg + n_nuc
        # everything predicted background; a class without held-out labels has no IoU (NaN)
        assert row["background"] == pytest.approx(n_bg / (n_bg + n_nuc)) if n_bg else np.isnan(row["background"])
        assert row["nuclei"] == 0 if n_nuc else np.isnan(row["nuclei"])
        total += n_bg + n_nuc
    assert total == int((labels > 0).sum())  # every labelled pixel is tested exactly once


def test_image_folds_score_each_held_out_image(monkeypatch, cfg):
    samples = [_sample(s) for s in (1, 2, 3, 4)]
    trained_on = []

    def fake_train(train_samples, cfg, class_names, **kw):
        trained_on.append({id(img) for img, _ in train_samples})
        return _Constant(train_samples)

    monkeypatch.setattr(pixlab.training.crossval, "train", fake_train)
    table = cross_validate(samples, cfg, NAMES, folds=2, seed=3)
    for fold, images in zip(table.attrs["folds"], trained_on):
        held = [samples[i] for i in fold["test_items"]]
        assert images == {id(s[0]) for s in samples} - {id(img) for img, _ in held}
        n_bg = sum(int((lab == 1).sum()) for _, lab in held)
        n_nuc = sum(int((lab == 2).sum()) for _, lab in held)
        row = table.loc[f"fold {fold['fold']}"]
        assert (row["labelled_pixels"], row["background"], row["nuclei"]) == \
            (n_bg + n_nuc, pytest.approx(n_bg / (n_bg + n_nuc)), 0)
        assert row["mean_iou"] == pytest.approx(n_bg / (n_bg + n_nuc) / 2)


def test_fold_count_larger_than_samples_or_blocks(cfg):
    two = [_sample(1), _sample(2)]
    with pytest.raises(ValueError, match="folds=3 but there are only 2 images; use folds <= 2"):
        cross_validate(two, cfg, NAMES, folds=3)
    with pytest.raises(ValueError, match=r"folds=5 but only 4 of the 2 x 2 spatial blocks.*folds <= 4"):
        cross_validate([_sample(1)], cfg, NAMES, folds=5, blocks=2)
    with pytest.raises(ValueError, match="folds=1 must be a whole number >= 2"):
        cross_validate(two, cfg, NAMES, folds=1)


def test_fold_missing_a_class_names_the_fold(cfg):
    (img1, lab1), (img2, lab2) = _sample(1), _sample(2)
    lab2 = np.where(lab2 == 2, 0, lab2)  # only image 1 has nuclei strokes
    with pytest.raises(ValueError, match=r"fold \d \(holding out synthetic_fluorescence\) has no training labels "
                                         r"of class\(es\) \['nuclei'\]"):
        cross_validate([(img1, lab1), (img2, lab2)], cfg, NAMES, folds=2)
