"""Network registry, offline pretrained weights and encoder freezing.

Every network maps a (B, C, H, W) float tensor to (B, K, H, W) class logits, for H and W divisible
by 32. Architectures come from segmentation_models_pytorch (smp), always built with
``encoder_weights=None``: smp >= 0.5 would otherwise download weights from the Hugging Face hub, and
pixlab must work offline. Pretrained ImageNet weights are instead read from a file or a local cache
(see :func:`build_network`), then the first convolution is adapted to the number of image channels
with smp's own ``set_in_channels`` (RGB weights summed for 1 channel, ``weight[:, i % 3] * 3 / N``
for N channels).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "ENCODERS",
    "TORCH_HUB_FILES",
    "TinyUNet",
    "build_network",
    "count_parameters",
    "encoder_blocks",
    "freeze",
    "weight_locations",
]


class TinyUNet(nn.Module):
    """Small 3-level UNet (16-32-64 channels) for training on a CPU.

    Written here rather than taken from smp because on 2 CPU cores it does ~12x more optimizer
    steps than smp ``Unet(resnet18)`` in the same time (measured: ~850 vs ~70 steps in 180 s), which
    matters more than depth for sparse-annotation pixel classification on a laptop.

    Parameters
    ----------
    in_channels : int
        Number of image channels.
    n_classes : int
        Number of output channels (class logits).
    widths : tuple of int
        Channels at full, 1/2 and 1/4 resolution. Inputs must be divisible by 4.
    """

    def __init__(
        self, in_channels: int, n_classes: int, widths: tuple[int, int, int] = (16, 32, 64)
    ):
        super().__init__()
        w1, w2, w3 = widths
        # One entry per resolution level: these are the blocks that freeze() can freeze.
        self.encoder = nn.ModuleList(
            [_double_conv(in_channels, w1), _double_conv(w1, w2), _double_conv(w2, w3)]
        )
        self.pool = nn.MaxPool2d(2)
        self.up2 = nn.ConvTranspose2d(w3, w2, kernel_size=2, stride=2)
        self.decode2 = _double_conv(2 * w2, w2)
        self.up1 = nn.ConvTranspose2d(w2, w1, kernel_size=2, stride=2)
        self.decode1 = _double_conv(2 * w1, w1)
        self.head = nn.Conv2d(w1, n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return (B, n_classes, H, W) logits for a (B, in_channels, H, W) input."""
        f1 = self.encoder[0](x)
        f2 = self.encoder[1](self.pool(f1))
        f3 = self.encoder[2](self.pool(f2))
        y = self.decode2(torch.cat([self.up2(f3), f2], dim=1))
        y = self.decode1(torch.cat([self.up1(y), f1], dim=1))
        return self.head(y)


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _smp(model_class, encoder: str, in_channels: int, n_classes: int) -> nn.Module:
    return model_class(
        encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=n_classes
    )


def _tiny_unet(encoder: str | None, in_channels: int, n_classes: int) -> nn.Module:
    return TinyUNet(in_channels, n_classes)


#: Architecture name -> ``constructor(encoder, in_channels, n_classes)`` with random weights.
#: smp's PAN is left out: its pyramid attention pools the stride-32 features three more times, so
#: tiles under 128 px fail. smp's DPT is left out: it only accepts ViT ("tu-...") encoders.
ARCHITECTURES = {
    "unet": functools.partial(_smp, smp.Unet),
    "unetplusplus": functools.partial(_smp, smp.UnetPlusPlus),
    "manet": functools.partial(_smp, smp.MAnet),
    "linknet": functools.partial(_smp, smp.Linknet),
    "fpn": functools.partial(_smp, smp.FPN),
    "pspnet": functools.partial(_smp, smp.PSPNet),
    "deeplabv3": functools.partial(_smp, smp.DeepLabV3),
    "deeplabv3plus": functools.partial(_smp, smp.DeepLabV3Plus),
    "upernet": functools.partial(_smp, smp.UPerNet),
    "segformer": functools.partial(_smp, smp.Segformer),
    "tiny_unet": _tiny_unet,
}

#: Recommended encoders; any name in ``smp.encoders.get_encoder_names()`` (or smp's
#: "tu-<timm model>") is accepted too.
ENCODERS = ["resnet18", "resnet34", "resnet50", "efficientnet-b0"]

