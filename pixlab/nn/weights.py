"""Pretrained encoder weights, offline: where they are looked for, how they are read and mapped.

ImageNet weights (smp's torch-hub files) or one of the histology ResNet-50 sets of
:data:`WEIGHT_SETS` are read from a file or a local cache (Hugging Face hub cache, torch hub
checkpoints); nothing is downloaded. See docs/encoders.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
import segmentation_models_pytorch as smp

import torch
from torch import nn

from pixlab.nn.registry import _encoder_key

__all__ = ["TORCH_HUB_FILES", "WeightSet", "WEIGHT_SETS", "ENCODER_WEIGHTS", "weight_locations", "map_encoder_state"]


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
