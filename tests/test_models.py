import copy

import pytest
import segmentation_models_pytorch as smp
import torch
from safetensors.torch import save_file

from pixlab.nn.networks import (
    ARCHITECTURES,
    ENCODERS,
    TORCH_HUB_FILES,
    build_network,
    count_parameters,
    encoder_blocks,
    freeze,
    weight_locations,
)

HF_REPO = "models--smp-hub--resnet18.imagenet"
HF_REVISION = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]["revision"]


pytestmark = pytest.mark.usefixtures("offline_weights")  # conftest.py: empty caches, downloads fail


@pytest.fixture(scope="module")
def saved_state():
    """State dict of a randomly initialised 3-channel resnet18 encoder (stands in for ImageNet)."""
    torch.manual_seed(0)
    return smp.encoders.get_encoder("resnet18", in_channels=3, weights=None).state_dict()


@pytest.fixture
def safetensors_file(tmp_path, saved_state):
    path = tmp_path / "resnet18.safetensors"
    save_file(saved_state, str(path))
    return path


def _hf_snapshot(root, saved_state, revision=HF_REVISION):
    path = root / HF_REPO / "snapshots" / revision / "model.safetensors"
    path.parent.mkdir(parents=True)
    save_file(saved_state, str(path))
    return path


def _first_conv(network):
    return network.encoder.conv1.weight.detach()


# --- registry ------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_channels", [1, 3, 7])
@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_architecture_builds_and_runs_64px(architecture, in_channels):
    network = build_network(architecture, "resnet18", in_channels, n_classes=4).eval()
    with torch.no_grad():
        out = network(torch.randn(2, in_channels, 64, 64))
    assert out.shape == (2, 4, 64, 64)
    assert network.pixlab_info["architecture"] == architecture
    assert network.pixlab_info["in_channels"] == in_channels


def test_expected_architectures_present():
    expected = {"unet", "unetplusplus", "manet", "linknet", "fpn", "pspnet", "deeplabv3"}
    expected |= {"deeplabv3plus", "upernet", "segformer", "tiny_unet"}
    assert expected <= set(ARCHITECTURES)


def test_architecture_names_case_insensitive():
    network = build_network("UnetPlusPlus", "resnet18", 3, 2)
    assert isinstance(network, smp.UnetPlusPlus)


def test_unknown_architecture_lists_valid_names():
    with pytest.raises(ValueError, match="unknown architecture 'unet3d'") as error:
        build_network("unet3d", "resnet18", 3, 2)
    assert "tiny_unet" in str(error.value) and "deeplabv3plus" in str(error.value)


def test_unknown_encoder_lists_recommended_and_points_to_smp():
    with pytest.raises(ValueError, match="unknown encoder 'resnet19'") as error:
        build_network("unet", "resnet19", 3, 2)
    message = str(error.value)
    assert all(name in message for name in ENCODERS)
    assert "get_encoder_names" in message


def test_recommended_encoders_are_smp_encoders():
    assert set(ENCODERS) <= set(smp.encoders.get_encoder_names())


