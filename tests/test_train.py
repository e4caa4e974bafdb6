import threading

import numpy as np
import pytest
import torch

import pixlab
from pixlab.training.trainer import sparse_loss, split_strokes


def _weights(model):
    return {k: v.clone() for k, v in model.network.state_dict().items()}


def test_train_save_load_predict_identical(tmp_path, tiny_cfg, fluo_sample):
    img, labels, truth, names = fluo_sample
    model = pixlab.train([(img, labels)], tiny_cfg, class_names=names, progress=False)
    probs = model.predict(img)
    assert probs.shape == (2, 128, 128) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    model.save(tmp_path / "m")
    loaded = pixlab.load_model(tmp_path / "m")
    assert loaded.class_names == names and loaded.channel_names == img.channel_names
    np.testing.assert_array_equal(loaded.predict(img), probs)
    assert len(loaded.history) == 2 and loaded.metadata["data_fingerprint"] == model.metadata["data_fingerprint"]
    assert loaded.metadata["versions"]["torch"] == torch.__version__.split("+")[0] or loaded.metadata["versions"]["torch"]


def test_same_seed_same_weights_on_cpu(tiny_cfg, fluo_sample):
    img, labels, _, names = fluo_sample
    a = _weights(pixlab.train([(img, labels)], tiny_cfg, class_names=names, progress=False))
    b = _weights(pixlab.train([(img, labels)], tiny_cfg, class_names=names, progress=False))
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = _weights(pixlab.train([(img, labels)], tiny_cfg.replace(seed=1), class_names=names, progress=False))
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_learns_the_synthetic_nuclei(fluo_sample, tiny_cfg):
    img, labels, truth, names = fluo_sample
    cfg = tiny_cfg.replace(epochs=15, learning_rate=3e-3)
    model = pixlab.train([(img, labels)], cfg, class_names=names, progress=False)
    pred = model.predict_labels(img)
    fg, gt = pred == 2, truth == 2
    iou = (fg & gt).sum() / (fg | gt).sum()
    assert iou > 0.5, iou  # chance level is ~0.05 here


def test_callbacks_events_and_cooperative_cancel(tiny_cfg, fluo_sample):
    img, labels, _, names = fluo_sample
    events = []

    def cb(ev):
        events.append(ev)
        return not (ev["event"] == "epoch" and ev["epoch"] == 1)

    model = pixlab.train([(img, labels)], tiny_cfg.replace(epochs=10), class_names=names, callbacks=[cb],
                         progress=False)
    kinds = [e["event"] for e in events]
    first = kinds.index("start")
    assert set(kinds[:first]) == {"prepare"} and kinds[-1] == "end" and "batch" in kinds
    assert len(model.history) == 2 and model.metadata["stop_reason"] == "cancelled"
    cancel = threading.Event()
    m2 = pixlab.train([(img, labels)], tiny_cfg.replace(epochs=10), class_names=names, cancel=cancel,
                      callbacks=[lambda ev: cancel.set() if ev["event"] == "batch" else None], progress=False)
    assert len(m2.history) == 1 and m2.metadata["stop_reason"] == "cancelled"
    cancel.set()  # before the first step: nothing to return
    with pytest.raises(pixlab.TrainingCancelled):
        pixlab.train([(img, labels)], tiny_cfg, class_names=names, cancel=cancel, progress=False)


def test_resume_continues_to_the_same_weights(tmp_path, tiny_cfg, fluo_sample):
    img, labels, _, names = fluo_sample
    cfg = tiny_cfg.replace(epochs=4, scheduler="one_cycle")
    full = pixlab.train([(img, labels)], cfg, class_names=names, progress=False)
    ck = tmp_path / "ck"
    pixlab.train([(img, labels)], cfg, class_names=names, checkpoint_dir=ck, progress=False,
                 callbacks=[lambda ev: not (ev["event"] == "epoch" and ev["epoch"] == 1)])
    assert (ck / "last" / "checkpoint.json").is_file() and (ck / "best" / "metadata.json").is_file()
    pixlab.load_model(ck / "best")
    resumed = pixlab.train([(img, labels)], cfg, class_names=names, resume=ck, progress=False)
    assert len(resumed.history) == 4
    a, b = _weights(full), _weights(resumed)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    # Without a config (all defaults: unet/resnet34...), resume trains on with the checkpoint's own.
    plain = pixlab.train([(img, labels)], pixlab.TrainConfig(), class_names=names, resume=ck, progress=False)
    c = _weights(plain)
    assert c.keys() == a.keys() and all(torch.allclose(a[k].float(), c[k].float(), atol=1e-6) for k in a)
    assert plain.config.architecture == "tiny_unet" and plain.metadata["user_config"]["tile_size"] == 64
    with pytest.raises(ValueError, match=r"cannot resume .*learning_rate=0\.5 \(checkpoint: 0\.001\)"):
        pixlab.train([(img, labels)], cfg.replace(learning_rate=0.5), class_names=names, resume=ck, progress=False)


