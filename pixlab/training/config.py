"""Training configuration: one dataclass that forms, profiles, presets, the CLI and papermill all produce.

Defaults are the "first training run" settings of the QuPath DL pixel-classifier best-practice guide
(UNet, resnet34, 50 epochs, batch 8, lr 1e-3, tile 512, pretrained, One Cycle, CE + Dice, early
stopping). ``recipe="auto"`` swaps in a CPU-quick recipe only when training runs on a CPU under a short
``time_limit_s``: there the number of optimizer steps matters more than capacity (see
docs/quality.md: a resnet34 UNet makes ~70 steps in 3 minutes on 2 cores and loses to a random forest).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pixlab.training.config_checks import check_config
from pixlab.training.recipes import AUTO, AUTO_FIELDS, STANDARD_CHOICES, format_resolution, quick_choices

__all__ = ["TrainConfig", "PRESETS", "preset", "CONFIG_VERSION", "AUTO", "AUTO_FIELDS", "format_resolution", "field_info", "advise", "IMAGE_TYPES"]

CONFIG_VERSION = 1


# Group names shown as sections by the hyperparameter form.
GROUPS = ("model", "training", "augmentation", "normalization", "advanced")


def _f(default, help: str, group: str, choices=None, min=None, max=None, **kw):
    """A dataclass field with the metadata the form, the CLI and validation read."""
    meta = {"help": help, "group": group, "choices": choices, "min": min, "max": max}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


HISTO_WEIGHTS = ("imagenet", "lunit-swav", "lunit-barlow", "kather100k", "tcga-brca-simclr")
ARCH_CHOICES = ("auto", "unet", "unetplusplus", "deeplabv3plus", "deeplabv3", "fpn", "linknet", "pspnet",
                "manet", "upernet", "segformer", "tiny_unet")


@dataclass
class TrainConfig:
    """Every knob of a training run, each with a default.

    Field metadata (``help``, ``group``, ``choices``, ``min``, ``max``) drives the form, the CLI and
    :meth:`validate`. See ``pixlab.training.config.field_info()``.
    """

    # --- model
    architecture: str = _f("auto", "Network architecture (segmentation-models-pytorch name, or tiny_unet for quick CPU runs); 'auto' = unet, or tiny_unet in the cpu_quick recipe unless an encoder is set.", "model", choices=ARCH_CHOICES)
    encoder: str = _f("auto", "Encoder backbone: resnet18/34/50, efficientnet-b0, or any smp encoder name; 'auto' = resnet34 (resnet18 in the cpu_quick recipe).", "model")
    pretrained: bool = _f(True, "Start the encoder from ImageNet (or histology) weights found offline; falls back to random init with a warning if none are found.", "model")
    encoder_weights: str = _f("imagenet", "Which pretrained weights: 'imagenet', or a histology set for H&E at ~20x ('lunit-swav', 'lunit-barlow', 'kather100k', 'tcga-brca-simclr'; resnet50 only).", "model", choices=HISTO_WEIGHTS)
    weights_path: str | None = _f(None, "Explicit pretrained encoder weight file (.safetensors, or a tensors-only .pth).", "model")
    freeze_blocks: Any = _f("none", "Encoder blocks to freeze: 'none', 'all', a number N (first N blocks) or a list of block indices.", "model")
    encoder_lr_scale: float = _f(1.0, "Learning-rate multiplier for the (unfrozen) encoder; < 1 fine-tunes it gently.", "model", min=0.0, max=1.0)
    # --- training
    epochs: int = _f(50, "Maximum number of epochs (early stopping usually ends sooner).", "training", min=1, max=100000)
    batch_size: int | str = _f("auto", "Tiles per optimizer step; 'auto' = 8.", "training", min=1, max=1024)
    learning_rate: float | str = _f("auto", "Peak learning rate; 'auto' = 1e-3 (3e-3 for tiny_unet in the cpu_quick recipe).", "training", min=1e-7, max=1.0)
    weight_decay: float = _f(1e-4, "AdamW weight decay.", "training", min=0.0, max=1.0)
    optimizer: str = _f("adamw", "Optimizer.", "training", choices=("adamw", "adam", "sgd"))
    scheduler: str = _f("auto", "Learning-rate schedule; 'auto' = one_cycle (none in the cpu_quick recipe).", "training", choices=("auto", "one_cycle", "cosine", "plateau", "none"))
    loss: str = _f("auto", "Loss on labelled pixels: cross-entropy, Dice, both, or focal; 'auto' = ce_dice (ce in the cpu_quick recipe: Dice lowered IoU on sparse strokes).", "training", choices=("auto", "ce", "dice", "ce_dice", "focal"))
    edge_weight: float | str = _f("auto", "Weight of an edge-aware smoothness loss on all pixels (neighbours share a class unless the image changes there), which places boundaries that no stroke touches on image edges; 0 = off; 'auto' = 3 for tiny_unet in the cpu_quick recipe, else 0.", "training", min=0.0, max=100.0)
    dice_weight: float = _f(0.5, "Weight of the Dice term in ce_dice.", "training", min=0.0, max=10.0)
    focal_gamma: float = _f(2.0, "Focusing parameter of the focal loss.", "training", min=0.0, max=10.0)
    class_weights: Any = _f(None, "Per-class loss weight multipliers: a list (one per class) or {class name: weight}; for unbalanced annotations.", "training")
    tile_size: int | str = _f("auto", "Tile (patch) size in pixels, a multiple of 32; 'auto' = 512 (128 in the cpu_quick recipe).", "training", min=32, max=8192)
    tile_overlap: float = _f(0.25, "Overlap between neighbouring tiles at inference, as a fraction of the tile (0 to 0.5).", "training", min=0.0, max=0.5)
    patches_per_epoch: int | None = _f(None, "Tiles sampled per epoch; default: enough to cover the labelled area (at least 4 batches).", "training", min=1, max=10**7)
    stroke_focus: float = _f(0.5, "Fraction of training tiles centred on a labelled pixel (so every class is seen); the rest are random.", "training", min=0.0, max=1.0)
    validation_split: float = _f(0.2, "Fraction of strokes (connected labelled regions) per class held out for validation.", "training", min=0.0, max=0.9)
    early_stopping: bool | str = _f("auto", "Stop when the monitored metric has not improved for `patience` epochs; 'auto' = true (false in the cpu_quick recipe, which uses its whole time budget).", "training")
    patience: int = _f(10, "Epochs without improvement before early stopping.", "training", min=1, max=10000)
    weight_average: str = _f("auto", "'auto' = 'ema' in the cpu_quick recipe, else 'none'; 'ema' keeps an exponential moving average of the weights and validates and saves that average (smooths the checkpoint-to-checkpoint swings of training from few strokes); 'none' uses the raw weights.", "training", choices=("auto", "none", "ema"))
    ema_decay: float | str = _f("auto", "Decay of the weight average per optimizer step (0.99 averages roughly the last 100 steps; early steps use less, see pixlab.training.loop); 'auto' = 0.995 in the cpu_quick recipe, else 0.99.", "training", min=0.5, max=0.99999)
    monitor: str = _f("val_loss", "Metric for early stopping and best-model selection.", "training", choices=("val_loss", "val_miou"))
    time_limit_s: float | None = _f(None, "Seconds for the whole call to train(), preparation included (random-forest pseudo-labels stop at 25 % of it); training stops there and the best model is kept (the final validation and quality check add a few seconds).", "training", min=1.0)
    # --- augmentation
    augment: bool = _f(True, "Master switch for augmentation.", "augmentation")
    flips: bool = _f(True, "Random horizontal/vertical flips.", "augmentation")
    rotate90: bool = _f(True, "Random 90-degree rotations.", "augmentation")
    color_jitter: bool = _f(False, "Random brightness/contrast changes (staining variation between slides).", "augmentation")
    elastic: bool = _f(False, "Elastic deformation (tissue distortion artefacts); slower.", "augmentation")
    # --- normalization
    normalization: str = _f("percentile_99", "Intensity normalization.", "normalization", choices=("percentile_99", "min_max", "z_score", "fixed_range"))
    per_channel: bool = _f(True, "Normalize each channel on its own (recommended for fluorescence).", "normalization")
    fixed_range: Any = _f(None, "[min, max] for fixed_range normalization, e.g. [0, 4095] for 12-bit.", "normalization")
    use_training_stats: bool = _f(True, "At inference, normalize with the training images' statistics (else each image's own).", "normalization")
    channels: Any = _f(None, "Channels to use (names or indices); None = all.", "normalization")
    downsample: float = _f(1.0, "Work at this downsample factor (2 = half resolution) for tissue-level features.", "normalization", min=1.0, max=64.0)
    # --- advanced
    recipe: str = _f("auto", "'standard' = the settings above; 'cpu_quick' = small UNet, 128 px tiles, pseudo-labels (for minutes on a CPU); 'auto' = cpu_quick only on a CPU with time_limit_s <= 900.", "advanced", choices=("auto", "standard", "cpu_quick"))
    pseudo_labels: bool | str = _f("auto", "Also learn from a random forest's confident predictions on unlabelled pixels (helps with few strokes); 'auto' = true in the cpu_quick recipe, else false.", "advanced")
    pseudo_threshold: float = _f(0.8, "Minimum random-forest probability for a pseudo-label.", "advanced", min=0.5, max=1.0)
    pseudo_margin: int | str = _f("auto", "Pixels within this distance of a change of the random forest's class get no pseudo-label (the forest errs at its boundaries; strokes do not label them either); 'auto' = 3 in the cpu_quick recipe, else 0.", "advanced", min=0, max=64)
    pseudo_agreement: bool | str = _f("auto", "Keep a pseudo-label only where a second random forest on the fine-scale features (sigmas up to 4 px) is confident of the same class (large-scale features put a confident halo around clustered objects); 'auto' = true in the cpu_quick recipe, else false.", "advanced")
    pseudo_weight: float = _f(0.3, "Loss weight of pseudo-labelled pixels.", "advanced", min=0.0, max=1.0)
    stroke_balance: bool = _f(False, "Average the cross-entropy on labelled pixels per class, so a class brushed with few pixels counts as much as a class brushed with many (class_weights still apply).", "advanced")
    pseudo_balance: bool = _f(True, "Average the pseudo-label loss per class, so the most frequent class (usually background) does not dominate it.", "advanced")
    seed: int = _f(0, "Random seed; the same seed on a CPU gives the same model.", "advanced", min=0)
    device: str = _f("auto", "'auto' (CUDA if available, else CPU), 'cpu', 'cuda' or 'cuda:N'.", "advanced")
    num_threads: int | None = _f(None, "CPU threads for PyTorch during training; default: all cores but one, which prepares the next batch (at least 1).", "advanced", min=1, max=1024)
    amp: bool = _f(True, "Mixed precision (used on CUDA only).", "advanced")
    checkpoint_every: int = _f(1, "Write the 'last' checkpoint every N epochs (when a checkpoint folder is given).", "advanced", min=1)
    version: int = _f(CONFIG_VERSION, "Config format version.", "advanced")

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> "TrainConfig":
        """Check every value; raise one ValueError naming the field, the value and what is allowed."""
        return check_config(self, CONFIG_VERSION)  # the rules: pixlab.training.config_checks

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Build from a dict; unknown keys raise a ValueError listing them and the valid names."""
        d = dict(d or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            import difflib
            hints = [f"{u!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(u, names, 1)) else repr(u) for u in unknown]
            raise ValueError(f"unknown TrainConfig field(s) {', '.join(hints)}; valid fields: {', '.join(sorted(names))}")
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some fields changed (validated)."""
        return self.from_dict({**self.to_dict(), **changes})

    def save(self, path) -> None:
        """Write as JSON or YAML (by suffix), atomically."""
        from pixlab._atomic import atomic_write
        path = Path(path)
        with atomic_write(path, "w") as f:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml
                yaml.safe_dump(self.to_dict(), f, sort_keys=False)
            else:
                json.dump(self.to_dict(), f, indent=2)

    @classmethod
    def load(cls, path) -> "TrainConfig":
        """Read a JSON or YAML profile written by :meth:`save` (or by hand)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file '{path}' not found")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml
                d = yaml.safe_load(text)
            else:
                d = json.loads(text)
        except Exception as e:  # parse errors of either library
            raise ValueError(f"cannot parse config file '{path}': {e}") from None
        if not isinstance(d, dict):
            raise ValueError(f"config file '{path}' must hold a mapping of field names to values")
        return cls.from_dict(d)

    @classmethod
    def from_model(cls, directory) -> "TrainConfig":
        """The configuration a saved model bundle was trained with ("load settings from model")."""
        from pixlab.model.folder import read_metadata  # the file format only: bundle itself imports TrainConfig
        d = dict(read_metadata(directory)["config"])
        # A weight file path is specific to the machine that trained the bundle; never follow it.
        d["weights_path"] = None
        return cls.from_dict(d)

    # ------------------------------------------------------------------ resolution
    def resolved_device(self) -> str:
        """The concrete torch device string for ``device='auto'``."""
        if self.device != "auto":
            return self.device
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"

    def resolved(self) -> "TrainConfig":
        """The configuration actually trained: every 'auto' value made concrete.

        ``recipe='auto'`` becomes 'cpu_quick' on a CPU with ``time_limit_s <= 900``, else 'standard'.
        Only fields the user left at 'auto' are chosen by the recipe; a value that was set (even one
        equal to a recipe value) is kept. :meth:`resolution` lists every choice with its reason.
        """
        return self._resolve()[0]

    def resolution(self) -> list[dict]:
        """Every automatic choice :meth:`resolved` makes, with its reason.

        Returns
        -------
        list of dict
            ``{"field", "value", "resolved", "reason"}`` per field that changes; ``value`` is what
            this config holds (usually 'auto'), ``resolved`` what is trained.

        Examples
        --------
        >>> [c["field"] for c in TrainConfig(device="cpu", time_limit_s=60, encoder="resnet18").resolution()][:3]
        ['recipe', 'architecture', 'tile_size']
        """
        return self._resolve()[1]

    def _resolve(self) -> tuple["TrainConfig", list[dict]]:
        changes: dict[str, Any] = {}
        notes: list[dict] = []

        def choose(name, value, reason):
            if getattr(self, name) != value:
                changes[name] = value
                notes.append({"field": name, "value": getattr(self, name), "resolved": value, "reason": reason})

        device = self.resolved_device()
        choose("device", device, "CUDA is available" if device.startswith("cuda") else "no CUDA GPU")
        recipe = self.recipe
        if recipe == AUTO:
            quick = device == "cpu" and self.time_limit_s is not None and self.time_limit_s <= 900
            recipe = "cpu_quick" if quick else "standard"
            choose("recipe", recipe, f"CPU with time_limit_s={self.time_limit_s:g} <= 900 s: in minutes on a CPU the "
                   "number of optimizer steps matters more than capacity" if quick else
                   ("a GPU" if device != "cpu" else "no time limit of 900 s or less") + ": the guide's settings")
        auto = {f: getattr(self, f) == AUTO for f in AUTO_FIELDS}
        if recipe == "cpu_quick":
            for name, value, reason in quick_choices(self, auto):
                choose(name, value, reason)
        else:
            for name in AUTO_FIELDS:
                if auto[name]:
                    choose(name, STANDARD_CHOICES[name], "the guide's first-run default")
        arch = changes.get("architecture", self.architecture)
        if arch == "tiny_unet":
            if self.encoder != "none":
                choose("encoder", "none", "tiny_unet has no encoder")
            if self.pretrained:
                choose("pretrained", False, "tiny_unet has no published weights")
        return self.replace(**changes), notes


def field_info() -> list[dict]:
    """Describe every TrainConfig field for generated forms and the CLI.

    Returns
    -------
    list of dict
        ``{"name", "type", "default", "help", "group", "choices", "min", "max"}`` per field.
    """
    out = []
    for f in fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out.append({"name": f.name, "type": f.type, "default": default, **f.metadata})
    return out


# Presets follow the guide's tables. Values not named keep the defaults (the guide's first run).
# transfer_small = "very small dataset (<200 tiles)" row; transfer_medium = "200-1000 tiles" row
# (freeze the first 2 blocks) with the first-run epochs/batch/lr; transfer_large = "large dataset
# (>10000 tiles)" row. Freezing counts pixlab.nn.networks.encoder_blocks (ResNet: stem, layer1..layer4).
PRESETS: dict[str, dict[str, Any]] = {
    "first_run": {},
    "transfer_small": {"pretrained": True, "encoder": "efficientnet-b0", "freeze_blocks": "all", "augment": True,
                       "epochs": 200, "batch_size": 4, "learning_rate": 1e-3},
    "transfer_medium": {"pretrained": True, "encoder": "resnet34", "freeze_blocks": 2,
                        "epochs": 50, "batch_size": 8, "learning_rate": 1e-3},
    "transfer_large": {"pretrained": True, "encoder": "resnet50", "freeze_blocks": "none",
                       "epochs": 50, "batch_size": 16, "learning_rate": 5e-4},
    "very_small_dataset": {"encoder": "efficientnet-b0", "freeze_blocks": "all", "augment": True, "epochs": 200, "batch_size": 4},
    "large_dataset": {"encoder": "resnet50", "freeze_blocks": "none", "epochs": 50, "batch_size": 16, "learning_rate": 5e-4},
    "cpu_quick": {"recipe": "cpu_quick", "time_limit_s": 180},
}


def preset(name: str, **overrides) -> TrainConfig:
    """A TrainConfig from a named preset (see ``PRESETS``), with optional overrides."""
    key = name.lower().replace("-", "_").replace(" ", "_")
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return TrainConfig.from_dict({**PRESETS[key], **overrides})


IMAGE_TYPES = ("he", "fluorescence", "multiplex", "spectral", "brightfield", "other")


def advise(image_type: str, n_tiles: int, vram_gb: float | None = None, n_channels: int | None = None,
           magnification: float | None = 20.0, base: TrainConfig | None = None) -> tuple[TrainConfig, list[str]]:
    """Recommend a TrainConfig from the guide's tables, with the reason for each change.

    The three tables of the guide are applied in order, each able to override the previous one:
    backbone by image type, then dataset size (freezing, epochs, batch), then GPU memory (encoder
    and tile size at batch 8).

    Parameters
    ----------
    image_type : {"he", "fluorescence", "multiplex", "spectral", "brightfield", "other"}
        "he" = H&E brightfield; "multiplex" = multiplex IF (4+ channels). Aliases: "H&E", "IF",
        "mIF", "hyperspectral".
    n_tiles : int
        Number of labelled training tiles (at the chosen tile size).
    vram_gb : float, optional
        GPU memory; None = no GPU (CPU training).
    n_channels : int, optional
        Input channels (default 3 for H&E/brightfield, 1 for fluorescence, 4 for multiplex).
    magnification : float, optional
        Objective magnification of H&E images (histology encoders were trained at ~20x); None =
        unknown.
    base : TrainConfig, optional
        Settings to start from (default: the guide's first-run defaults).

    Returns
    -------
    (TrainConfig, list of str)
        The recommended configuration and one sentence per decision.

    Examples
    --------
    >>> cfg, why = advise("fluorescence", n_tiles=150, vram_gb=8, n_channels=2)
    >>> cfg.encoder, cfg.freeze_blocks
    ('resnet34', 'all')
    """
    t = str(image_type).lower().replace("&", "").replace("-", "").replace(" ", "")
    t = {"hande": "he", "h_e": "he", "if": "fluorescence", "mif": "multiplex", "hyperspectral": "spectral"}.get(t, t)
    if t not in IMAGE_TYPES:
        raise ValueError(f"image_type={image_type!r} is not known; choose one of {', '.join(IMAGE_TYPES)}")
    from numbers import Integral, Real
    if isinstance(n_tiles, bool) or not isinstance(n_tiles, Integral) or n_tiles < 0:
        raise ValueError(f"n_tiles={n_tiles!r} must be a whole number >= 0 (labelled training tiles)")
    if vram_gb is not None and (isinstance(vram_gb, bool) or not isinstance(vram_gb, Real) or not vram_gb > 0):
        raise ValueError(f"vram_gb={vram_gb!r} must be a positive number of GB, or None for CPU training")
    if n_channels is None:
        n_channels = {"he": 3, "brightfield": 3, "fluorescence": 1, "multiplex": 4}.get(t, 3)
    if isinstance(n_channels, bool) or not isinstance(n_channels, Integral) or n_channels < 1:
        raise ValueError(f"n_channels={n_channels!r} must be a whole number >= 1 (image channels used)")
    ch: dict[str, Any] = {}
    why: list[str] = []
    histo = False
    # --- Backbone by image type
    near_20x = magnification is not None and abs(magnification - 20) <= 5
    if t == "he" and n_channels == 3 and near_20x:
        ch.update(encoder="resnet50", encoder_weights="lunit-swav", pretrained=True)
        why.append("H&E at ~20x: a histology-pretrained ResNet-50 (Lunit SwAV) was trained on this exact domain.")
        histo = True
    elif t == "he" and n_channels != 3:
        ch.update(encoder="resnet34", encoder_weights="imagenet")
        why.append(f"H&E with {n_channels} channels: histology weights expect 3 RGB channels, so ImageNet resnet34 is used.")
    elif t == "he":
        ch.update(encoder="resnet34", encoder_weights="imagenet")
        mag = "unknown magnification" if magnification is None else f"{magnification:g}x"
        why.append(f"H&E at {mag}: histology backbones were trained at 20x; ImageNet resnet34 is the safe fallback "
                   "(try encoder='resnet50' with encoder_weights='lunit-swav' too).")
    elif t in ("fluorescence", "multiplex", "spectral"):
        ch.update(encoder="resnet34", encoder_weights="imagenet", per_channel=True)
        why.append("Fluorescence/multi-channel: ImageNet edge and texture features transfer; H&E colour features do not. "
                   "Per-channel normalization because channels have different intensity ranges.")
        if n_channels >= 4:
            why.append(f"{n_channels} channels: the first conv layer is adapted to {n_channels} inputs from the ImageNet weights.")
        if n_channels >= 7:
            why.append("7+ channels need more data: plan for at least 500-1000 tiles, and select only relevant channels.")
    else:
        ch.update(encoder="resnet34", encoder_weights="imagenet")
        why.append(f"{t}: ImageNet resnet34 is the general-purpose starting point.")
    # --- Dataset size -> freezing (and capacity)
    if n_tiles < 200:
        ch.update(freeze_blocks="all", epochs=200, batch_size=4, augment=True)
        if not histo:
            ch["encoder"] = "efficientnet-b0" if t not in ("fluorescence", "multiplex", "spectral") else "resnet34"
        why.append(f"{n_tiles} tiles (<200): freeze the whole encoder ({ch['encoder']}), augment, 200 epochs at batch 4 "
                   "(very small dataset).")
    elif n_tiles < 1000:
        ch.update(freeze_blocks=2)
        why.append(f"{n_tiles} tiles (200-1000): freeze the first 2 encoder blocks.")
    elif n_tiles < 5000:
        ch.update(freeze_blocks=1)
        why.append(f"{n_tiles} tiles (1000-5000): freeze the first encoder block.")
    else:
        ch.update(freeze_blocks="none", encoder="resnet50")
        why.append(f"{n_tiles} tiles (>5000): unfreeze the encoder; resnet50 has the capacity to use them.")
        if n_tiles > 10000:
            ch.update(epochs=50, batch_size=16, learning_rate=5e-4)
            why.append(">10000 tiles: batch 16 and lr 5e-4 (large dataset).")
    # --- Compute resources (the guide's table is at batch 8)
    if vram_gb is None:
        why.append("No GPU: on a CPU keep time_limit_s short; with time_limit_s <= 900 pixlab switches to its CPU-quick recipe.")
    elif vram_gb < 6:
        ch.update(encoder="efficientnet-b0", tile_size=256, encoder_weights="imagenet")
        why.append(f"{vram_gb:g} GB GPU memory: efficientnet-b0 with 256 px tiles fits at batch 8.")
    elif vram_gb < 12:
        if ch.get("encoder") == "resnet50":
            ch["encoder"] = "resnet34"
            ch["encoder_weights"] = "imagenet"
        ch["tile_size"] = 512
        why.append(f"{vram_gb:g} GB GPU memory: {ch['encoder']} (at most resnet34) with 512 px tiles at batch 8.")
    elif vram_gb < 24:
        ch["tile_size"] = 512
        why.append(f"{vram_gb:g} GB GPU memory: resnet50 fits with 512 px tiles.")
    else:
        ch["tile_size"] = 1024 if n_tiles >= 1000 else 512
        why.append(f"{vram_gb:g} GB GPU memory: tiles up to 1024 px fit at batch 8.")
    if vram_gb is not None and vram_gb < 12 and ch.get("batch_size", 8) > 8:
        ch["batch_size"] = 8
        why.append(f"{vram_gb:g} GB GPU memory: batch 8 instead of 16 (the memory table is at batch 8).")
    if ch.get("encoder") != "resnet50" and ch.get("encoder_weights", "imagenet") != "imagenet":
        ch["encoder_weights"] = "imagenet"  # histology weight sets exist for resnet50 only
    base_d = (base or TrainConfig()).to_dict()
    return TrainConfig.from_dict({**base_d, **ch}), why
