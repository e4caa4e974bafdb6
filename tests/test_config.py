import json

import pytest

from pixlab.training.config import PRESETS, TrainConfig, field_info, preset


def test_defaults_follow_the_guide_first_run():
    c = TrainConfig(device="cpu")
    assert c.architecture == c.encoder == c.tile_size == c.batch_size == c.learning_rate == "auto"
    s = c.resolved()  # no time limit: the standard recipe, i.e. the guide's first run
    assert (s.architecture, s.encoder, s.epochs, s.batch_size, s.learning_rate, s.tile_size) == \
        ("unet", "resnet34", 50, 8, 1e-3, 512)
    assert s.pretrained and s.scheduler == "one_cycle" and s.loss == "ce_dice" and s.early_stopping
    assert s.optimizer == "adamw" and s.normalization == "percentile_99"


@pytest.mark.parametrize("kw, msg", [
    ({"tile_size": 500}, "not divisible by 32"),
    ({"learning_rate": -1e-3}, "below the minimum"),
    ({"loss": "hinge"}, "choose one of"),
    ({"scheduler": "warp"}, "choose one of"),
    ({"validation_split": 1.5}, "above the maximum"),
    ({"normalization": "fixed_range"}, "fixed_range"),
    ({"freeze_blocks": "some"}, "freeze_blocks"),
    ({"class_weights": [1, -2]}, "non-negative"),
    ({"device": "tpu"}, "device"),
    ({"epochs": 2.5}, "whole number"),
    ({"augment": "yes"}, "true or false"),
    ({"learning_rate": float("nan")}, "finite"),
    ({"weight_decay": float("inf")}, "finite"),
    ({"encoder": "resnet35"}, "unknown encoder 'resnet35'; recommended"),
    ({"tile_size": "big"}, "must be a number or 'auto'"),
    ({"pseudo_labels": "maybe"}, "true, false or 'auto'"),
])
def test_bad_values_name_field_value_and_fix(kw, msg):
    with pytest.raises(ValueError, match=msg) as e:
        TrainConfig(**kw)
    assert list(kw)[0] in str(e.value)


def test_unknown_field_suggests_the_close_name():
    with pytest.raises(ValueError, match="did you mean 'epochs'"):
        TrainConfig.from_dict({"epoch": 3})


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_round_trip(tmp_path, suffix):
    c = TrainConfig(epochs=7, class_weights={"nuclei": 2.0}, freeze_blocks=2, channels=["DAPI"])
    p = tmp_path / f"profile{suffix}"
    c.save(p)
    assert TrainConfig.load(p) == c


def test_newer_version_is_refused(tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"version": 99}))
    with pytest.raises(ValueError, match="newer pixlab"):
        TrainConfig.load(p)


def test_resolved_cpu_quick_only_for_short_cpu_runs():
    assert TrainConfig(device="cpu").resolved().architecture == "unet"
    quick = TrainConfig(device="cpu", time_limit_s=120).resolved()
    assert quick.recipe == "cpu_quick" and quick.architecture == "tiny_unet" and quick.pseudo_labels
    assert TrainConfig(device="cpu", time_limit_s=120, recipe="standard").resolved().architecture == "unet"
    # the quick recipe averages its weights and uses the whole time budget; the guide's defaults do not
    assert quick.weight_average == "ema" and quick.ema_decay == 0.995 and quick.pseudo_balance
    assert not quick.early_stopping
    standard = TrainConfig(device="cpu").resolved()
    assert standard.weight_average == "none" and standard.early_stopping
    # boundaries no stroke touches: the quick recipe keeps pseudo-labels off the forest's edges and adds
    # the edge-aware smoothness term; the guide's recipe has neither, and a value the user set is kept
    assert quick.pseudo_margin == 3 and quick.edge_weight == 3.0
    assert standard.pseudo_margin == 0 and standard.edge_weight == 0.0
    # the edge term only where it was measured to help: the quick recipe's tiny_unet, not an encoder UNet
    encoder_net = TrainConfig(device="cpu", time_limit_s=120, encoder="resnet18", pretrained=False).resolved()
    assert encoder_net.architecture == "unet" and encoder_net.edge_weight == 0 and encoder_net.pseudo_margin == 3
    kept = TrainConfig(device="cpu", time_limit_s=120, pseudo_margin=0, edge_weight=0,
                       pseudo_agreement=False).resolved()
    assert kept.pseudo_margin == 0 and kept.edge_weight == 0 and kept.pseudo_agreement is False
    # pseudo-labels only where a fine-scale forest agrees: in the quick recipe, not in the guide's
    assert quick.pseudo_agreement is True and standard.pseudo_agreement is False
    # batch 4 for the quick recipe's tiny_unet (twice the steps in the same time), the guide's 8 otherwise
    assert quick.batch_size == 4 and encoder_net.batch_size == 8 and standard.batch_size == 8
    assert TrainConfig(device="cpu", time_limit_s=120, batch_size=8).resolved().batch_size == 8


