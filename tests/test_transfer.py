"""Transfer learning: histology encoders, N-channel first conv, freezing presets, retraining."""

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
from safetensors.torch import save_file

import pixlab
from pixlab.training.config import PRESETS, preset
from pixlab.nn.networks import (
    WEIGHT_SETS,
    build_network,
    count_parameters,
    encoder_blocks,
    freeze,
    map_encoder_state,
    weight_locations,
)

HISTOLOGY = sorted(WEIGHT_SETS)


pytestmark = pytest.mark.usefixtures("offline_weights")  # conftest.py: empty caches, downloads fail


@pytest.fixture(scope="module")
def r50():
    """A random 3-channel smp resnet50 encoder and its state dict (stands in for published weights)."""
    torch.manual_seed(1)
    encoder = smp.encoders.get_encoder("resnet50", in_channels=3, weights=None)
    return encoder, {k: v.clone() for k, v in encoder.state_dict().items()}


# --- published checkpoint layouts (key names as the projects publish them) -------------------------

TIATOOLBOX_INDEX = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}


def lunit_layout(state):
    """Lunit benchmark-ssl-pathology: torchvision ResNet with fc deleted (ResNetTrunk)."""
    return dict(state)


def timm_layout(state):
    """1aurent/resnet50.* on the HF hub: timm resnet50 keys, kather100k variant with a 9-class fc."""
    return {**state, "fc.weight": torch.zeros(9, 2048), "fc.bias": torch.zeros(9)}


def tiatoolbox_layout(state):
    """TIAToolbox CNNModel: nn.Sequential(*resnet.children()[:-2]) as feat_extract + classifier."""
    out = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        out[f"feat_extract.{TIATOOLBOX_INDEX[head]}.{rest}"] = value
    return {**out, "classifier.weight": torch.zeros(9, 2048), "classifier.bias": torch.zeros(9)}


def dataparallel_layout(state):
    """A checkpoint saved from nn.DataParallel / DDP."""
    return {f"module.{k}": v for k, v in state.items()}


def ssl_wrapper_layout(state):
    """A self-supervised training wrapper: backbone under 'backbone.' plus a projection head."""
    return {**{f"backbone.{k}": v for k, v in state.items()},
            "projector.0.weight": torch.zeros(128, 2048), "projector.0.bias": torch.zeros(128)}


LAYOUTS = [lunit_layout, timm_layout, tiatoolbox_layout, dataparallel_layout, ssl_wrapper_layout]


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda f: f.__name__)
def test_published_layouts_map_onto_smp_resnet50(r50, layout):
    encoder, state = r50
    mapped = map_encoder_state(layout(state), encoder)
    assert sorted(mapped) == sorted(state)
    assert all(mapped[k] is state[k] for k in state)  # the very tensors, not look-alikes


def _encoder_equals(network, state):
    got = network.encoder.state_dict()
    return set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)


def test_lunit_release_file_from_torch_hub_folder(tmp_path, r50):
    _, state = r50
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(lunit_layout(state), folder / "swav_rn50_ep200.torch")
    network = build_network("unet", "resnet50", 3, 2, pretrained=True, weights="lunit-swav")
    assert _encoder_equals(network, state)
    assert network.pixlab_info["weights"] == str(folder / "swav_rn50_ep200.torch")
    assert network.pixlab_info["weight_set"] == "lunit-swav"


def test_tiatoolbox_kather100k_file_from_hf_cache(tmp_path, r50):
    _, state = r50
    # hf_hub_download("TIACentre/TIAToolbox_pretrained_weights", "resnet50-kather100k.pth") layout
    repo = tmp_path / "hf" / "models--TIACentre--TIAToolbox_pretrained_weights"
    snapshot = repo / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    torch.save(tiatoolbox_layout(state), snapshot / "resnet50-kather100k.pth")
    network = build_network("fpn", "resnet50", 3, 4, pretrained=True, weights="kather100k")
    assert _encoder_equals(network, state)
    assert network.pixlab_info["weights"] == str(snapshot / "resnet50-kather100k.pth")


def test_timm_hub_safetensors_copied_by_hand(tmp_path, r50):
    _, state = r50
    # 1aurent/resnet50.tcga_brca_simclr as timm caches it, copied without refs/ (any snapshot folder)
    path = tmp_path / "hf" / "models--1aurent--resnet50.tcga_brca_simclr" / "snapshots" / "main"
    path.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in timm_layout(state).items()}, str(path / "model.safetensors"))
    assert weight_locations("resnet50", weights="tcga-brca-simclr")[0] == path / "model.safetensors"
    network = build_network("unet", "resnet50", 3, 2, pretrained=True, weights="tcga-brca-simclr")
    assert _encoder_equals(network, state)


