"""The network registry: architecture and encoder names -> constructors.

Plain dicts; an unknown name lists the valid ones. Architectures come from
segmentation_models_pytorch (smp), always built with ``encoder_weights=None`` (no network access:
weights are loaded by :mod:`pixlab.nn.weights`).
"""

from __future__ import annotations

import functools

import segmentation_models_pytorch as smp
from torch import nn

from pixlab.nn.tiny_unet import TinyUNet

__all__ = ["ARCHITECTURES", "ENCODERS"]


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
