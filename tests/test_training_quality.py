"""Issue 13: never return a broken model silently; the weight average's warm-up."""

import copy
import warnings

import numpy as np
import pytest
import torch

import pixlab
from pixlab.training.health import TrainingQualityWarning, quality_check


class _Constant(torch.nn.Module):
    """A 'network' that predicts class ``k`` everywhere (what a collapsed model does)."""

    def __init__(self, in_channels, n_classes, k):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, n_classes, 1)
        self.encoder = torch.nn.ModuleList()  # nothing to freeze
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.bias[k - 1] = 5.0

    def forward(self, x):
        return self.conv(x)


def _samples(img, labels, names, cfg):
    from pixlab.image.normalize import compute_stats
    from pixlab.training.samples import build_samples, prepare_samples, split_strokes
    images, labs, names = prepare_samples([(img, labels)], cfg, names)
    tr, va, _ = split_strokes(labs, len(names), 0.3, 0)
    stats = compute_stats(images)
    return build_samples(images, labs, tr, va, stats), stats, images


def test_a_network_that_predicts_one_class_everywhere_is_called_collapsed(fluo_sample, tiny_cfg):
    img, labels, truth, names = fluo_sample
    samples, stats, images = _samples(img, labels, names, tiny_cfg.resolved())
    model = pixlab.Model(_Constant(2, 2, 2), names, [[0, 0, 0], [255, 0, 0]], images[0].channel_names, stats,
                         tiny_cfg.resolved())
    with pytest.warns(TrainingQualityWarning, match="collapsed.*'background' strokes"):
        check = quality_check(model, samples, names)
    assert check["status"] == "collapsed" and check["recommend"] == "preview"
    assert check["stroke_recall"]["background"] == 0.0 and check["predicted_fractions"]["nuclei"] == 1.0
    assert check["preview_heldout_accuracy"] > 0.9  # the forest gets the easy strokes right


def test_a_network_as_good_as_the_forest_passes(fluo_sample, tiny_cfg):
    img, labels, truth, names = fluo_sample
    samples, stats, images = _samples(img, labels, names, tiny_cfg.resolved())

    class Truth(torch.nn.Module):  # predicts the ground truth: the best a network can do
        def forward(self, x):
            return torch.zeros(x.shape[0], 2, *x.shape[2:])

    model = pixlab.Model(Truth(), names, [[0, 0, 0], [255, 0, 0]], images[0].channel_names, stats, tiny_cfg.resolved())
    model.predict_labels = lambda image, **kw: truth  # noqa: E731 - only the check's input matters here
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingQualityWarning)
        check = quality_check(model, samples, names)
    assert check["status"] == "ok" and check["recommend"] == "network"
    assert check["heldout_accuracy"] == 1.0


def test_train_warns_and_records_when_the_network_collapses(fluo_sample, tiny_cfg, monkeypatch):
    img, labels, truth, names = fluo_sample
    from pixlab.training import trainer

    monkeypatch.setattr(trainer, "_build_network",
                        lambda cfg, channel_names, class_names, init_from: (_Constant(2, 2, 2), "random"))
    cfg = tiny_cfg.replace(learning_rate=1e-7)  # it cannot unlearn the constant in 4 steps
    with pytest.warns(TrainingQualityWarning, match="collapsed"):
        model = pixlab.train([(img, labels)], cfg, class_names=names, progress=False)
    assert model.metadata["quality_check"]["status"] == "collapsed"


def test_a_trained_model_records_its_check_and_automatic_choices(fluo_sample, tiny_cfg, tmp_path):
    img, labels, truth, names = fluo_sample
    cfg = tiny_cfg.replace(epochs=15, patches_per_epoch=32, learning_rate=3e-3, batch_size="auto", ema_decay="auto")
    model = pixlab.train([(img, labels)], cfg, class_names=names, progress=False)
    check = model.metadata["quality_check"]
    assert check["status"] == "ok", check
    assert {r["field"] for r in model.metadata["resolution"]} >= {"batch_size", "ema_decay"}
    model.save(tmp_path / "m")
    assert pixlab.load_model(tmp_path / "m").metadata["quality_check"]["status"] == "ok"


def test_weight_average_warm_up_follows_a_short_run(fluo_sample, tiny_cfg, monkeypatch):
    """A 20-step run with decay 0.995: the saved average is close to the trained weights, not the start."""
    img, labels, truth, names = fluo_sample
    from pixlab.training import averaging

    seen = {}
    real = averaging.weight_average

    def spy(net, decay):
        seen["init"], seen["net"] = copy.deepcopy(net.state_dict()), net
        return real(net, decay)

    monkeypatch.setattr(averaging, "weight_average", spy)
    cfg = tiny_cfg.replace(epochs=1, batch_size=4, patches_per_epoch=80, learning_rate=3e-3,
                           weight_average="ema", ema_decay=0.995)
    model = pixlab.train([(img, labels)], cfg, class_names=names, progress=False)
    assert sum(h["steps"] for h in model.history) == 20

    def dist(a, b):
        return sum(float((a[k].float() - b[k].float()).pow(2).sum()) for k in a if a[k].is_floating_point()) ** 0.5

    avg, raw, init = model.network.state_dict(), seen["net"].state_dict(), seen["init"]
    assert dist(avg, raw) < 0.5 * dist(avg, init), (dist(avg, raw), dist(avg, init))


def test_warmup_decay_reaches_the_configured_decay():
    from pixlab.training.averaging import warmup_decay
    ds = [warmup_decay(0.995, n) for n in range(0, 5000, 50)]
    assert ds == sorted(ds) and ds[0] < 0.2 and ds[-1] == 0.995