def test_histology_checkpoint_checked_strictly(tmp_path, r50):
    _, state = r50
    broken = dataparallel_layout(state)
    del broken["module.layer4.2.bn3.weight"]
    broken["module.layer4.2.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bt_rn50_ep200.pt"
    torch.save(broken, path)
    with pytest.raises(ValueError, match="missing.*layer4.2.bn3.weight.*unexpected.*layer4.2.extra.weight"):
        build_network("unet", "resnet50", 3, 2, weights_path=path, weights="lunit-barlow")


@pytest.mark.parametrize("name", HISTOLOGY)
def test_missing_histology_weights_name_files_and_folders(tmp_path, name):
    weight_set = WEIGHT_SETS[name]
    with pytest.raises(FileNotFoundError) as error:
        build_network("unet", "resnet50", 3, 2, pretrained=True, weights=name)
    message = str(error.value)
    for repo_id, filename in weight_set.hf_files:
        folder = "models--" + repo_id.replace("/", "--")
        assert repo_id in message and filename in message
        assert str(tmp_path / "hf" / folder / "snapshots") in message
    for filename in weight_set.hub_files:
        assert str(tmp_path / "torch" / "hub" / "checkpoints" / filename) in message
    assert "weights_path" in message


@pytest.mark.parametrize("in_channels", [1, 2, 7])
def test_histology_weights_refused_for_non_rgb_input(in_channels):
    with pytest.raises(ValueError, match="3-channel H&E.*weights='imagenet'"):
        build_network("unet", "resnet50", in_channels, 2, pretrained=True, weights="lunit-swav")


def test_histology_weights_need_resnet50():
    with pytest.raises(ValueError, match="only for encoder 'resnet50'"):
        build_network("unet", "resnet34", 3, 2, pretrained=True, weights="kather100k")
    with pytest.raises(ValueError, match="resnet50"):
        pixlab.TrainConfig(encoder="resnet34", encoder_weights="kather100k")
    with pytest.raises(ValueError, match="unknown encoder weights 'dinov9'"):
        build_network("unet", "resnet50", 3, 2, weights="dinov9")


def test_train_refuses_histology_weights_for_fluorescence(fluo_sample):
    img, labels, _, names = fluo_sample
    cfg = pixlab.TrainConfig(encoder="resnet50", encoder_weights="lunit-swav", tile_size=64, epochs=1,
                             batch_size=2, patches_per_epoch=2, recipe="standard", device="cpu")
    with pytest.raises(ValueError, match="2 input channel"):
        pixlab.train([(img, labels)], cfg, names, progress=False)


# --- first convolution adapted to N channels ---------------------------------------------------------


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory):
    torch.manual_seed(2)
    state = smp.encoders.get_encoder("resnet18", in_channels=3, weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18-f37072fd.pth"
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("in_channels", [1, 3, 7])
def test_n_channels_load_the_same_pretrained_weights(imagenet_file, in_channels):
    path, state = imagenet_file
    network = build_network("unet", "resnet18", in_channels, 2, weights_path=path)
    got = network.encoder.state_dict()
    assert all(torch.equal(got[k], state[k]) for k in state if k != "conv1.weight")
    rgb = state["conv1.weight"]
    expected = {1: rgb.sum(1, keepdim=True), 3: rgb,
                7: torch.stack([rgb[:, i % 3] for i in range(7)], 1) * 3 / 7}[in_channels]
    torch.testing.assert_close(got["conv1.weight"], expected, rtol=0, atol=1e-6 if in_channels != 3 else 0)


# --- freezing presets ------------------------------------------------------------------------------


def test_transfer_presets_follow_the_guide_rows():
    small, medium, large = (preset(f"transfer_{s}") for s in ("small", "medium", "large"))
    # "Very small dataset (<200 tiles): efficientnet-b0, freeze all encoder, augmentation on, 200, batch 4"
    assert (small.encoder, small.freeze_blocks, small.augment, small.epochs, small.batch_size) == \
        ("efficientnet-b0", "all", True, 200, 4)
    # "200-1000 tiles: resnet34, freeze first 2 blocks" with the first-run epochs/batch/lr
    assert (medium.encoder, medium.freeze_blocks, medium.epochs, medium.batch_size, medium.learning_rate) == \
        ("resnet34", 2, 50, 8, 1e-3)
    # "Large dataset (>10000 tiles): resnet50, unfreeze all, epochs=50, batch=16, lr=5e-4"
    assert (large.encoder, large.freeze_blocks, large.epochs, large.batch_size, large.learning_rate) == \
        ("resnet50", "none", 50, 16, 5e-4)
    assert all(p.pretrained for p in (small, medium, large))
    assert {"transfer_small", "transfer_medium", "transfer_large"} <= set(PRESETS)


def test_transfer_presets_trainable_parameter_counts():
    counts = {}
    for size in ("small", "medium", "large"):
        cfg = preset(f"transfer_{size}", device="cpu").resolved()  # the guide's recipe: a UNet on the encoder
        network = build_network(cfg.architecture, cfg.encoder, 3, 2)
        counts[size] = freeze(network, cfg.freeze_blocks)
        if size == "small":
            encoder = sum(p.numel() for p in network.encoder.parameters())
            assert counts[size]["trainable"] == counts[size]["total"] - encoder
        if size == "medium":  # stem + layer1 of resnet34 frozen, the rest trains
            frozen = sum(p.numel() for block in encoder_blocks(network)[:2] for m in block for p in m.parameters())
            assert counts[size]["trainable"] == counts[size]["total"] - frozen
            assert not network.encoder.layer1[0].conv1.weight.requires_grad
            assert network.encoder.layer2[0].conv1.weight.requires_grad
    assert counts["large"]["trainable"] == counts["large"]["total"]
    assert counts["small"]["trainable"] / counts["small"]["total"] < \
        counts["medium"]["trainable"] / counts["medium"]["total"] < 1


def test_manual_per_block_freeze_list():
    network = build_network("unet", "resnet34", 3, 2)
    result = freeze(network, [1, 3])
    enc = network.encoder
    frozen = sum(p.numel() for m in (enc.layer1, enc.layer3) for p in m.parameters())
    assert result["frozen_blocks"] == [1, 3]
    assert result["trainable"] == count_parameters(network)["total"] - frozen
    assert enc.conv1.weight.requires_grad and enc.layer2[0].conv1.weight.requires_grad
    assert not enc.layer1[0].conv1.weight.requires_grad and not enc.layer3[0].conv1.weight.requires_grad


# --- retraining from a saved model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def source_model(tmp_path_factory):
    from pixlab.datasets import strokes_from_mask, synthetic_fluorescence

    img, truth = synthetic_fluorescence(shape=(96, 96), n_channels=2, n_nuclei=8, seed=3)
    labels = strokes_from_mask(truth, strokes_per_class=6, radius=2, length=(6, 12), seed=3)
    cfg = pixlab.TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=64, epochs=1, batch_size=4,
                             patches_per_epoch=8, recipe="standard", device="cpu", early_stopping=False,
                             loss="ce", scheduler="none", freeze_blocks=1)
    model = pixlab.train([(img, labels)], cfg, ["background", "nuclei"], progress=False)
    folder = tmp_path_factory.mktemp("models") / "source"
    model.save(folder)
    return folder, model, img, labels, cfg


