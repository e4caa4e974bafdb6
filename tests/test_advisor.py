"""The advisor follows the guide's tables row by row; training profiles round-trip and fail clearly."""

import json

import pytest

from pixlab.training.config import TrainConfig, advise

# n_tiles=500 and 16 GB keep the dataset-size and VRAM tables from changing the backbone choice.
NEUTRAL = {"n_tiles": 500, "vram_gb": 16}


# --- "Quick reference by image type" --------------------------------------------------------------

@pytest.mark.parametrize("image_type, kw, encoder, weights", [
    ("H&E", {"magnification": 20}, "resnet50", "lunit-swav"),            # H&E brightfield (20x)
    ("he", {"magnification": 40}, "resnet34", "imagenet"),               # H&E (other mag): safe fallback
    ("he", {"magnification": None}, "resnet34", "imagenet"),             # magnification unknown
    ("he", {"n_channels": 4}, "resnet34", "imagenet"),                   # not RGB: no H&E weights
    ("fluorescence", {"n_channels": 2}, "resnet34", "imagenet"),         # Fluorescence (1-3 channels)
    ("IF", {}, "resnet34", "imagenet"),
    ("multiplex", {"n_channels": 6}, "resnet34", "imagenet"),            # Multiplex IF (4+ channels)
    ("spectral", {"n_channels": 12}, "resnet34", "imagenet"),            # Spectral / hyperspectral
    ("brightfield", {}, "resnet34", "imagenet"),
])
def test_backbone_by_image_type(image_type, kw, encoder, weights):
    cfg, why = advise(image_type, **NEUTRAL, **kw)
    assert (cfg.encoder, cfg.encoder_weights) == (encoder, weights)
    assert cfg.pretrained and why


def test_multichannel_reasons_follow_the_if_tips():
    cfg, why = advise("multiplex", n_tiles=500, vram_gb=16, n_channels=8)
    text = " ".join(why)
    assert cfg.per_channel and "first conv layer is adapted to 8 inputs" in text and "500-1000 tiles" in text
    _, why_he = advise("he", n_tiles=500, vram_gb=16, n_channels=4)
    assert "expect 3 RGB channels" in " ".join(why_he)


# --- "By dataset size" ------------------------------------------------------------------------------

@pytest.mark.parametrize("image_type, n_tiles, expected", [
    ("other", 50, {"encoder": "efficientnet-b0", "freeze_blocks": "all", "epochs": 200, "batch_size": 4,
                   "augment": True}),                                               # <200 tiles
    ("fluorescence", 150, {"encoder": "resnet34", "freeze_blocks": "all", "epochs": 200}),
    ("he", 150, {"encoder": "resnet50", "encoder_weights": "lunit-swav", "freeze_blocks": "all"}),
    ("other", 500, {"encoder": "resnet34", "freeze_blocks": 2}),                    # 200-1000 tiles
    ("other", 2000, {"encoder": "resnet34", "freeze_blocks": 1}),                   # 1000-5000 tiles
    ("fluorescence", 6000, {"encoder": "resnet50", "freeze_blocks": "none", "epochs": 50}),  # >5000
    ("he", 8000, {"encoder": "resnet50", "encoder_weights": "lunit-swav", "freeze_blocks": "none"}),
    ("other", 20000, {"encoder": "resnet50", "freeze_blocks": "none", "epochs": 50, "batch_size": 16,
                      "learning_rate": 5e-4}),                                      # >10000 tiles
])
def test_dataset_size_table(image_type, n_tiles, expected):
    cfg, _ = advise(image_type, n_tiles=n_tiles, vram_gb=16)
    assert {k: getattr(cfg, k) for k in expected} == expected


# --- "By computational resources" -------------------------------------------------------------------

@pytest.mark.parametrize("vram, n_tiles, encoder, tile", [
    (4, 6000, "efficientnet-b0", 256),
    (8, 6000, "resnet34", 512),
    (16, 6000, "resnet50", 512),
    (24, 6000, "resnet50", 1024),
    (48, 500, "resnet34", 512),       # 24+ GB but few tiles: 512 px is enough
])
def test_vram_table(vram, n_tiles, encoder, tile):
    cfg, why = advise("fluorescence", n_tiles=n_tiles, vram_gb=vram)
    assert (cfg.encoder, cfg.tile_size) == (encoder, tile)
    assert any(f"{vram} GB" in w for w in why)


def test_small_gpu_overrides_histology_backbone_and_caps_batch():
    cfg, _ = advise("he", n_tiles=20000, vram_gb=4)
    assert (cfg.encoder, cfg.encoder_weights, cfg.tile_size, cfg.batch_size) == ("efficientnet-b0", "imagenet", 256, 8)
    cfg8, why = advise("he", n_tiles=20000, vram_gb=8)
    assert (cfg8.encoder, cfg8.encoder_weights, cfg8.batch_size) == ("resnet34", "imagenet", 8)
    assert any("batch 8 instead of 16" in w for w in why)


def test_no_gpu_points_to_the_cpu_recipe():
    cfg, why = advise("fluorescence", n_tiles=100, vram_gb=None)
    assert "CPU" in why[-1] and "time_limit_s" in why[-1]
    assert cfg.tile_size == TrainConfig().tile_size  # no GPU row applied


def test_advice_starts_from_a_base_config():
    base = TrainConfig(loss="focal", epochs=7)
    cfg, _ = advise("fluorescence", n_tiles=500, vram_gb=16, base=base)
    assert cfg.loss == "focal" and cfg.epochs == 7 and cfg.freeze_blocks == 2


@pytest.mark.parametrize("kw, match", [
    ({"image_type": "xray", "n_tiles": 10}, "image_type='xray'"),
    ({"image_type": "he", "n_tiles": -1}, "n_tiles=-1"),
    ({"image_type": "he", "n_tiles": 10, "n_channels": 0}, "n_channels=0"),
    ({"image_type": "he", "n_tiles": 10, "vram_gb": -4}, "vram_gb=-4"),
])
def test_advisor_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        advise(**kw)


# --- training profiles -------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_advised_profile_round_trips(tmp_path, suffix):
    cfg, _ = advise("he", n_tiles=150, vram_gb=16)
    path = tmp_path / f"profile{suffix}"
    cfg.save(path)
    assert TrainConfig.load(path) == cfg
    assert TrainConfig.load(path).encoder_weights == "lunit-swav"


def test_profile_unknown_key_suggests_the_field(tmp_path):
    path = tmp_path / "profile.yaml"
    path.write_text("version: 1\nencoder: resnet50\nencoder_weight: lunit-swav\n")
    with pytest.raises(ValueError, match="'encoder_weight' \\(did you mean 'encoder_weights'\\?\\)"):
        TrainConfig.load(path)


def test_profile_from_newer_pixlab_and_bad_values_refused(tmp_path):
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"version": 2, "epochs": 3}))
    with pytest.raises(ValueError, match="version 2.*newer pixlab"):
        TrainConfig.load(newer)
    histology_on_resnet34 = tmp_path / "bad.yaml"
    histology_on_resnet34.write_text("encoder: resnet34\nencoder_weights: kather100k\n")
    with pytest.raises(ValueError, match="encoder_weights='kather100k'.*resnet50"):
        TrainConfig.load(histology_on_resnet34)
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: [1, 2\n")
    with pytest.raises(ValueError, match="cannot parse config file"):
        TrainConfig.load(broken)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        TrainConfig.load(tmp_path / "missing.yaml")