def test_time_limit_stops_early(tiny_cfg, fluo_sample):
    img, labels, _, names = fluo_sample
    model = pixlab.train([(img, labels)], tiny_cfg.replace(epochs=1000, time_limit_s=2, recipe="standard"),
                         class_names=names, progress=False)
    assert model.metadata["stop_reason"] == "time_limit" and len(model.history) < 1000


def test_multi_image_and_pseudo_labels(tiny_cfg, fluo_sample):
    from pixlab.datasets import strokes_from_mask, synthetic_fluorescence
    img, labels, _, names = fluo_sample
    img2, t2 = synthetic_fluorescence(shape=(80, 112), n_channels=2, n_nuclei=6, seed=5)
    l2 = strokes_from_mask(t2, strokes_per_class=3, seed=5)
    model = pixlab.train([(img, labels), (img2, l2)], tiny_cfg.replace(pseudo_labels=True),
                         class_names=names, progress=False)
    assert model.predict(img2).shape == (2, 80, 112)
    assert model.metadata["train_images"] and len(model.metadata["train_images"]) == 2


def test_sparse_loss_ignores_unlabelled_pixels(tiny_cfg):
    cfg = tiny_cfg.replace(loss="ce_dice")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 3, 8, 8, generator=g)
    target = torch.full((1, 8, 8), -1)
    target[0, 2, 2], target[0, 5, 5], target[0, 6, 1] = 0, 1, 2
    pseudo = torch.full_like(target, -1)
    base = sparse_loss(logits, target, pseudo, cfg, None)
    changed = logits.clone()
    changed[:, :, 0, 0] += 100  # an unlabelled pixel
    assert torch.allclose(base, sparse_loss(changed, target, pseudo, cfg, None))
    changed[:, 0, 2, 2] += 5  # a labelled pixel
    assert not torch.allclose(base, sparse_loss(changed, target, pseudo, cfg, None))


def test_balanced_pseudo_loss_weighs_classes_equally(tiny_cfg):
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 2, 8, 8, generator=g)
    target = torch.full((1, 8, 8), -1)          # no stroke: only pseudo-labels count
    pseudo = torch.zeros((1, 8, 8), dtype=torch.long)
    pseudo[0, :2, :3] = 1                       # 6 foreground pixels, 58 background
    ce = F.cross_entropy(logits, pseudo, reduction="none")
    cfg = tiny_cfg.replace(pseudo_labels=True, pseudo_weight=0.5)
    plain = sparse_loss(logits, target, pseudo, cfg.replace(pseudo_balance=False), None)
    balanced = sparse_loss(logits, target, pseudo, cfg.replace(pseudo_balance=True), None)
    assert torch.allclose(plain, 0.5 * ce.mean())
    assert torch.allclose(balanced, 0.5 * (ce[pseudo == 0].mean() + ce[pseudo == 1].mean()) / 2)


def test_balanced_stroke_loss_weighs_classes_equally(tiny_cfg):
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 2, 8, 8, generator=g)
    target = torch.full((1, 8, 8), -1)
    target[0, :4] = 0                           # 32 background stroke pixels
    target[0, 6, :2] = 1                        # 2 foreground stroke pixels
    pseudo = torch.full_like(target, -1)
    ce = F.cross_entropy(logits, target.clamp_min(0), reduction="none")
    cfg = tiny_cfg.replace(loss="ce", pseudo_labels=False)
    plain = sparse_loss(logits, target, pseudo, cfg.replace(stroke_balance=False), None)
    balanced = sparse_loss(logits, target, pseudo, cfg.replace(stroke_balance=True), None)
    assert torch.allclose(plain, ce[target >= 0].mean())
    assert torch.allclose(balanced, (ce[target == 0].mean() + ce[target == 1].mean()) / 2)
    assert not torch.allclose(plain, balanced)


