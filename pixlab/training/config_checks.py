"""TrainConfig's value rules: each field checked against its metadata, then the rules between fields.

Kept apart from the dataclass (:mod:`pixlab.training.config`) so the list of fields reads on one
screen. Every failure is one ``ValueError`` naming the field, the value received and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import fields

from pixlab.training.recipes import AUTO, AUTO_FIELDS

__all__ = ["check_config"]


def check_config(cfg, newest_version: int):
    """Check (and normalise in place: lower-case choices, 'auto', lists) every value of ``cfg``.

    Parameters
    ----------
    cfg : TrainConfig
        The configuration; its field metadata (``choices``, ``min``, ``max``) gives the rules.
    newest_version : int
        The newest config format version this pixlab reads.

    Returns
    -------
    TrainConfig
        ``cfg`` itself.

    Raises
    ------
    ValueError
        Naming the field, the value and what is allowed.
    """
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        m = f.metadata
        if v is None:
            continue
        if isinstance(v, str) and v.lower() == AUTO and f.name in AUTO_FIELDS:
            setattr(cfg, f.name, AUTO)
            continue
        if f.name in AUTO_FIELDS and isinstance(f.default, str) and "bool" in str(f.type) and not isinstance(v, bool):
            raise ValueError(f"TrainConfig.{f.name}={v!r} must be true, false or 'auto'")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"TrainConfig.{f.name}={v!r} must be a finite number")
        if m.get("choices") is not None:
            if not isinstance(v, str) or v.lower() not in m["choices"]:
                raise ValueError(f"TrainConfig.{f.name}={v!r} is not valid; choose one of {', '.join(m['choices'])}")
            setattr(cfg, f.name, v.lower())
        if isinstance(f.default, bool) and not isinstance(v, bool):
            raise ValueError(f"TrainConfig.{f.name}={v!r} must be true or false")
        if m.get("min") is not None or m.get("max") is not None:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                auto = " or 'auto'" if f.name in AUTO_FIELDS else ""
                raise ValueError(f"TrainConfig.{f.name}={v!r} must be a number{auto}")
            if f.type.startswith("int") and float(v) != int(v):
                raise ValueError(f"TrainConfig.{f.name}={v!r} must be a whole number")
            if m.get("min") is not None and v < m["min"]:
                raise ValueError(f"TrainConfig.{f.name}={v!r} is below the minimum {m['min']}")
            if m.get("max") is not None and v > m["max"]:
                raise ValueError(f"TrainConfig.{f.name}={v!r} is above the maximum {m['max']}")
    if cfg.encoder == "none" and cfg.architecture not in (AUTO, "tiny_unet"):
        raise ValueError(f"TrainConfig.encoder='none' but architecture={cfg.architecture!r} needs an encoder; "
                         "set encoder='auto' (resnet34) or a name such as 'resnet18'")
    if cfg.encoder not in (AUTO, "none"):
        from pixlab.nn.networks import _encoder_key
        try:
            _encoder_key(cfg.encoder)
        except ValueError as e:  # the message lists the recommended and valid names
            raise ValueError(f"TrainConfig.encoder={cfg.encoder!r}: {e}") from None
    if cfg.tile_size != AUTO:
        from pixlab.nn.tile_size import check_tile_size
        cfg.tile_size = check_tile_size(cfg.tile_size, "TrainConfig.tile_size")  # the rule prediction uses too
    if cfg.normalization == "fixed_range":
        fr = cfg.fixed_range
        if fr is None or len(fr) != 2 or not float(fr[0]) < float(fr[1]):
            raise ValueError(f"TrainConfig.fixed_range={fr!r} must be [min, max] with min < max when normalization is 'fixed_range', e.g. [0, 4095]")
    fb = cfg.freeze_blocks
    if not (fb in ("none", "all") or (isinstance(fb, int) and not isinstance(fb, bool) and fb >= 0)
            or (isinstance(fb, (list, tuple)) and all(isinstance(i, int) for i in fb))):
        raise ValueError(f"TrainConfig.freeze_blocks={fb!r} must be 'none', 'all', a number of blocks or a list of block indices")
    if isinstance(fb, tuple):
        cfg.freeze_blocks = list(fb)
    # Histology weight sets are ResNet-50 checkpoints (pixlab.nn.networks.WEIGHT_SETS); only checked
    # when they would be loaded, so a form can change the encoder and the weights one at a time.
    if (cfg.encoder_weights != "imagenet" and cfg.pretrained and cfg.architecture != "tiny_unet"
            and cfg.encoder != AUTO and str(cfg.encoder).lower() != "resnet50"):
        raise ValueError(f"TrainConfig.encoder_weights={cfg.encoder_weights!r} are ResNet-50 weights but encoder={cfg.encoder!r}; set encoder='resnet50' or encoder_weights='imagenet'")
    cw = cfg.class_weights
    if cw is not None and not isinstance(cw, (list, tuple, dict)):
        raise ValueError(f"TrainConfig.class_weights={cw!r} must be a list (one weight per class) or a dict {{class name: weight}}")
    if cw is not None:
        vals = cw.values() if isinstance(cw, dict) else cw
        if any((not isinstance(w, (int, float))) or w < 0 for w in vals):
            raise ValueError(f"TrainConfig.class_weights={cw!r} must hold non-negative numbers")
    if not (cfg.device == "auto" or cfg.device == "cpu" or cfg.device.startswith("cuda") or cfg.device == "mps"):
        raise ValueError(f"TrainConfig.device={cfg.device!r} is not valid; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if cfg.version > newest_version:
        raise ValueError(f"TrainConfig version {cfg.version} was written by a newer pixlab (this one reads up to {newest_version}); upgrade pixlab")
    return cfg

