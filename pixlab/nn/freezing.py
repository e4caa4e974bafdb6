"""Freezing encoder blocks for transfer learning, and parameter counts.

Frozen blocks keep their normalisation layers in eval mode (as smp's ``freeze_encoder`` does):
otherwise BatchNorm running statistics drift on the new data although the weights are frozen.
"""

from __future__ import annotations

import functools
import segmentation_models_pytorch as smp

from torch import nn

from pixlab.nn.tiny_unet import TinyUNet

__all__ = ["count_parameters", "encoder_blocks", "freeze"]


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
