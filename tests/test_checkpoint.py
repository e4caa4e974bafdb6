"""resume_config: a resumed run uses the config its checkpoint was trained with."""

import json

import pytest

from pixlab import TrainConfig
from pixlab.training.checkpoint import resume_config


def _checkpoint(tmp_path, cfg):
    last = tmp_path / "ck" / "last"
    last.mkdir(parents=True)
    (last / "checkpoint.json").write_text(json.dumps({"format": "pixlab-checkpoint", "epoch": 2,
                                                      "config": cfg.resolved().to_dict()}))
    return tmp_path / "ck"


def test_resume_uses_the_stored_config(tmp_path, tiny_cfg):
    stored = tiny_cfg.replace(learning_rate=3e-3, class_weights=[1.0, 2.0], scheduler="one_cycle")
    ck = _checkpoint(tmp_path, stored)
    assert resume_config(ck, None) == stored.resolved()
    # fields left at their defaults defer to the checkpoint (`pixlab train --resume` with no options)
    got = resume_config(ck, TrainConfig())
    assert got.replace(device="cpu") == stored.resolved()
    assert resume_config(ck / "last", stored) == stored.resolved()   # the same config, the 'last' folder


def test_run_control_fields_may_change(tmp_path, tiny_cfg):
    ck = _checkpoint(tmp_path, tiny_cfg.replace(time_limit_s=60, scheduler="none", epochs=4))
    got = resume_config(ck, tiny_cfg.replace(time_limit_s=120, num_threads=1, checkpoint_every=2, epochs=10))
    assert (got.time_limit_s, got.num_threads, got.checkpoint_every, got.epochs) == (120, 1, 2, 10)
    assert resume_config(ck, tiny_cfg.replace(device="auto")).device == "auto"   # this machine decides
    # a schedule sized by epochs x steps cannot be stretched
    ck2 = _checkpoint(tmp_path / "b", tiny_cfg.replace(scheduler="one_cycle", epochs=4))
    with pytest.raises(ValueError, match=r"epochs=10 \(checkpoint: 4\)"):
        resume_config(ck2, tiny_cfg.replace(scheduler="one_cycle", epochs=10))


def test_incompatible_fields_are_all_named(tmp_path, tiny_cfg):
    ck = _checkpoint(tmp_path, tiny_cfg)
    with pytest.raises(ValueError, match=r"cannot resume .*learning_rate=0\.5 \(checkpoint: 0\.001\), "
                                         r"tile_size=128 \(checkpoint: 64\).*own config"):
        resume_config(ck, tiny_cfg.replace(learning_rate=0.5, tile_size=128))


def test_the_same_config_resumes_after_the_recipe_resolved_it(tmp_path):
    # cpu_quick rewrote architecture, learning rate, weight average... in the stored config
    cfg = TrainConfig(recipe="auto", device="cpu", time_limit_s=60, tile_size=256)
    ck = _checkpoint(tmp_path, cfg)
    got = resume_config(ck, cfg)
    assert (got.recipe, got.architecture, got.learning_rate, got.weight_average, got.tile_size) == \
        ("cpu_quick", "tiny_unet", 3e-3, "ema", 256)


def test_a_checkpoint_without_config_or_folder_is_a_clear_error(tmp_path, tiny_cfg):
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        resume_config(tmp_path / "nothing", tiny_cfg)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "checkpoint.json").write_text("{not json")
    with pytest.raises(ValueError, match="damaged"):
        resume_config(tmp_path / "bad", tiny_cfg)
