import json

import pytest

from pixlab.training.config import PRESETS, TrainConfig, field_info, preset


def test_defaults_follow_the_guide_first_run():
    c = TrainConfig()
    assert (c.architecture, c.encoder, c.epochs, c.batch_size, c.learning_rate, c.tile_size) == \
        ("unet", "resnet34", 50, 8, 1e-3, 512)
    assert c.pretrained and c.scheduler == "one_cycle" and c.loss == "ce_dice" and c.early_stopping
    assert c.optimizer == "adamw" and c.normalization == "percentile_99"


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
    assert info["loss"]["choices"] == ("ce", "dice", "ce_dice", "focal")


def test_tiny_unet_never_asks_for_pretrained_weights():
    assert TrainConfig(architecture="tiny_unet").resolved().pretrained is False


def test_cpu_quick_keeps_what_the_user_set():
    quick = TrainConfig(device="cpu", time_limit_s=120, learning_rate=1e-4, loss="focal",
                        architecture="fpn", pretrained=False).resolved()
    assert quick.recipe == "cpu_quick"
    assert quick.learning_rate == 1e-4 and quick.loss == "focal" and quick.architecture == "fpn"
    assert quick.tile_size == 128 and quick.weight_average == "ema"  # left at defaults: the recipe's
    assert quick.resolved() == quick  # resolving twice changes nothing