def test_split_strokes_holds_out_whole_strokes():
    lab = np.zeros((40, 40), np.uint8)
    for i in range(5):
        lab[2 + 8 * i, 2:10] = 1
        lab[2 + 8 * i, 20:30] = 2
    tr, va, info = split_strokes([lab], 2, 0.2, seed=0)
    assert info["val_strokes"] == [1, 1] and info["train_strokes"] == [4, 4]
    assert not ((tr[0] > 0) & (va[0] > 0)).any()
    np.testing.assert_array_equal(np.maximum(tr[0], va[0]), lab)


@pytest.mark.parametrize("case, msg", [
    ("shape", "shape"),
    ("missing_class", "no labelled pixel"),
    ("beyond", "class id 3"),
    ("nan", "NaN"),
    ("one_class", "at least 2 classes"),
])
def test_bad_training_input(case, msg, tiny_cfg, fluo_sample):
    img, labels, _, names = fluo_sample
    if case == "shape":
        samples = [(img, labels[:-4])]
    elif case == "missing_class":
        samples, names = [(img, np.where(labels == 2, 0, labels))], names
    elif case == "beyond":
        l2 = labels.copy()
        l2[0, 0] = 3
        samples = [(img, l2)]
    elif case == "nan":
        a = np.asarray(img.data).astype(np.float32)
        a[0, 5, 5] = np.nan
        samples = [(a, labels)]
    else:
        samples, names = [(img, np.minimum(labels, 1))], ["only"]
    with pytest.raises(ValueError, match=msg):
        pixlab.train(samples, tiny_cfg, class_names=names, progress=False)


def test_image_smaller_than_tile_is_padded(tiny_cfg):
    rng = np.random.default_rng(0)
    img = rng.random((1, 40, 50)).astype(np.float32)
    lab = np.zeros((40, 50), np.uint8)
    lab[5:8, 5:20], lab[30:33, 20:45] = 1, 2
    model = pixlab.train([(img, lab)], tiny_cfg.replace(tile_size=64), class_names=["a", "b"], progress=False)
    assert model.predict(img).shape == (2, 40, 50)


def test_batch_without_any_label_still_backpropagates(tiny_cfg):
    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    none = torch.full((2, 8, 8), -1)
    loss = sparse_loss(logits, none, none, tiny_cfg, None)
    loss.backward()
    assert float(loss) == 0.0 and logits.grad is not None and not logits.grad.any()


def test_model_records_training_intensities_for_shift_checks(tiny_cfg, fluo_sample):
    img, labels, _, names = fluo_sample
    model = pixlab.train([(img, labels)], tiny_cfg.replace(epochs=1), class_names=names, progress=False)
    assert model.metadata["intensity_stats"] is not None


def test_weight_average_is_validated_and_returned(tiny_cfg, fluo_sample, monkeypatch):
    img, labels, _, names = fluo_sample
    from pixlab.training import averaging
    monkeypatch.setattr(averaging, "warmup_decay", lambda decay, n: decay)  # the plain decay, no warm-up
    kw = dict(class_names=names, progress=False)
    # One optimizer step (4 tiles of batch 4), no averaging.
    one = _weights(pixlab.train([(img, labels)], tiny_cfg.replace(epochs=1, patches_per_epoch=4), **kw))
    # Six steps; an average that barely moves after copying the weights of the first step.
    ema = pixlab.train([(img, labels)], tiny_cfg.replace(epochs=3, weight_average="ema", ema_decay=0.99999), **kw)
    raw = pixlab.train([(img, labels)], tiny_cfg.replace(epochs=3), **kw)

    def maxdiff(a, b):
        return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())

    assert maxdiff(_weights(ema), one) < 1e-4      # the returned model is the average...
    assert maxdiff(_weights(raw), one) > 1e-3      # ...not the raw weights, which kept moving
    ema_val = [h["val_loss"] for h in ema.history]
    raw_val = [h["val_loss"] for h in raw.history]
    assert max(ema_val) - min(ema_val) < 1e-4 < max(raw_val) - min(raw_val)  # validation saw the average


