"""What the recipes choose for the TrainConfig fields left at 'auto' (see ``TrainConfig.resolved``).

``standard`` is the guide's first training run; ``cpu_quick`` is the recipe measured for minutes of
training on a CPU (docs/quality.md, bench/sparse_strokes.py, bench/quality). Each choice carries its
reason, which training prints.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AUTO", "AUTO_FIELDS", "STANDARD_CHOICES", "quick_choices", "format_resolution"]

AUTO = "auto"
#: Fields whose default is "auto": the recipe chooses them (TrainConfig.resolved); a value the user
#: sets is kept as it is, whatever it is (an explicit 512 is never replaced, even if 512 is the default).
AUTO_FIELDS = ("architecture", "encoder", "tile_size", "batch_size", "learning_rate", "scheduler", "loss",
               "early_stopping", "weight_average", "ema_decay", "pseudo_labels", "pseudo_margin", "pseudo_agreement",
               "edge_weight")

#: What 'auto' becomes in the standard recipe: the guide's first training run.
STANDARD_CHOICES: dict[str, Any] = dict(
    architecture="unet", encoder="resnet34", tile_size=512, batch_size=8, learning_rate=1e-3,
    scheduler="one_cycle", loss="ce_dice", early_stopping=True, weight_average="none", ema_decay=0.99,
    pseudo_labels=False, pseudo_margin=0, pseudo_agreement=False, edge_weight=0.0)


def quick_choices(cfg, auto: dict) -> list[tuple[str, Any, str]]:
    """The cpu_quick recipe's values for the fields left at 'auto', with the reason for each."""
    out = []
    if auto["architecture"]:
        if auto["encoder"] or cfg.encoder == "none":
            out.append(("architecture", "tiny_unet", "a 3-level UNet makes ~10x the optimizer steps of a "
                        "resnet UNet in the same time (docs/quality.md)"))
        else:
            out.append(("architecture", "unet", f"encoder={cfg.encoder!r} was set: a UNet on that encoder"))
    tiny = (out[0][1] if out else cfg.architecture) == "tiny_unet"
    if auto["encoder"] and not tiny:
        out.append(("encoder", "resnet18", "the smallest ResNet: more steps in the time limit"))
    if auto["tile_size"]:
        out.append(("tile_size", 128, "128 px crops centred on strokes: more steps in the time limit"))
    if auto["batch_size"]:
        if tiny:
            out.append(("batch_size", 4, "about twice the optimizer steps of batch 8 in the same time; over six "
                        "kinds of image no stroke draw below the forest, and fewer bad short runs (docs/quality.md)"))
        else:
            out.append(("batch_size", 8, "the guide's batch size"))
    if auto["learning_rate"]:
        out.append(("learning_rate", 3e-3 if tiny else 1e-3,
                    "measured for tiny_unet (bench/quality)" if tiny else "the guide's rate for encoder networks"))
    if auto["scheduler"]:
        out.append(("scheduler", "none", "a constant rate: the run ends at the time limit, not at a planned epoch"))
    if auto["loss"]:
        out.append(("loss", "ce", "on sparse strokes Dice lowered the IoU (docs/quality.md)"))
    if auto["early_stopping"]:
        out.append(("early_stopping", False, "the few held-out strokes saturate within a minute; the whole "
                    "time budget is used"))
    if auto["weight_average"]:
        out.append(("weight_average", "ema", "the average of the weights swings less than the weights"))
    if auto["ema_decay"]:
        out.append(("ema_decay", 0.995, "averages ~200 steps (beat ~100 in bench/sparse_strokes.py)"))
    if auto["pseudo_labels"]:
        out.append(("pseudo_labels", True, "the random forest's confident pixels add signal between strokes"))
    if auto["pseudo_margin"]:
        out.append(("pseudo_margin", 3, "the forest's confident pixels next to its own boundaries are often wrong "
                    "(bench/quality/steps.py)"))
    if auto["pseudo_agreement"]:
        out.append(("pseudo_agreement", True, "only pixels a fine-scale forest labels the same: about half the "
                    "wrong pseudo-labels (docs/quality.md)"))
    if auto["edge_weight"]:
        if tiny:
            out.append(("edge_weight", 3.0, "strokes keep away from boundaries; an edge-aware smoothness term "
                        "puts them on image edges (docs/quality.md)"))
        else:  # measured: a resnet18 UNet's ~80 steps in 180 s went from 0.651 to 0.457 IoU on a draw
            out.append(("edge_weight", 0.0, "the edge-aware term was measured to help tiny_unet only; an encoder "
                        "network's few steps in the time limit did worse with it (docs/quality.md)"))
    if cfg.patches_per_epoch is None:
        out.append(("patches_per_epoch", 128, "longer epochs: validating after every 4 tiny steps cost a third "
                    "of the time"))
    return out


def format_resolution(notes: list[dict]) -> str:
    """The lines that training prints for :meth:`TrainConfig.resolution`."""
    return "\n".join(f"  {n['field']}: {n['value']!r} -> {n['resolved']!r} ({n['reason']})" for n in notes)