#: Encoder -> file names of its ImageNet weights in the torch-hub checkpoints folder: the current
#: torchvision IMAGENET1K_V1 file, then the older torchvision / smp < 0.5 name of the same weights.
#: efficientnet-b0 is lukemelas' EfficientNet-PyTorch release, which smp < 0.5 downloaded.
TORCH_HUB_FILES = {
    "resnet18": ["resnet18-f37072fd.pth", "resnet18-5c106cde.pth"],
    "resnet34": ["resnet34-b627a593.pth", "resnet34-333f7ec4.pth"],
    "resnet50": ["resnet50-0676ba61.pth", "resnet50-19c8e357.pth"],
    "resnet101": ["resnet101-63fe2227.pth", "resnet101-5d3b4d8f.pth"],
    "resnet152": ["resnet152-394f9c45.pth", "resnet152-b121ed2d.pth"],
    "efficientnet-b0": ["efficientnet-b0-355c32eb.pth"],
}

_HF_FILE = "model.safetensors"
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")
# ImageNet classifier heads that smp encoders delete; checkpoints of the full classifier carry them.
_CLASSIFIER_PREFIXES = ("fc.", "_fc.", "last_linear.", "classifier.")


def _architecture_key(architecture: str) -> str:
    key = str(architecture).lower()
    if key not in ARCHITECTURES:
        raise ValueError(
            f"unknown architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}."
        )
    return key


def _encoder_key(encoder: str) -> str:
    key = str(encoder).lower()
    if key in smp.encoders.get_encoder_names():
        return key
    if key.startswith("tu-"):
        import timm

        if timm.is_model(key[3:]):
            return key
    raise ValueError(
        f"unknown encoder {encoder!r}; recommended: {ENCODERS}, or any name in "
        "segmentation_models_pytorch.encoders.get_encoder_names() or 'tu-<timm model name>'."
    )


def _hub_settings(encoder: str) -> dict | None:
    """smp's Hugging Face settings {repo_id, revision} for the encoder's ImageNet weights."""
    settings = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {})
    if not settings:
        return None
    return settings.get("imagenet") or next(iter(settings.values()))


def _hf_cache_dir() -> Path:
    # Read the environment at call time (huggingface_hub.constants is frozen at import).
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "huggingface"
    )
    return Path(hf_home) / "hub"


def _torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _search_folders(cache_dirs) -> tuple[list[Path], list[Path]]:
    """(Hugging Face cache roots, torch-hub checkpoint folders), extra folders first."""
    extra = [Path(d) for d in (cache_dirs or [])]
    return [*extra, _hf_cache_dir()], [*extra, _torch_hub_checkpoints()]


def _hf_repo_folder(repo_id: str) -> str:
    return "models--" + repo_id.replace("/", "--")


def weight_locations(encoder: str, cache_dirs=None) -> list[Path]:
    """Files that :func:`build_network` would read pretrained encoder weights from, in order.

    Parameters
    ----------
    encoder : str
        smp encoder name, e.g. ``"resnet34"``.
    cache_dirs : sequence of path-like, optional
        Extra folders searched before the standard caches; each is searched both as a Hugging Face
        hub cache and as a folder holding torch-hub checkpoint files.

    Returns
    -------
    list of pathlib.Path
        Candidate paths (they need not exist). For the Hugging Face caches the path is the one
        ``hf_hub_download`` would create for smp's pinned revision,
        ``<cache>/models--smp-hub--<encoder>.imagenet/snapshots/<revision>/model.safetensors``;
        any other snapshot folder of that repository is accepted too.
    """
    encoder = _encoder_key(encoder)
    hf_roots, hub_folders = _search_folders(cache_dirs)
    locations = []
    settings = _hub_settings(encoder)
    if settings:
        snapshot = Path(_hf_repo_folder(settings["repo_id"]), "snapshots", settings["revision"])
        locations += [root / snapshot / _HF_FILE for root in hf_roots]
    for name in TORCH_HUB_FILES.get(encoder, []):
        locations += [folder / name for folder in hub_folders]
    return locations