def test_resume_restores_the_weight_average(tmp_path, tiny_cfg, fluo_sample):
    img, labels, _, names = fluo_sample
    cfg = tiny_cfg.replace(epochs=4, weight_average="ema", ema_decay=0.9)
    full = pixlab.train([(img, labels)], cfg, class_names=names, progress=False)
    ck = tmp_path / "ck"
    pixlab.train([(img, labels)], cfg, class_names=names, checkpoint_dir=ck, progress=False,
                 callbacks=[lambda ev: not (ev["event"] == "epoch" and ev["epoch"] == 1)])
    resumed = pixlab.train([(img, labels)], cfg, class_names=names, resume=ck, progress=False)
    a, b = _weights(full), _weights(resumed)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    pixlab.train([(img, labels)], cfg.replace(weight_average="none"), class_names=names, progress=False,
                 checkpoint_dir=tmp_path / "plain")
    with pytest.raises(ValueError, match=r"weight_average='ema' \(checkpoint: 'none'\)"):
        pixlab.train([(img, labels)], cfg, class_names=names, resume=tmp_path / "plain", progress=False)


def test_pseudo_margin_drops_pseudo_labels_next_to_the_forest_boundary():
    from pixlab.training.pseudo import _confident
    p = np.zeros((2, 10, 20), np.float32)
    p[0, :, :10], p[1, :, 10:] = 0.95, 0.95      # class 1 left, class 2 right, confident everywhere
    p[1, :, :10], p[0, :, 10:] = 0.05, 0.05
    p[:, 0, 0] = 0.5                             # one unconfident pixel
    plain = _confident(p, 0.8)
    assert plain[0, 0] == 0 and (plain[:, 9] == 1).all() and (plain[:, 10] == 2).all()
    lab = _confident(p, 0.8, margin=3)
    # columns 7..12 lie within 3 px of the class change between columns 9 and 10
    assert (lab[:, 7:13] == 0).all()
    assert (lab[1:, :7] == 1).all() and (lab[:, 13:] == 2).all() and lab[0, 0] == 0


def test_edge_loss_is_lowest_with_the_boundary_on_the_image_edge():
    from pixlab.training.losses import edge_loss
    g = torch.Generator().manual_seed(0)
    x = 0.05 * torch.randn(2, 1, 32, 32, generator=g)
    x[..., 16:] += 1.0                                   # an intensity step between columns 15 and 16

    def logits(col):
        z = torch.zeros(2, 2, 32, 32)
        z[:, 0, :, :col], z[:, 1, :, col:] = 8.0, 8.0
        return z
    on, off, flat = edge_loss(logits(16), x), edge_loss(logits(12), x), edge_loss(logits(0), x)
    assert float(flat) < 1e-3                           # one class everywhere: neighbours agree
    assert float(on) < 0.2 * float(off)                 # a class change costs least across the edge
    z = logits(12).requires_grad_()
    edge_loss(z, x).backward()
    assert z.grad.abs().sum() > 0


def test_pseudo_margin_on_a_whole_image_sees_class_changes_across_row_bands(monkeypatch):
    from types import SimpleNamespace
    from pixlab.training import pseudo
    monkeypatch.setattr(pseudo, "PSEUDO_BAND_PIXELS", 40 * 5)     # bands of 5 rows: the change at a band edge
    H, W = 20, 40

    class Forest:                                                # class 2 below row 10, confident
        def fit(self, *a, **k):
            return self

        def predict_proba(self, cache, region):
            y0, y1 = region[0], region[1]
            p = np.zeros((2, y1 - y0, W), np.float32)
            rows = np.arange(y0, y1)[:, None]
            p[1] = np.where(rows >= 10, 0.95, 0.05)
            p[0] = 1 - p[1]
            return p

    s = SimpleNamespace(cache=np.zeros((1, H, W), np.float32), train_labels=np.zeros((H, W), np.uint8), pseudo=None)
    prep = SimpleNamespace(check=lambda: None, over_share=lambda share: False)
    cfg = SimpleNamespace(pseudo_threshold=0.8, pseudo_margin=2)
    assert pseudo._pseudo_whole(s, 2, cfg, Forest(), prep)
    assert (s.pseudo[8:12] == 0).all()                           # rows 8..11: within 2 px of the change
    assert (s.pseudo[:8] == 1).all() and (s.pseudo[12:] == 2).all()
