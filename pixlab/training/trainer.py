"""Training a pixel classifier from sparse labels (brush strokes): :func:`train`.

Design (see docs/quality.md): the loss only sees labelled pixels; tiles are sampled around labelled
pixels so every class is seen each epoch; a fraction of strokes per class is held out to choose the
best epoch; optional random-forest pseudo-labels add signal on unlabelled pixels. Batches are prepared
in a background thread so that data loading overlaps the optimizer step.

The parts live in their own modules: data preparation (:mod:`~pixlab.training.samples`), tiles
(:mod:`~pixlab.training.sampling`), augmentation, losses, the epoch loop (:mod:`~pixlab.training.loop`)
and checkpoints; this module builds a run from a :class:`~pixlab.TrainConfig` and returns the Model.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import threading
import time
import warnings
from typing import Callable, Iterable, Sequence

import numpy as np

from pixlab.training.augmentation import build_augmentation, collate
from pixlab.training.distributed import dist_info
from pixlab.training.loop import Run, run_epochs
from pixlab.training.preparation import Preparation, TrainingCancelled
from pixlab.training.losses import class_weight_tensor, miou_from_confusion, sparse_loss
from pixlab.training.samples import (IN_MEMORY_PIXELS, Sample, add_pseudo_labels, build_samples, downsample_labels,
                                     fingerprint, intensity_stats, prepare_samples, split_strokes)
from pixlab.training.sampling import Prefetcher, TileSampler
from pixlab.training.seeding import cpu_threads, seeded

__all__ = ["train", "prepare_samples", "Sample", "split_strokes", "TrainingCancelled"]

# Names other modules and benches imported from here before the split.
_downsample_labels, _fingerprint, _collate, _Prefetcher = downsample_labels, fingerprint, collate, Prefetcher


def _make_optimizer(net, cfg, params_groups):
    import torch
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params_groups, lr=cfg.learning_rate, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params_groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params_groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def _make_scheduler(opt, cfg, steps_per_epoch):
    import torch
    if cfg.scheduler == "one_cycle":
        max_lr = [g["lr"] for g in opt.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=cfg.epochs * steps_per_epoch)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(1, cfg.patience // 3))
    return None


def _default_threads(cfg) -> int:
    """OpenMP threads for CPU training when ``cfg.num_threads`` is not set.

    Standard recipe: leave a core to the batch-preparing thread; on 2 cores, two busy-waiting OpenMP
    threads plus the loader thread (256 px tiles, v2 augmentation) ran 6x fewer steps than one OpenMP
    thread (bench/train_step.py). cpu_quick: its 128 px batches take ~2 ms to prepare, so the loader
    is idle almost all the time; all cores ran 1.8x more steps than cores-1 (112 vs 62 steps in 30 s
    on 2 idle cores, bench/sparse_strokes.py setting).
    """
    n = os.cpu_count() or 2
    return n if cfg.recipe == "cpu_quick" else max(1, n - 1)


def _patches_per_epoch(cfg, sampler) -> int:
    """Default: enough tiles to cover the labelled tiles once, 4 to 64 batches (TileSampler.patches_per_epoch)."""
    return sampler.patches_per_epoch(cfg.patches_per_epoch, cfg.batch_size)


def _build_network(cfg, channel_names, class_names, init_from):
    """The network to train and where its weights came from ("random", "pretrained", "init_from")."""
    from pixlab.model.model import Model
    from pixlab.nn.networks import build_network
    K = len(class_names)
    net = build_network(cfg.architecture, cfg.encoder, len(channel_names), K, pretrained=False,
                        weights=cfg.encoder_weights)
    if init_from is not None:
        from pixlab.model.bundle import load_model
        src = init_from if isinstance(init_from, Model) else load_model(init_from)
        if src.class_names != class_names or src.channel_names != channel_names:
            raise ValueError(f"init_from model has classes {src.class_names} and channels {src.channel_names} "
                             f"but this data has {class_names} and {channel_names}; they must match")
        net.load_state_dict(src.network.state_dict())
        return net, "init_from"
    if cfg.pretrained:
        try:
            net = build_network(cfg.architecture, cfg.encoder, len(channel_names), K, pretrained=True,
                                weights_path=cfg.weights_path, weights=cfg.encoder_weights)
            return net, "pretrained"
        except FileNotFoundError as e:
            if cfg.weights_path:
                raise
            warnings.warn(f"{e} Training from random initialisation instead.", stacklevel=3)
    return net, "random"


def _parallel(net, device):
    """(forward module, rank, world): PyTorch's own DDP under torchrun, else the network itself."""
    import torch
    rank, world = dist_info()
    if world == 1:
        return net, rank, world
    # DDP broadcasts rank 0's initial weights and all-reduces gradients.
    from torch.nn.parallel import DistributedDataParallel
    # device "cuda" means the current device (torch.cuda.set_device(LOCAL_RANK)), not GPU 0.
    ids = [torch.device(device).index if torch.device(device).index is not None
           else torch.cuda.current_device()] if device.startswith("cuda") else None
    return DistributedDataParallel(net, device_ids=ids), rank, world