def test_cpu_threads_all_cores_only_for_the_quick_recipe(monkeypatch):
    import os
    from pixlab.training.trainer import _default_threads
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert _default_threads(TrainConfig(device="cpu", time_limit_s=120).resolved()) == 8
    assert _default_threads(TrainConfig(device="cpu").resolved()) == 7   # one core left to the loader


def test_presets_and_field_info():
    assert preset("transfer_small").freeze_blocks == "all"
    assert preset("transfer-large").encoder == "resnet50"
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    assert set(PRESETS) >= {"first_run", "transfer_small", "transfer_medium", "transfer_large"}
    info = {f["name"]: f for f in field_info()}
    assert info["epochs"]["group"] == "training" and info["epochs"]["help"]
    assert info["loss"]["choices"] == ("auto", "ce", "dice", "ce_dice", "focal")


def test_tiny_unet_never_asks_for_pretrained_weights():
    assert TrainConfig(architecture="tiny_unet").resolved().pretrained is False


def test_cpu_quick_keeps_what_the_user_set():
    quick = TrainConfig(device="cpu", time_limit_s=120, learning_rate=1e-4, loss="focal",
                        architecture="fpn", pretrained=False).resolved()
    assert quick.recipe == "cpu_quick"
    assert quick.learning_rate == 1e-4 and quick.loss == "focal" and quick.architecture == "fpn"
    assert quick.tile_size == 128 and quick.weight_average == "ema"  # left at defaults: the recipe's
    assert quick.resolved() == quick  # resolving twice changes nothing


def test_explicit_choices_survive_resolved_even_when_they_equal_a_default():
    # issue 13: encoder='resnet18' used to become tiny_unet, and a tile_size equal to the old default
    # was replaced by the quick recipe's
    cfg = TrainConfig(device="cpu", time_limit_s=180, tile_size=256, batch_size=8, encoder="resnet18",
                      pretrained=False, seed=0)
    r = cfg.resolved()
    assert (r.recipe, r.architecture, r.encoder, r.tile_size, r.batch_size) == ("cpu_quick", "unet", "resnet18", 256, 8)
    r = TrainConfig(device="cpu", time_limit_s=60, tile_size=512, learning_rate=1e-3, early_stopping=True).resolved()
    assert (r.tile_size, r.learning_rate, r.early_stopping) == (512, 1e-3, True)
    assert r.architecture == "tiny_unet"  # left at auto: the recipe's


def test_resolution_reports_every_change_with_a_reason():
    cfg = TrainConfig(device="cpu", time_limit_s=120, tile_size=256)
    r, notes = cfg.resolved(), cfg.resolution()
    changed = {n["field"] for n in notes}
    assert changed == {f for f in cfg.to_dict() if getattr(cfg, f) != getattr(r, f)}
    assert "tile_size" not in changed and {"recipe", "architecture", "learning_rate"} <= changed
    assert all(n["reason"] and n["value"] != n["resolved"] for n in notes)
    assert r.resolution() == []  # a resolved config has nothing left to choose


def test_resolved_configs_round_trip_and_old_profiles_load(tmp_path):
    r = TrainConfig(device="cpu", time_limit_s=60).resolved()
    p = tmp_path / "p.json"
    r.save(p)
    assert TrainConfig.load(p) == r and TrainConfig.load(p).resolved() == r
    # a profile written before 'auto' existed: its values are explicit and kept
    p.write_text(json.dumps({"architecture": "unet", "encoder": "resnet34", "tile_size": 512, "learning_rate": 0.001}))
    old = TrainConfig.load(p).replace(device="cpu", time_limit_s=60).resolved()
    assert (old.architecture, old.encoder, old.tile_size) == ("unet", "resnet34", 512)