def _find_cached_weights(encoder: str, cache_dirs) -> Path | None:
    hf_roots, hub_folders = _search_folders(cache_dirs)
    settings = _hub_settings(encoder)
    if settings:
        from huggingface_hub import try_to_load_from_cache

        # Filesystem look-ups only, never a network call. Pinned revision first, then whatever
        # "main" points to, then any snapshot folder (e.g. copied by hand without refs/).
        for root in hf_roots:
            for revision in (settings["revision"], None):
                found = try_to_load_from_cache(
                    settings["repo_id"], _HF_FILE, cache_dir=root, revision=revision
                )
                if isinstance(found, str):
                    return Path(found)
            repo = root / _hf_repo_folder(settings["repo_id"])
            snapshots = sorted(repo.glob(f"snapshots/*/{_HF_FILE}"))
            if snapshots:
                return snapshots[0]
    for name in TORCH_HUB_FILES.get(encoder, []):
        for folder in hub_folders:
            if (folder / name).is_file():
                return folder / name
    return None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} is not a file; check weights_path.")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if suffix not in _WEIGHT_SUFFIXES:
        raise ValueError(
            f"weights file {str(path)!r} has suffix {suffix!r}; "
            f"use one of {list(_WEIGHT_SUFFIXES)}."
        )
    try:
        # weights_only: a .pth is a pickle, and a full unpickle can run arbitrary code.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"weights file {str(path)!r} is not a plain tensor state dict "
            f"({error.__class__.__name__}); pixlab only loads safetensors files or state dicts "
            "that torch.load(weights_only=True) accepts."
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # training checkpoints wrap the weights
    if not isinstance(state, dict):
        raise ValueError(
            f"weights file {str(path)!r} does not hold a state dict (got {type(state).__name__})."
        )
    return state


def _encoder_state(state: dict, encoder: nn.Module) -> dict:
    """Strip an ``encoder.`` prefix (full smp model) and classifier-head keys (torchvision)."""
    prefix = "encoder."
    if any(key.startswith(prefix) for key in state):
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    expected = encoder.state_dict()
    return {
        key: value
        for key, value in state.items()
        if key in expected or not key.startswith(_CLASSIFIER_PREFIXES)
    }