def _param_groups(net, cfg):
    import torch
    enc_params = set(id(p) for p in getattr(net, "encoder", torch.nn.Module()).parameters())
    groups = [{"params": [p for p in net.parameters() if p.requires_grad and id(p) not in enc_params],
               "lr": cfg.learning_rate}]
    enc_trainable = [p for p in net.parameters() if p.requires_grad and id(p) in enc_params]
    if enc_trainable:
        groups.append({"params": enc_trainable, "lr": cfg.learning_rate * cfg.encoder_lr_scale})
    return groups


def train(samples, cfg=None, class_names: Sequence[str] | None = None, *, colours=None,
          callbacks: Iterable[Callable[[dict], object]] = (), cancel: threading.Event | None = None,
          checkpoint_dir=None, resume=None, init_from=None, progress: bool = True):
    """Train a pixel classifier on sparsely labelled images.

    Parameters
    ----------
    samples : list of (image, labels)
        ``image``: anything :func:`pixlab.open_image` accepts; ``labels``: (Y, X) int array (or a label
        file path) where 0 = unlabelled and k = ``class_names[k-1]``.
    cfg : TrainConfig, optional
        Defaults to ``TrainConfig()``.
    class_names : list of str, optional
        Names of classes 1..K. Default "class 1", ...
    colours : list of [r, g, b], optional
        Display colours per class.
    callbacks : iterable of callables
        Each is called with an event dict (``event`` in "start", "batch", "epoch", "end"). Returning
        ``False`` stops training cooperatively (the best model so far is kept).
    cancel : threading.Event, optional
        Setting it stops training cooperatively. Set before the first optimizer step (while the run
        is prepared: images, statistics, pseudo-labels, network), :class:`TrainingCancelled` is raised.
    checkpoint_dir : path, optional
        Writes ``last/`` (resumable checkpoint) and ``best/`` (model bundle) there, atomically.
    resume : path, optional
        A checkpoint folder (``.../last``) or checkpoint_dir to continue from, with the config stored
        in it (see :func:`pixlab.training.checkpoint.resume_config`: ``cfg`` may change the device,
        threads, time limit and the like; other fields it sets must match the checkpoint's).
    init_from : path or Model, optional
        Start from a saved model's weights (classes and channels must match).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    pixlab.Model
        The model of the best epoch by ``cfg.monitor``.

    Raises
    ------
    TrainingCancelled
        ``cancel`` was set (or a callback returned ``False``) before the first optimizer step.

    Examples
    --------
    >>> import pixlab
    >>> img, labels, names = pixlab.datasets.sample_ihc()          # doctest: +SKIP
    >>> model = pixlab.train([(img, labels)], pixlab.TrainConfig(epochs=2), class_names=names)  # doctest: +SKIP
    """
    import torch
    from pixlab.training.config import TrainConfig

    cfg = (cfg or TrainConfig())
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg must be a pixlab.TrainConfig, got {type(cfg).__name__}")
    if resume is not None:  # the checkpoint's own config; cfg may only change how this run is run
        from pixlab.training.checkpoint import resume_config
        cfg = resume_config(resume, cfg)
    user_cfg = cfg
    cfg, resolution = cfg._resolve()
    if progress and resolution:
        # Every automatic choice is printed (and kept in the model's metadata["resolution"]).
        from pixlab.training.config import format_resolution
        print("pixlab: automatic settings (set a field to keep your own value):\n" + format_resolution(resolution))
    device = cfg.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"TrainConfig.device={device!r} but no CUDA GPU is available; use device='auto' or 'cpu'")
    t_start = time.monotonic()
    # CPU threads: the one process-wide setting, shared by concurrent runs (pixlab.training.seeding)
    threads = cpu_threads(cfg.num_threads or _default_threads(cfg)) if device == "cpu" else contextlib.nullcontext()
    with threads:
        return _train(samples, cfg, user_cfg, class_names, colours, callbacks, cancel, checkpoint_dir, resume,
                      init_from, progress, device, t_start, resolution)


