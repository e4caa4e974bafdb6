"""Network registry, offline pretrained weights and encoder freezing.

Every network maps a (B, C, H, W) float tensor to (B, K, H, W) class logits, for H and W divisible
by 32. Architectures come from segmentation_models_pytorch (smp), always built with
``encoder_weights=None``: smp >= 0.5 would otherwise download weights from the Hugging Face hub, and
pixlab must work offline. Pretrained weights (ImageNet, or one of the histology ResNet-50 sets of
:data:`WEIGHT_SETS`) are instead read from a file or a local cache (see :func:`build_network` and
docs/encoders.md), then the first convolution is adapted to the number of image channels with smp's
own ``set_in_channels`` (RGB weights summed for 1 channel, ``weight[:, i % 3] * 3 / N`` for N
channels).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "ENCODERS",
    "ENCODER_WEIGHTS",
    "TORCH_HUB_FILES",
    "TinyUNet",
    "WEIGHT_SETS",
    "WeightSet",
    "build_network",
    "count_parameters",
    "encoder_blocks",
    "freeze",
    "map_encoder_state",
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


@dataclass(frozen=True)
class WeightSet:
    """A named set of pretrained encoder weights and the files it is published as.

    Attributes
    ----------
    name : str
        The ``encoder_weights`` name, e.g. ``"lunit-swav"``.
    encoder : str
        The only smp encoder these weights fit.
    hf_files : tuple of (repo_id, filename)
        Files in the Hugging Face hub cache (``hf download REPO`` or ``timm.create_model("hf-hub:REPO",
        pretrained=True)`` puts them there), searched in order.
    hub_files : tuple of str
        File names searched in the torch-hub checkpoints folder (where
        ``torch.hub.load_state_dict_from_url`` saves the original releases).
    rgb_only : bool
        Trained on 3-channel H&E images only; refused for other channel counts.
    description : str
        Training data and method, for messages and documentation.
    """

    name: str
    encoder: str
    hf_files: tuple
    hub_files: tuple
    rgb_only: bool
    description: str


#: Histology-pretrained ResNet-50 weights (the guide's "histology backbones"), by
#: ``TrainConfig.encoder_weights`` name. All four have torchvision/timm ResNet-50 key names (the
#: same as smp's resnet50 encoder), except TIAToolbox's Kather100K file, whose ``feat_extract.N``
#: keys are mapped by :func:`map_encoder_state`. See docs/encoders.md.
WEIGHT_SETS = {
    "lunit-swav": WeightSet(
        "lunit-swav", "resnet50",
        hf_files=(("1aurent/resnet50.lunit_swav", "model.safetensors"),),
        hub_files=("swav_rn50_ep200.torch",),
        rgb_only=True,
        description="Lunit benchmark-ssl-pathology, SwAV on 19M TCGA H&E patches at ~20x",
    ),
    "lunit-barlow": WeightSet(
        "lunit-barlow", "resnet50",
        hf_files=(("1aurent/resnet50.lunit_bt", "model.safetensors"),),
        hub_files=("bt_rn50_ep200.torch",),
        rgb_only=True,
        description="Lunit benchmark-ssl-pathology, Barlow Twins on 19M TCGA H&E patches at ~20x",
    ),
    "kather100k": WeightSet(
        "kather100k", "resnet50",
        hf_files=(
            ("1aurent/resnet50.tiatoolbox-kather100k", "model.safetensors"),
            ("TIACentre/TIAToolbox_pretrained_weights", "resnet50-kather100k.pth"),
        ),
        hub_files=("resnet50-kather100k.pth",),
        rgb_only=True,
        description="TIAToolbox, supervised on Kather100K colorectal H&E patches at 20x (0.5 um/px)",
    ),
    "tcga-brca-simclr": WeightSet(
        "tcga-brca-simclr", "resnet50",
        hf_files=(("1aurent/resnet50.tcga_brca_simclr", "model.safetensors"),),
        hub_files=("resnet50_tcga_brca_simclr.pt",),
        rgb_only=True,
        description="Chen & Krishnan (Self-Supervised-ViT-Path), SimCLR on TCGA-BRCA H&E at ~20x",
    ),
}

#: Every ``encoder_weights`` name: ImageNet (any encoder) and the histology sets.
ENCODER_WEIGHTS = ["imagenet", *WEIGHT_SETS]

_HF_FILE = "model.safetensors"
# .torch is the suffix of Lunit's releases; all but .safetensors are read with weights_only=True.
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".torch")
# Classifier heads that smp encoders delete; checkpoints of a whole classifier carry them
# (torchvision/timm "fc.", TIAToolbox "classifier.", efficientnet "_fc.", pretrainedmodels "last_linear.").
_CLASSIFIER_PREFIXES = ("fc.", "_fc.", "last_linear.", "classifier.")
# TIAToolbox's CNNModel keeps a torchvision ResNet as nn.Sequential(*children[:-2]) named
# "feat_extract": child 0 conv1, 1 bn1, (2 relu, 3 maxpool: no weights), 4..7 layer1..layer4.
_TIATOOLBOX_RESNET = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


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


def _weights_key(weights: str) -> str:
    key = str(weights).lower()
    if key not in ENCODER_WEIGHTS:
        raise ValueError(f"unknown encoder weights {weights!r}; choose one of {ENCODER_WEIGHTS}.")
    return key


def _hub_settings(encoder: str) -> dict | None:
    """smp's Hugging Face settings {repo_id, revision} for the encoder's ImageNet weights."""
    settings = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {})
    if not settings:
        return None
    return settings.get("imagenet") or next(iter(settings.values()))


def _sources(encoder: str, weights: str) -> tuple[list[tuple[str, str, str | None]], list[str]]:
    """([(HF repo_id, filename, pinned revision or None)], [torch-hub checkpoint file names])."""
    if weights == "imagenet":
        settings = _hub_settings(encoder)
        hf = [(settings["repo_id"], _HF_FILE, settings["revision"])] if settings else []
        return hf, list(TORCH_HUB_FILES.get(encoder, []))
    weight_set = WEIGHT_SETS[weights]
    return [(repo, name, None) for repo, name in weight_set.hf_files], list(weight_set.hub_files)


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


def _hf_snapshot_file(root: Path, repo_id: str, filename: str, revision: str | None) -> Path:
    # Unpinned repositories: "main" is the folder to create by hand; any snapshot folder is read.
    return root / _hf_repo_folder(repo_id) / "snapshots" / (revision or "main") / filename


def weight_locations(encoder: str, cache_dirs=None, weights: str = "imagenet") -> list[Path]:
    """Files that :func:`build_network` would read pretrained encoder weights from, in order.

    Parameters
    ----------
    encoder : str
        smp encoder name, e.g. ``"resnet34"``.
    cache_dirs : sequence of path-like, optional
        Extra folders searched before the standard caches; each is searched both as a Hugging Face
        hub cache and as a folder holding torch-hub checkpoint files.
    weights : str
        A name of :data:`ENCODER_WEIGHTS`: ``"imagenet"`` or a histology set of :data:`WEIGHT_SETS`.

    Returns
    -------
    list of pathlib.Path
        Candidate paths (they need not exist). For the Hugging Face caches the path is the one
        ``hf_hub_download`` would create: for ImageNet smp's pinned revision,
        ``<cache>/models--smp-hub--<encoder>.imagenet/snapshots/<revision>/model.safetensors``;
        for histology sets ``.../snapshots/main/<file>``. Any other snapshot folder of the same
        repository is accepted too.
    """
    encoder, weights = _encoder_key(encoder), _weights_key(weights)
    hf_roots, hub_folders = _search_folders(cache_dirs)
    hf, hub = _sources(encoder, weights)
    locations = [_hf_snapshot_file(root, *entry) for entry in hf for root in hf_roots]
    locations += [folder / name for name in hub for folder in hub_folders]
    return locations


def _find_cached_weights(encoder: str, cache_dirs, weights: str = "imagenet") -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    hf_roots, hub_folders = _search_folders(cache_dirs)
    hf, hub = _sources(encoder, weights)
    # Filesystem look-ups only, never a network call. Pinned revision first, then whatever "main"
    # points to, then any snapshot folder (e.g. copied by hand without refs/).
    for root in hf_roots:
        for repo_id, filename, pinned in hf:
            for revision in ([pinned] if pinned else []) + [None]:
                found = try_to_load_from_cache(repo_id, filename, cache_dir=root, revision=revision)
                if isinstance(found, str):
                    return Path(found)
            snapshots = sorted((root / _hf_repo_folder(repo_id)).glob(f"snapshots/*/{filename}"))
            if snapshots:
                return snapshots[0]
    for name in hub:
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
    # Training checkpoints wrap the weights (Lightning: "state_dict", others: "model").
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict):
        raise ValueError(
            f"weights file {str(path)!r} does not hold a state dict (got {type(state).__name__})."
        )
    return {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}


def _best_prefix(keys, expected: set[str]) -> str:
    """The key prefix (``""`` or ending in ".") under which most of the ``expected`` names occur."""
    counts: dict[str, int] = {}
    for key in keys:
        cut = -1
        while True:  # every split point: "a.b.c" -> "", "a.", "a.b."
            if key[cut + 1 :] in expected:
                counts[key[: cut + 1]] = counts.get(key[: cut + 1], 0) + 1
            cut = key.find(".", cut + 1)
            if cut < 0:
                break
    if not counts:
        return ""
    return max(counts, key=lambda prefix: (counts[prefix], -len(prefix)))


def map_encoder_state(state: dict, encoder: nn.Module) -> dict:
    """Map a published checkpoint's state dict onto an smp encoder's parameter names.

    The checkpoint layouts recognised are: the encoder itself (smp, torchvision, timm: ResNet keys
    ``conv1.*``, ``bn1.*``, ``layer1..4.*``); the same under one prefix such as ``encoder.`` (a
    whole smp model), ``module.`` (DataParallel), ``model.`` / ``backbone.`` (Lightning and
    self-supervised training wrappers), whose other keys (decoder, projection head) are dropped;
    TIAToolbox's ``feat_extract.N.*`` ResNet layout; and classifier heads (``fc.``,
    ``classifier.``, ...) are dropped. Nothing else is forgiven: the result is checked strictly by
    :func:`build_network` (every encoder tensor present, nothing extra, same shapes).

    Parameters
    ----------
    state : dict of str to torch.Tensor
        The checkpoint's tensors.
    encoder : torch.nn.Module
        The smp encoder (``network.encoder``) the weights are meant for, at 3 input channels.

    Returns
    -------
    dict of str to torch.Tensor
        Tensors keyed by the encoder's names (still to be checked against ``encoder.state_dict()``).

    Examples
    --------
    >>> enc = smp.encoders.get_encoder("resnet18", weights=None)
    >>> published = {"module." + k: v for k, v in enc.state_dict().items()}
    >>> sorted(map_encoder_state(published, enc)) == sorted(enc.state_dict())
    True
    """
    expected = set(encoder.state_dict())
    if "conv1.weight" in expected:
        state = _rename_tiatoolbox(state)
    prefix = _best_prefix(state, expected)
    state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return {
        key: value
        for key, value in state.items()
        if key in expected or not key.startswith(_CLASSIFIER_PREFIXES)
    }


def _rename_tiatoolbox(state: dict) -> dict:
    """``[prefix.]feat_extract.N.rest`` (TIAToolbox ResNet) -> ``[prefix.]<torchvision name>.rest``."""
    renamed = {}
    for key, value in state.items():
        head, found, rest = key.partition("feat_extract.")
        if found and (not head or head.endswith(".")):
            index, _, leaf = rest.partition(".")
            if index in _TIATOOLBOX_RESNET:
                key = f"{head}{_TIATOOLBOX_RESNET[index]}.{leaf}"
        renamed[key] = value
    return renamed


def _load_encoder_weights(encoder: nn.Module, path: Path, encoder_name: str, weights: str) -> None:
    state = map_encoder_state(_read_state_dict(path), encoder)
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
            f"{'; '.join(problems)}; pass the {weights} weights of {encoder_name!r}."
        )
    encoder.load_state_dict(state)


def _check_weight_set(weights: str, encoder: str, in_channels: int) -> None:
    """Refuse histology weights for another encoder or for images that are not RGB."""
    weight_set = WEIGHT_SETS.get(weights)
    if weight_set is None:
        return
    if encoder != weight_set.encoder:
        raise ValueError(
            f"encoder weights {weights!r} exist only for encoder {weight_set.encoder!r}, got "
            f"encoder {encoder!r}; use encoder={weight_set.encoder!r} or weights='imagenet'."
        )
    if weight_set.rgb_only and in_channels != 3:
        # Refused rather than adapted: smp could spread the RGB filters over N channels, but these
        # filters respond to H&E colours (eosin pink, haematoxylin blue), which carry no meaning
        # for fluorescence or other channel combinations (the guide: use ImageNet weights there).
        raise ValueError(
            f"encoder weights {weights!r} were trained on 3-channel H&E (RGB) images but the "
            f"network has {in_channels} input channel(s), where their H&E colour filters mean "
            "nothing; use weights='imagenet' (TrainConfig.encoder_weights='imagenet'), as the "
            "guide advises for fluorescence and multi-channel images, or select the 3 RGB channels."
        )


def build_network(
    architecture: str,
    encoder: str | None,
    in_channels: int,
    n_classes: int,
    pretrained: bool = False,
    weights_path=None,
    cache_dirs=None,
    weights: str = "imagenet",
) -> nn.Module:
    """Build a segmentation network, optionally with offline pretrained encoder weights.

    Parameters
    ----------
    architecture : str
        Key of :data:`ARCHITECTURES` (case-insensitive), e.g. ``"unet"`` or ``"tiny_unet"``.
    encoder : str or None
        smp encoder name, e.g. ``"resnet34"`` (see :data:`ENCODERS`); ignored by ``"tiny_unet"``.
    in_channels : int
        Number of image channels. With ImageNet weights the 3-channel first convolution is
        adapted by smp's ``set_in_channels``; histology weights require 3 channels.
    n_classes : int
        Number of output channels.
    pretrained : bool
        Load pretrained encoder weights (the set named by ``weights``). Never downloads: the
        weights come from ``weights_path`` or, when it is None, from the first existing file of
        :func:`weight_locations` (Hugging Face cache ``$HF_HUB_CACHE`` or
        ``~/.cache/huggingface/hub``, then ``$TORCH_HOME/hub/checkpoints``).
    weights_path : path-like, optional
        Explicit encoder weights: ``.safetensors``, or ``.pth`` / ``.pt`` / ``.torch`` read with
        ``torch.load(weights_only=True)``, in any layout :func:`map_encoder_state` recognises.
        Implies ``pretrained=True``.
    cache_dirs : sequence of path-like, optional
        Extra folders searched before the standard caches (see :func:`weight_locations`).
    weights : str
        Which pretrained weights (:data:`ENCODER_WEIGHTS`): ``"imagenet"`` (any encoder with
        published ImageNet weights) or a histology set of :data:`WEIGHT_SETS` (``"lunit-swav"``,
        ``"lunit-barlow"``, ``"kather100k"``, ``"tcga-brca-simclr"``: resnet50, 3 channels).

    Returns
    -------
    torch.nn.Module
        The network, with ``network.pixlab_info`` = ``{"architecture", "encoder", "in_channels",
        "n_classes", "weights", "weight_set"}``; ``weights`` is the file the encoder weights came
        from (or None) and ``weight_set`` their name (or None).

    Raises
    ------
    ValueError
        Unknown architecture, encoder or weights name; bad channel counts; histology weights for
        another encoder or a non-RGB input; a weights file that does not match.
    FileNotFoundError
        Pretrained weights requested but not found offline; the message names where to put them.

    Examples
    --------
    >>> net = build_network("tiny_unet", None, in_channels=2, n_classes=3)
    >>> tuple(net(torch.zeros(1, 2, 32, 32)).shape)
    (1, 3, 32, 32)
    """
    key = _architecture_key(architecture)
    weights = _weights_key(weights)
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
        network.pixlab_info = _info(key, None, in_channels, n_classes, None, None)
        return network

    encoder = _encoder_key(encoder)
    if not pretrained:
        network = ARCHITECTURES[key](encoder, in_channels, n_classes)
        network.pixlab_info = _info(key, encoder, in_channels, n_classes, None, None)
        return network

    _check_weight_set(weights, encoder, in_channels)
    if weights_path is not None:
        source = Path(weights_path)
    else:
        source = _find_cached_weights(encoder, cache_dirs, weights)
        if source is None:
            raise FileNotFoundError(_missing_weights_message(encoder, cache_dirs, weights))
    # Load into the encoder as published (3 channels), then let smp adapt the first convolution.
    network = ARCHITECTURES[key](encoder, 3, n_classes)
    _load_encoder_weights(network.encoder, source, encoder, weights)
    network.encoder.set_in_channels(in_channels, pretrained=True)
    network.pixlab_info = _info(key, encoder, in_channels, n_classes, str(source), weights)
    return network


def _info(architecture, encoder, in_channels, n_classes, weights, weight_set) -> dict:
    return {
        "architecture": architecture,
        "encoder": encoder,
        "in_channels": int(in_channels),
        "n_classes": int(n_classes),
        "weights": weights,
        "weight_set": weight_set,
    }


def _missing_weights_message(encoder: str, cache_dirs, weights: str = "imagenet") -> str:
    hf, hub = _sources(encoder, weights)
    fixes = [
        f"put {filename!r} from {repo_id} at "
        f"{_hf_snapshot_file(_hf_cache_dir(), repo_id, filename, revision)}"
        for repo_id, filename, revision in hf
    ]
    # ImageNet: the current torchvision file name is enough; histology: each release's own name.
    shown = hub[:1] if weights == "imagenet" else hub
    fixes += [f"put {name!r} at {_torch_hub_checkpoints() / name}" for name in shown]
    fixes.append("pass weights_path=... (a .safetensors or .pth state dict of the encoder)")
    what = f"pretrained weights for encoder {encoder!r}" if weights == "imagenet" else (
        f"pretrained weights {weights!r} ({WEIGHT_SETS[weights].description}) for encoder {encoder!r}"
    )
    searched = ", ".join(str(path) for path in weight_locations(encoder, cache_dirs, weights))
    return (
        f"{what} not found offline; "
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