def _load_encoder_weights(encoder: nn.Module, path: Path, encoder_name: str) -> None:
    state = _encoder_state(_read_state_dict(path), encoder)
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{key} {tuple(state[key].shape)} (expected {tuple(expected[key].shape)})"
        for key in set(state) & set(expected)
        if state[key].shape != expected[key].shape
    )
    if missing or unexpected or wrong_shape:
        groups = (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
        problems = [
            f"{label} ({len(keys)}): {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
            for label, keys in groups
            if keys
        ]
        raise ValueError(
            f"weights file {str(path)!r} does not match the 3-channel {encoder_name!r} encoder: "
            f"{'; '.join(problems)}; pass the ImageNet weights of {encoder_name!r}."
        )
    encoder.load_state_dict(state)


def build_network(
    architecture: str,
    encoder: str | None,
    in_channels: int,
    n_classes: int,
    pretrained: bool = False,
    weights_path=None,
    cache_dirs=None,
) -> nn.Module:
    """Build a segmentation network, optionally with offline ImageNet encoder weights.

    Parameters
    ----------
    architecture : str
        Key of :data:`ARCHITECTURES` (case-insensitive), e.g. ``"unet"`` or ``"tiny_unet"``.
    encoder : str or None
        smp encoder name, e.g. ``"resnet34"`` (see :data:`ENCODERS`); ignored by ``"tiny_unet"``.
    in_channels : int
        Number of image channels. With pretrained weights the 3-channel first convolution is
        adapted by smp's ``set_in_channels``.
    n_classes : int
        Number of output channels.
    pretrained : bool
        Load ImageNet encoder weights. Never downloads: the weights come from ``weights_path`` or,
        when it is None, from the first existing file of :func:`weight_locations` (Hugging Face
        cache ``$HF_HUB_CACHE`` or ``~/.cache/huggingface/hub``, then
        ``$TORCH_HOME/hub/checkpoints``).
    weights_path : path-like, optional
        Explicit encoder weights: ``.safetensors``, or ``.pth`` / ``.pt`` read with
        ``torch.load(weights_only=True)``. Keys may be those of the encoder, of a full smp model
        (``encoder.`` prefix) or of a torchvision classifier (``fc.*`` is dropped). Implies
        ``pretrained=True``.
    cache_dirs : sequence of path-like, optional
        Extra folders searched before the standard caches (see :func:`weight_locations`).

    Returns
    -------
    torch.nn.Module
        The network, with ``network.pixlab_info`` = ``{"architecture", "encoder", "in_channels",
        "n_classes", "weights"}``; ``weights`` is the file the encoder weights came from, or None.

    Raises
    ------
    ValueError
        Unknown architecture or encoder, bad channel counts, or a weights file that does not match.
    FileNotFoundError
        Pretrained weights requested but not found offline; the message names where to put them.

    Examples
    --------
    >>> net = build_network("tiny_unet", None, in_channels=2, n_classes=3)
    >>> tuple(net(torch.zeros(1, 2, 32, 32)).shape)
    (1, 3, 32, 32)
    """
    key = _architecture_key(architecture)
    for name, value in (("in_channels", in_channels), ("n_classes", n_classes)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    pretrained = pretrained or weights_path is not None
    if key == "tiny_unet":
        if pretrained:
            raise ValueError(
                "architecture 'tiny_unet' has no pretrained weights; pass pretrained=False."
            )
        network = ARCHITECTURES[key](None, in_channels, n_classes)
        network.pixlab_info = _info(key, None, in_channels, n_classes, None)
        return network

    encoder = _encoder_key(encoder)
    if not pretrained:
        network = ARCHITECTURES[key](encoder, in_channels, n_classes)
        network.pixlab_info = _info(key, encoder, in_channels, n_classes, None)
        return network

    if weights_path is not None:
        source = Path(weights_path)
    else:
        source = _find_cached_weights(encoder, cache_dirs)
        if source is None:
            raise FileNotFoundError(_missing_weights_message(encoder, cache_dirs))
    # Load into the encoder as published (3 channels), then let smp adapt the first convolution.
    network = ARCHITECTURES[key](encoder, 3, n_classes)
    _load_encoder_weights(network.encoder, source, encoder)
    network.encoder.set_in_channels(in_channels, pretrained=True)
    network.pixlab_info = _info(key, encoder, in_channels, n_classes, str(source))
    return network


def _info(architecture, encoder, in_channels, n_classes, weights) -> dict:
    return {
        "architecture": architecture,
        "encoder": encoder,
        "in_channels": int(in_channels),
        "n_classes": int(n_classes),
        "weights": weights,
    }


def _missing_weights_message(encoder: str, cache_dirs) -> str:
    settings = _hub_settings(encoder)
    hub_files = TORCH_HUB_FILES.get(encoder, [])
    fixes = []
    if settings:
        snapshot = Path(_hf_repo_folder(settings["repo_id"]), "snapshots", settings["revision"])
        fixes.append(
            f"put {_HF_FILE!r} from {settings['repo_id']} at "
            f"{_hf_cache_dir() / snapshot / _HF_FILE}"
        )
    if hub_files:
        fixes.append(f"put {hub_files[0]!r} at {_torch_hub_checkpoints() / hub_files[0]}")
    fixes.append("pass weights_path=... (a .safetensors or .pth state dict of the encoder)")
    searched = ", ".join(str(path) for path in weight_locations(encoder, cache_dirs))
    return (
        f"pretrained weights for encoder {encoder!r} not found offline; "
        + ", or ".join(fixes)
        + (f" (searched: {searched})." if searched else ".")
    )


def count_parameters(network: nn.Module) -> dict:
    """Count parameters.

    Parameters
    ----------
    network : torch.nn.Module

    Returns
    -------
    dict
        ``{"trainable": int, "total": int}`` (trainable = ``requires_grad``).
    """
    params = list(network.parameters())
    return {
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "total": sum(p.numel() for p in params),
    }


def encoder_blocks(network: nn.Module) -> list[list[nn.Module]]:
    """The encoder's stages, from the input side, as the units :func:`freeze` works on.

    Parameters
    ----------
    network : torch.nn.Module
        A network from :func:`build_network`.

    Returns
    -------
    list of list of torch.nn.Module
        ResNet encoders: ``[conv1, bn1], [layer1], [layer2], [layer3], [layer4]``.
        ``tiny_unet``: its three encoder levels. Other smp encoders: everything before the
        stride-16 stage, then the stride-16 and stride-32 stages of smp's ``get_stages()``;
        encoders without ``get_stages()``: the whole encoder as one block.
    """
    encoder = network.encoder
    if isinstance(network, TinyUNet):
        return [[level] for level in encoder]
    if isinstance(encoder, smp.encoders.resnet.ResNetEncoder):
        layers = [encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4]
        return [[encoder.conv1, encoder.bn1], *([layer] for layer in layers)]
    try:
        stages = encoder.get_stages()
    except (AttributeError, NotImplementedError):
        return [[encoder]]
    late = [list(modules) for _, modules in sorted(stages.items())]
    late_params = {id(p) for modules in late for module in modules for p in module.parameters()}
    return [_modules_outside(encoder, late_params), *late]


def _modules_outside(module: nn.Module, excluded: set[int]) -> list[nn.Module]:
    """Largest sub-modules of ``module`` holding parameters, none of which is in ``excluded``."""
    found = []
    for child in module.children():
        ids = {id(p) for p in child.parameters()}
        if ids and not ids & excluded:
            found.append(child)
        elif ids:
            found.extend(_modules_outside(child, excluded))
    return found


def _stay_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    # Replaces train() on a frozen norm layer: its running statistics must not drift while the rest
    # of the network trains (the same reason smp's freeze_encoder keeps norm layers in eval mode).
    module.training = False
    return module


def _norm_layers(modules):
    for module in modules:
        for sub in module.modules():
            if isinstance(sub, nn.modules.batchnorm._NormBase):
                yield sub


def freeze(network: nn.Module, blocks="none") -> dict:
    """Freeze encoder stages (no gradient, norm layers kept in eval mode).

    Each call replaces the previous freezing; the decoder always stays trainable.

    Parameters
    ----------
    network : torch.nn.Module
        A network from :func:`build_network`.
    blocks : "none", "all", int or list of int
        ``"none"``: train everything. ``"all"``: freeze the whole encoder. ``N``: freeze the
        first N stages of :func:`encoder_blocks`. A list: freeze those stage indices.

    Returns
    -------
    dict
        ``{"trainable": int, "total": int, "frozen_blocks": list[int]}``.
    """
    stages = encoder_blocks(network)
    frozen = _frozen_indices(blocks, len(stages))

    # Undo any previous freezing first (ours, or smp's freeze_encoder called directly), so calls
    # do not accumulate.
    if isinstance(network, smp.base.SegmentationModel) and network._is_encoder_frozen:
        network.unfreeze_encoder()
    for parameter in network.encoder.parameters():
        parameter.requires_grad = True
    for norm in _norm_layers([network.encoder]):
        norm.__dict__.pop("train", None)
        norm.train(network.training)

    # Same idea as smp's freeze_encoder (no gradients, norm statistics fixed), but per stage and
    # without its mechanism: smp 0.6 makes model.train(mode) skip the frozen encoder entirely, so
    # model.eval() leaves it in training mode and efficientnet's drop-connect (or a transformer's
    # dropout) then makes inference random. Here only the frozen norm layers ignore train().
    chosen = [module for index in frozen for module in stages[index]]
    for module in chosen:
        for parameter in module.parameters():
            parameter.requires_grad = False
    for norm in _norm_layers(chosen):
        norm.train = functools.partial(_stay_in_eval, norm)
        norm.eval()
    return {**count_parameters(network), "frozen_blocks": frozen}


def _frozen_indices(blocks, n_stages: int) -> list[int]:
    if isinstance(blocks, str) and blocks.lower() in ("none", "all"):
        return [] if blocks.lower() == "none" else list(range(n_stages))
    if isinstance(blocks, int) and not isinstance(blocks, bool):
        if 0 <= blocks <= n_stages:
            return list(range(blocks))
    elif isinstance(blocks, (list, tuple)) and all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n_stages for i in blocks
    ):
        return sorted(set(blocks))
    raise ValueError(
        f"blocks must be 'none', 'all', an int in [0, {n_stages}] or a list of stage indices in "
        f"[0, {n_stages - 1}], got {blocks!r}."
    )