def _train(samples, cfg, user_cfg, class_names, colours, callbacks, cancel, checkpoint_dir, resume, init_from,
           progress, device, t_start, resolution=()):
    import torch
    from pixlab.labels.masks import annotation_warnings, default_colours
    from pixlab.training.samples import label_stats
    from pixlab.image.resolution import training_pixel_size
    from pixlab.model.model import Model
    from pixlab.nn.networks import freeze
    from pixlab.image.normalize import compute_stats

    callbacks = tuple(callbacks)
    # time_limit_s counts from the call, preparation included; Cancel works between (and inside) its phases
    prep = Preparation(cancel, callbacks if dist_info()[0] == 0 else (), t_start, cfg.time_limit_s)
    prep.phase("checking the images and labels")
    images, labels, class_names = prepare_samples(samples, cfg, class_names)
    prep.phase("splitting the strokes")
    K = len(class_names)
    colours = colours or default_colours(K)
    stats_cls = label_stats(labels, class_names)
    # advice is given only once the images are known to be usable: bad input gets one error, not
    # warnings about labels followed by the error
    advice = list(annotation_warnings(stats_cls))
    train_l, val_l, split_info = split_strokes(labels, K, cfg.validation_split, cfg.seed)
    if not any(v.any() for v in val_l):
        advice.append("no stroke could be held out for validation (each class needs 2+ strokes); "
                      "validation uses the training strokes, so it cannot detect overfitting")
        val_l = [lab.copy() for lab in labels]

    prep.phase("computing normalisation statistics")
    stats = compute_stats(images, method=cfg.normalization, per_channel=cfg.per_channel,
                          fixed_range=cfg.fixed_range, seed=cfg.seed)
    prep.phase("reading the images")
    samples_ = build_samples(images, labels, train_l, val_l, stats)
    for w in advice:
        warnings.warn(w, stacklevel=3)
    if cfg.pseudo_labels:
        prep.phase("computing random-forest pseudo-labels")
        add_pseudo_labels(samples_, K, cfg, prep)

    prep.phase("building the network")

    channel_names = images[0].channel_names
    with seeded(cfg.seed):  # initial weights from the run's seed, not from torch's global RNG
        net, weights_source = _build_network(cfg, channel_names, class_names, init_from)
    freeze_info = freeze(net, cfg.freeze_blocks)
    net.to(device)
    fwd, rank, world = _parallel(net, device)
    if world > 1:
        callbacks = callbacks if rank == 0 else ()
        progress = progress and rank == 0

    opt = _make_optimizer(net, cfg, _param_groups(net, cfg))
    ema = None
    if cfg.weight_average == "ema":
        from pixlab.training.averaging import weight_average
        ema = weight_average(net, cfg.ema_decay)

    prep.phase("choosing the validation tiles")
    tile = cfg.tile_size
    # Each rank draws its own tiles (a distributed sampler over the random tile stream).
    sampler = TileSampler(samples_, stats, tile, K, cfg.stroke_focus, cfg.seed + 7919 * rank)
    n_patches = _patches_per_epoch(cfg, sampler)
    steps = max(1, int(math.ceil(n_patches / cfg.batch_size)))
    val_tiles = sampler.validation_tiles()
    prep.check()
    prepare_s = prep.elapsed()
    if cfg.time_limit_s is not None and prepare_s > 0.5 * cfg.time_limit_s:
        warnings.warn(f"preparing the run took {prepare_s:.0f} s of the {cfg.time_limit_s:g} s time limit, "
                      "which leaves little time to train: raise time_limit_s, or train on fewer or smaller "
                      "images (or with pseudo_labels=False)", stacklevel=3)
    if progress and rank == 0:
        v = sampler.validation_info
        print(f"validation: {v['tiles']} tiles of {v['tile_size']} px on {v['pieces_covered']} of "
              f"{v['held_out_pieces']} held-out stroke pieces ({v['pixels_in_tiles']} of {v['held_out_pixels']} px)")
    use_amp = device.startswith("cuda") and cfg.amp
    run = Run(cfg=cfg, device=device, net=net, fwd=fwd, ema=ema, opt=opt, sched=_make_scheduler(opt, cfg, steps),
              sampler=sampler, val_tiles=val_tiles[rank::world], augment=build_augmentation(cfg),
              class_weights=class_weight_tensor(cfg, class_names, device), steps=steps, n_classes=K,
              rank=rank, world=world, t_start=t_start, callbacks=tuple(callbacks), cancel=cancel,
              checkpoint_dir=checkpoint_dir, scaler=torch.amp.GradScaler("cuda") if use_amp else None)
    if resume is not None:
        from pixlab.training.checkpoint import load_checkpoint
        st = load_checkpoint(resume, net, opt, run.sched, ema)
        run.start_epoch, run.history, run.best = st["epoch"], st["history"], st["best"]
        sampler.rng.bit_generator.state = st["sampler_state"]
        if rank:  # the checkpoint holds rank 0's tile stream; other ranks must not repeat it
            sampler.rng = np.random.default_rng([cfg.seed, rank, run.start_epoch])
    meta = {
        "split": split_info, "label_stats": stats_cls, "data_fingerprint": fingerprint(images, labels),
        "freeze": freeze_info, "weights_source": weights_source, "user_config": user_cfg.to_dict(),
        "resolution": [dict(r) for r in resolution],
        "inference_tile_size": tile if cfg.recipe == "standard" else max(tile, 512),
        "intensity_stats": intensity_stats(images),
        "train_images": [im.name for im in images], "patches_per_epoch": n_patches, "world_size": world,
        "sampling": sampler.describe(), "validation": sampler.validation_info,
        # level-0 µm/px of the training images: prediction matches it (pixlab.image.resolution)
        "pixel_size_um": training_pixel_size(images, cfg.downsample),
        "prepare_time_s": round(prepare_s, 3),
    }

    def make_model(state=None) -> Model:
        n2 = copy.deepcopy(net).cpu()
        if state is not None:
            n2.load_state_dict(state)
        return Model(n2, class_names, colours, channel_names, stats, cfg, run.history,
                     {**meta, "best_epoch": run.best["epoch"], "best_score": run.best["score"]})

    run.make_model = make_model
    run.emit({"event": "start", "epochs": cfg.epochs, "steps_per_epoch": steps, "config": cfg.to_dict(),
              "class_names": class_names, "resolution": meta["resolution"]})
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.epochs, initial=run.start_epoch, desc="training", unit="epoch")
    try:
        stop_reason = run_epochs(run, bar)
    finally:
        if bar is not None:
            bar.close()
    meta["stop_reason"] = stop_reason
    meta["train_time_s"] = time.monotonic() - t_start
    model = make_model(run.best["state"])
    if rank == 0:
        from pixlab.training.health import quality_check
        # Never return a broken network silently: compare it with the random-forest preview on the strokes.
        # with a time limit, the check is budgeted like the pseudo-labels (it predicts with both models)
        from pixlab.training.health import MAX_CHECK_PIXELS
        from pixlab.training.pseudo import pseudo_budget
        budget = pseudo_budget(cfg)
        check = quality_check(model, samples_, class_names, seed=cfg.seed,
                              max_pixels=MAX_CHECK_PIXELS if budget is None else min(MAX_CHECK_PIXELS,
                                                                                     max(2**20, budget)),
                              steps=sum(int(h.get("steps", 0)) for h in run.history),
                              stopped_by_time=stop_reason == "time_limit")
        model.metadata["quality_check"] = check
    run.emit({"event": "end", "stop_reason": stop_reason, "best_epoch": run.best["epoch"],
              "epochs_run": len(run.history), "quality_check": model.metadata.get("quality_check")})
    return model