def test_any_smp_encoder_accepted():
    network = build_network("fpn", "mobilenet_v2", 2, 3).eval()
    with torch.no_grad():
        assert network(torch.zeros(1, 2, 64, 64)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_bad_channel_counts(bad):
    with pytest.raises(ValueError, match="in_channels"):
        build_network("unet", "resnet18", bad, 2)
    with pytest.raises(ValueError, match="n_classes"):
        build_network("unet", "resnet18", 3, bad)


def test_tiny_unet_trains():
    torch.manual_seed(0)
    network = build_network("tiny_unet", None, 2, 3)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    x, y = torch.randn(2, 2, 32, 32), torch.randint(0, 3, (2, 32, 32))
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(network(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert count_parameters(network)["total"] < 200_000


def test_tiny_unet_has_no_pretrained_weights():
    with pytest.raises(ValueError, match="tiny_unet"):
        build_network("tiny_unet", None, 3, 2, pretrained=True)


# --- pretrained weights --------------------------------------------------------------------------


def test_weights_path_three_channels_exact(safetensors_file, saved_state):
    network = build_network("unet", "resnet18", 3, 2, weights_path=safetensors_file)
    for key, value in network.encoder.state_dict().items():
        torch.testing.assert_close(value, saved_state[key], rtol=0, atol=0)
    assert network.pixlab_info["weights"] == str(safetensors_file)


def test_one_channel_sums_rgb(safetensors_file, saved_state):
    network = build_network("unet", "resnet18", 1, 2, weights_path=safetensors_file)
    expected = saved_state["conv1.weight"].sum(1, keepdim=True)
    torch.testing.assert_close(_first_conv(network), expected)
    assert network.encoder.layer1[0].conv1.weight.equal(saved_state["layer1.0.conv1.weight"])


@pytest.mark.parametrize("architecture", ["unet", "deeplabv3plus", "segformer"])
def test_seven_channels_follow_smp_rule(safetensors_file, saved_state, architecture):
    network = build_network(architecture, "resnet18", 7, 2, weights_path=safetensors_file)
    rgb = saved_state["conv1.weight"]
    expected = torch.stack([rgb[:, i % 3] for i in range(7)], dim=1) * (3 / 7)
    torch.testing.assert_close(_first_conv(network), expected)
    with torch.no_grad():
        assert network.eval()(torch.zeros(1, 7, 64, 64)).shape == (1, 2, 64, 64)


def test_hf_cache_from_environment(tmp_path, saved_state):
    cached = _hf_snapshot(tmp_path / "hf", saved_state)
    network = build_network("fpn", "resnet18", 3, 2, pretrained=True)
    assert network.pixlab_info["weights"] == str(cached)
    assert _first_conv(network).equal(saved_state["conv1.weight"])


def test_hf_cache_any_snapshot_folder(tmp_path, saved_state):
    # e.g. a snapshot copied by hand from another machine without the refs/ folder
    cached = _hf_snapshot(tmp_path / "hf", saved_state, revision="0123abcd")
    network = build_network("unet", "resnet18", 3, 2, pretrained=True)
    assert network.pixlab_info["weights"] == str(cached)


def test_cache_dirs_searched_first(tmp_path, saved_state):
    cached = _hf_snapshot(tmp_path / "project_cache", saved_state)
    network = build_network(
        "unet", "resnet18", 3, 2, pretrained=True, cache_dirs=[tmp_path / "project_cache"]
    )
    assert network.pixlab_info["weights"] == str(cached)
    assert weight_locations("resnet18", [tmp_path / "project_cache"])[0] == cached


def test_torch_hub_checkpoint_with_classifier_head(tmp_path, saved_state):
    # A torchvision ImageNet classifier checkpoint: encoder keys plus fc.weight / fc.bias.
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    state = dict(saved_state, **{"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)})
    torch.save(state, folder / TORCH_HUB_FILES["resnet18"][0])
    network = build_network("unet", "resnet18", 3, 2, pretrained=True)
    assert network.pixlab_info["weights"] == str(folder / "resnet18-f37072fd.pth")
    assert _first_conv(network).equal(saved_state["conv1.weight"])


def test_full_smp_model_state_dict_with_encoder_prefix(tmp_path, safetensors_file, saved_state):
    source = build_network("unet", "resnet18", 3, 2, weights_path=safetensors_file)
    path = tmp_path / "full_model.pt"
    torch.save(source.state_dict(), path)
    network = build_network("fpn", "resnet18", 3, 5, weights_path=path)
    assert _first_conv(network).equal(saved_state["conv1.weight"])


def test_mismatched_keys_reported(tmp_path, saved_state):
    state = dict(saved_state)
    del state["layer4.1.bn2.weight"]
    state["layer5.weight"] = torch.zeros(1)
    path = tmp_path / "broken.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError, match="missing") as error:
        build_network("unet", "resnet18", 3, 2, weights_path=path)
    assert "layer4.1.bn2.weight" in str(error.value) and "layer5.weight" in str(error.value)


def test_wrong_shape_reported(tmp_path, saved_state):
    state = dict(saved_state, **{"conv1.weight": torch.zeros(64, 7, 7, 7)})
    path = tmp_path / "seven_channels.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError, match="wrong shape.*conv1.weight"):
        build_network("unet", "resnet18", 3, 2, weights_path=path)


def test_missing_weights_name_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        build_network("unet", "resnet18", 3, 2, pretrained=True)
    message = str(error.value)
    assert "model.safetensors" in message and "smp-hub/resnet18.imagenet" in message
    assert str(tmp_path / "hf" / HF_REPO / "snapshots" / HF_REVISION) in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "weights_path" in message


def test_missing_explicit_weights_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.safetensors"):
        build_network("unet", "resnet18", 3, 2, weights_path=tmp_path / "nothere.safetensors")


class _CreatesFileWhenUnpickled:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickle_refused(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _CreatesFileWhenUnpickled(marker)}, path)
    with pytest.raises(ValueError, match="weights_only"):
        build_network("unet", "resnet18", 3, 2, weights_path=path)
    assert not marker.exists()


# --- freezing ------------------------------------------------------------------------------------


def _bn_layers(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def _trainable(module):
    return [p.requires_grad for p in module.parameters()]


def test_encoder_blocks_partition_encoder_parameters():
    for architecture, encoder, n_blocks in [
        ("unet", "resnet18", 5),
        ("tiny_unet", None, 3),
        ("unet", "efficientnet-b0", 3),
    ]:
        network = build_network(architecture, encoder, 3, 2)
        blocks = encoder_blocks(network)
        assert len(blocks) == n_blocks
        ids = [id(p) for block in blocks for module in block for p in module.parameters()]
        assert len(ids) == len(set(ids))
        assert set(ids) == {id(p) for p in network.encoder.parameters()}


def test_freeze_all_keeps_decoder_trainable_and_encoder_norms_in_eval():
    network = build_network("unet", "resnet18", 3, 2)
    result = freeze(network, "all")
    assert result["frozen_blocks"] == [0, 1, 2, 3, 4]
    assert not any(_trainable(network.encoder))
    assert all(_trainable(network.decoder)) and all(_trainable(network.segmentation_head))
    assert result["trainable"] == sum(p.numel() for p in network.parameters() if p.requires_grad)

    network.train()
    assert not any(bn.training for bn in _bn_layers(network.encoder))
    assert all(bn.training for bn in _bn_layers(network.decoder))
    before = network.encoder.bn1.running_mean.clone()
    network(torch.randn(2, 3, 64, 64))
    assert network.encoder.bn1.running_mean.equal(before)


def test_freeze_two_blocks_freezes_stem_and_layer1_only():
    network = build_network("unet", "resnet18", 3, 2)
    assert freeze(network, 2)["frozen_blocks"] == [0, 1]
    encoder = network.encoder
    for module in (encoder.conv1, encoder.bn1, encoder.layer1):
        assert not any(_trainable(module))
    for module in (encoder.layer2, encoder.layer3, encoder.layer4, network.decoder):
        assert all(_trainable(module))

    network.train()
    assert not encoder.bn1.training and not any(bn.training for bn in _bn_layers(encoder.layer1))
    assert all(bn.training for bn in _bn_layers(encoder.layer2))
    frozen_stats = encoder.layer1[0].bn1.running_mean.clone()
    trained_stats = encoder.layer2[0].bn1.running_mean.clone()
    network(torch.randn(2, 3, 64, 64))
    assert encoder.layer1[0].bn1.running_mean.equal(frozen_stats)
    assert not encoder.layer2[0].bn1.running_mean.equal(trained_stats)


def test_frozen_encoder_is_deterministic_in_eval_mode():
    # efficientnet's drop-connect must be off after .eval() even when the encoder is frozen
    network = build_network("unet", "efficientnet-b0", 3, 2)
    freeze(network, "all")
    network.eval()
    assert not any(module.training for module in network.modules())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert network(x).equal(network(x))


def test_frozen_norms_stay_in_eval_in_a_deep_copy():
    network = build_network("tiny_unet", None, 3, 2)
    freeze(network, 1)
    copied = copy.deepcopy(network).train()
    assert not any(bn.training for bn in _bn_layers(copied.encoder[0]))
    assert all(bn.training for bn in _bn_layers(copied.encoder[1]))


@pytest.mark.parametrize("architecture, encoder", [("unet", "resnet18"), ("tiny_unet", None)])
def test_trainable_count_decreases_with_more_frozen_blocks(architecture, encoder):
    network = build_network(architecture, encoder, 3, 2)
    counts = [freeze(network, n)["trainable"] for n in range(len(encoder_blocks(network)) + 1)]
    assert all(a > b for a, b in zip(counts, counts[1:]))
    assert counts[-1] == freeze(network, "all")["trainable"]


def test_freeze_none_undoes_previous_freezing():
    network = build_network("unet", "resnet18", 3, 2)
    total = count_parameters(network)["total"]
    freeze(network, "all")
    freeze(network, [1, 3])
    assert all(_trainable(network.encoder.layer2)) and not any(_trainable(network.encoder.layer3))
    result = freeze(network, "none")
    assert result == {"trainable": total, "total": total, "frozen_blocks": []}
    network.train()
    assert all(bn.training for bn in _bn_layers(network))


@pytest.mark.parametrize("blocks", [4, -1, [3], "some", True, 1.5])
def test_freeze_rejects_bad_blocks(blocks):
    network = build_network("tiny_unet", None, 3, 2)  # 3 blocks: valid ints are 0..3
    with pytest.raises(ValueError, match="blocks"):
        freeze(network, blocks)
