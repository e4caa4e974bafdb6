"""time_limit_s covers the preparation of a run, and Cancel works during it (issue #19)."""
import threading
import warnings

import numpy as np
import pytest

import pixlab
from pixlab.training import pseudo
from pixlab.training.forest import FeatureClassifier
from pixlab.training.preparation import TrainingCancelled


@pytest.fixture
def big_sample():
    """A 512 x 512 image (2 bands of forest predictions of 2**17 px) with strokes of 2 classes."""
    from pixlab.datasets import strokes_from_mask, synthetic_fluorescence
    img, truth = synthetic_fluorescence(shape=(512, 512), n_channels=1, n_nuclei=40, seed=3)
    labels = strokes_from_mask(truth, strokes_per_class=6, radius=2, length=(6, 12), seed=3)
    return img, labels, ["background", "nuclei"]


def test_cancel_while_the_forest_labels_stops_the_run_between_bands(monkeypatch, tiny_cfg, big_sample):
    # The user presses Cancel while the random forest computes pseudo-labels (before any step):
    # the run stops at the next band instead of finishing preparation and training.
    img, labels, names = big_sample
    cancel = threading.Event()
    calls = []
    real = FeatureClassifier.predict_proba

    def predict_and_cancel(self, *a, **kw):
        calls.append(1)
        cancel.set()
        return real(self, *a, **kw)

    monkeypatch.setattr(FeatureClassifier, "predict_proba", predict_and_cancel)
    events = []
    with pytest.raises(TrainingCancelled, match="pseudo-labels.*no model was trained"):
        pixlab.train([(img, labels)], tiny_cfg.replace(pseudo_labels=True), class_names=names, cancel=cancel,
                     callbacks=[events.append], progress=False)
    assert len(calls) == 1  # the other bands were not predicted
    assert [e["event"] for e in events if e["event"] != "prepare"] == []  # no step, no "start"
    assert "computing random-forest pseudo-labels" in [e.get("phase") for e in events]


def test_a_callback_returning_false_during_preparation_cancels(tiny_cfg, big_sample):
    img, labels, names = big_sample
    seen = []

    def stop_at_network(ev):
        seen.append(ev.get("phase"))
        return ev.get("phase") != "building the network"

    with pytest.raises(TrainingCancelled, match="building the network"):
        pixlab.train([(img, labels)], tiny_cfg, class_names=names, callbacks=[stop_at_network], progress=False)
    assert seen[0] == "checking the images and labels" and seen[-1] == "building the network"


def test_a_time_limit_budgets_pseudo_labels_of_an_in_memory_image(tiny_cfg, big_sample):
    # 1 s of time limit allows 20,000 px of forest labels: the 512 x 512 image gets them only in the
    # blocks around its strokes (as a slide does), not everywhere (~13 s on one core for 262,144 px).
    from pixlab.image.normalize import compute_stats
    from pixlab.training.samples import build_samples, prepare_samples, split_strokes
    img, labels, names = big_sample
    tiny_cfg = tiny_cfg.resolved()  # as train() passes it on

    def samples(cfg):
        images, labs, _ = prepare_samples([(img, labels)], cfg, names)
        tr, va, _ = split_strokes(labs, 2, cfg.validation_split, cfg.seed)
        stats = compute_stats(images, method=cfg.normalization)
        return build_samples(images, labs, tr, va, stats)

    free = samples(tiny_cfg)
    pseudo.add_pseudo_labels(free, 2, tiny_cfg)
    limited_cfg = tiny_cfg.replace(time_limit_s=1.0)
    limited = samples(limited_cfg)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        pseudo.add_pseudo_labels(limited, 2, limited_cfg)
    from pixlab.training.strokes import read_labels
    full, part = np.asarray(free[0].pseudo), read_labels(limited[0].pseudo, 0, 512, 0, 512)
    assert (full > 0).mean() > 0.5
    assert 0 < (part > 0).sum() < 0.5 * (full > 0).sum()
    both = (full > 0) & (part > 0)  # a forest fitted on fewer strokes, mostly the same answers
    assert (full[both] == part[both]).mean() > 0.9, (full[both] == part[both]).mean()


def test_pseudo_labels_stop_at_their_share_of_the_time_limit_with_a_warning(monkeypatch, tiny_cfg, big_sample):
    # A slow machine: the clock passes 25 % of the limit after the first band of forest predictions.
    from pixlab.training.preparation import Preparation
    img, labels, names = big_sample
    bands = []
    real = pseudo._confident

    def confident(*a):  # once per band of pseudo-labels
        bands.append(1)
        return real(*a)

    monkeypatch.setattr(pseudo, "_confident", confident)
    monkeypatch.setattr(Preparation, "over_share", lambda self, share: len(bands) >= 1)
    cfg = tiny_cfg.replace(pseudo_labels=True, time_limit_s=600)
    with pytest.warns(UserWarning, match="pseudo-labels stopped at 25% of the 600 s time limit"):
        model = pixlab.train([(img, labels)], cfg, class_names=names, progress=False)
    assert len(bands) == 1 and model.metadata["stop_reason"] in ("epochs", "time_limit")
    assert model.metadata["prepare_time_s"] >= 0