def _params(model):
    return {k: v.detach().clone() for k, v in model.network.named_parameters()}


def test_trainable_counts_recorded_in_model_metadata(source_model):
    folder, model, *_ = source_model
    frozen = sum(p.numel() for p in model.network.encoder[0].parameters())
    info = pixlab.load_model(folder).metadata["freeze"]
    assert info == {"trainable": info["total"] - frozen, "total": count_parameters(model.network)["total"],
                    "frozen_blocks": [0]}


def test_settings_from_model(source_model):
    folder, model, *_ = source_model
    cfg = pixlab.TrainConfig.from_model(folder)
    assert cfg == model.config and cfg.freeze_blocks == 1 and cfg.architecture == "tiny_unet"


@pytest.mark.slow
def test_init_from_starts_from_the_saved_weights(source_model):
    folder, model, img, labels, cfg = source_model
    before = _params(model)
    retrained = pixlab.train([(img, labels)], cfg.replace(learning_rate=1e-7, freeze_blocks="none"),
                             model.class_names, init_from=folder, progress=False)
    after = _params(retrained)
    assert retrained.metadata["weights_source"] == "init_from"
    assert max(float((after[k] - before[k]).abs().max()) for k in before) < 1e-4
    fresh = _params(pixlab.train([(img, labels)], cfg.replace(learning_rate=1e-7, seed=5), model.class_names,
                                 progress=False))
    assert max(float((fresh[k] - before[k]).abs().max()) for k in before) > 1e-2


def test_encoder_lr_scale_zero_keeps_encoder_of_init_model(source_model):
    folder, model, img, labels, cfg = source_model
    before = _params(model)
    retrained = pixlab.train([(img, labels)], cfg.replace(learning_rate=1e-2, freeze_blocks="none",
                                                          encoder_lr_scale=0.0),
                             model.class_names, init_from=folder, progress=False)
    after = _params(retrained)
    encoder = [k for k in before if k.startswith("encoder.")]
    decoder = [k for k in before if not k.startswith("encoder.")]
    assert all(torch.equal(after[k], before[k]) for k in encoder)
    assert max(float((after[k] - before[k]).abs().max()) for k in decoder) > 1e-4


def test_init_from_checks_classes_and_channels(source_model):
    folder, model, img, labels, cfg = source_model
    with pytest.raises(ValueError, match="init_from model has classes.*must match"):
        pixlab.train([(img, labels)], cfg, ["background", "cells"], init_from=folder, progress=False)
    three = np.concatenate([img.read(), img.read()[:1]])
    with pytest.raises(ValueError, match="init_from model has classes.*channels.*must match"):
        pixlab.train([(three, labels)], cfg, model.class_names, init_from=folder, progress=False)
