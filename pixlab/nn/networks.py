"""Network registry, offline pretrained weights and encoder freezing.

Every network maps a (B, C, H, W) float tensor to (B, K, H, W) class logits, for H and W divisible
by 32. Architectures come from segmentation_models_pytorch (smp), always built with
``encoder_weights=None``: smp >= 0.5 would otherwise download weights from the Hugging Face hub, and
pixlab must work offline. Pretrained weights (ImageNet, or one of the histology ResNet-50 sets of
:data:`WEIGHT_SETS`) are instead read from a file or a local cache (see :func:`build_network` and
docs/encoders.md), then the first convolution is adapted to the number of image channels with smp's
own ``set_in_channels`` (RGB weights summed for 1 channel, ``weight[:, i % 3] * 3 / N`` for N
channels).

This module builds networks (:func:`build_network`) and re-exports the names of its parts so that
``from pixlab.nn.networks import freeze`` keeps working: :mod:`~pixlab.nn.registry`,
:mod:`~pixlab.nn.tiny_unet`, :mod:`~pixlab.nn.weights`, :mod:`~pixlab.nn.freezing`.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from pixlab.nn.freezing import count_parameters, encoder_blocks, freeze  # noqa: F401
from pixlab.nn.registry import ARCHITECTURES, ENCODERS, _architecture_key, _encoder_key
from pixlab.nn.tiny_unet import TinyUNet  # noqa: F401
from pixlab.nn.weights import (ENCODER_WEIGHTS, TORCH_HUB_FILES, WEIGHT_SETS, WeightSet,  # noqa: F401
                               _check_weight_set, _find_cached_weights, _load_encoder_weights,
                               _missing_weights_message, _weights_key, map_encoder_state, weight_locations)

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
    >>> import torch
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
