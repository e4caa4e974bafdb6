"""Distribution shift: is a new image like the training images, and a label-free fix (AdaBN).

Core module (no Jupyter imports).

- :func:`ood_check` compares a new image's per-channel intensity statistics with the training
  statistics stored in the model and says, in words and with a score, what differs
  ("channel DAPI is 3.0x brighter than in training").
- :func:`adabn` (Li et al. 2016, "Revisiting Batch Normalization for Practical Domain Adaptation")
  re-estimates every BatchNorm layer's running mean/variance on tiles of the new image(s) - no labels
  needed - and returns a calibrated copy of the model. It undoes intensity and contrast changes that
  the fixed training normalization passes through to the network.
"""

from __future__ import annotations

import warnings

import numpy as np

from pixlab.image.padding import pad_to

__all__ = ["intensity_stats", "ood_check", "adabn", "feature_shift"]

#: Metadata key under which a model may store the raw intensity statistics of its training set
#: (``intensity_stats(training images)``); :func:`ood_check` prefers it over the normalization stats.
METADATA_KEY = "intensity_stats"


def intensity_stats(images, max_samples: int = 1_000_000, seed: int = 0) -> dict:
    """Robust per-channel intensity statistics of one image or a pooled set of images.

    Parameters
    ----------
    images : Image, array, path or list of them
    max_samples : int
        Pixels per channel read (large images are sampled, see :func:`pixlab.image.normalize.compute_stats`).
    seed : int

    Returns
    -------
    dict
        JSON-serialisable ``{"channels": [names], "p1": [C], "p99": [C], "mean": [C], "std": [C]}``.
    """
    from pixlab.image.io import open_image
    from pixlab.image.normalize import compute_stats

    first = images[0] if isinstance(images, (list, tuple)) and images else images
    names = open_image(first).channel_names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "constant channel" warnings are about normalization, not here
        pct = compute_stats(images, "percentile_99", True, max_samples=max_samples, seed=seed)
        z = compute_stats(images, "z_score", True, max_samples=max_samples, seed=seed)
    p1 = pct["offset"]
    return {"channels": list(names), "p1": p1, "p99": [a + b for a, b in zip(p1, pct["scale"])],
            "mean": z["offset"], "std": z["scale"]}


def _prepared(model, image):
    from pixlab.image.io import open_image
    from pixlab.inference.predict import match_channels
    return match_channels(model, open_image(image))


def _reference(model, img, reference):
    """(kind, train dict, image dict) of comparable per-channel 'floor', 'level', 'spread'."""
    from pixlab.image.normalize import compute_stats

    if reference is not None and not (isinstance(reference, dict) and "p99" in reference):
        reference = intensity_stats(reference)
    ref = reference if reference is not None else model.metadata.get(METADATA_KEY)
    if ref is not None:
        if len(ref["p99"]) != img.n_channels:
            raise ValueError(f"reference statistics are for {len(ref['p99'])} channels but the image has "
                             f"{img.n_channels}; compute them on images with the model's channels")
        cur = intensity_stats(img)
        pick = lambda s: {"floor": np.asarray(s["p1"]), "level": np.asarray(s["p99"]),  # noqa: E731
                          "spread": np.asarray(s["p99"]) - np.asarray(s["p1"])}
        return "intensity_stats", pick(ref), pick(cur), "99th percentile"
    ns = model.norm_stats
    method = ns["method"]
    if method == "fixed_range":
        raise ValueError("the model was trained with fixed_range normalization, which records no training "
                         "intensities; pass reference=<training images> (or their intensity_stats) to ood_check")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cur = compute_stats(img, method, ns["per_channel"])

    def pick(s):
        off, sc = np.asarray(s["offset"], float), np.asarray(s["scale"], float)
        if method == "z_score":  # offset = mean, scale = std
            return {"floor": off, "level": off, "spread": sc}
        return {"floor": off, "level": off + sc, "spread": sc}
    what = {"z_score": "mean", "min_max": "maximum"}.get(method, "99th percentile")
    return "norm_stats", pick(ns), pick(cur), what


def _ratio(a: float, b: float) -> float:
    if b > 0 and a > 0:
        return a / b
    return 1.0 if a == b else float("inf")


def ood_check(model, image, reference=None, threshold: float = 2.0, warn: bool = True,
              features: bool = False, max_tiles: int = 16) -> dict:
    """Compare a new image's intensities with the model's training data before predicting.

    Parameters
    ----------
    model : pixlab.Model
    image : Image, array or path
        Channels are matched to the model's like :meth:`pixlab.Model.predict` does.
    reference : images or dict, optional
        Training images (or their :func:`intensity_stats`) to compare with. Default: the model's
        ``metadata["intensity_stats"]`` when present, else its normalization statistics
        (``model.norm_stats``, computed on the training set with the same method).
    threshold : float
        Factor from which a difference counts as a shift: brightness (upper level) or spread
        ratio >= threshold or <= 1/threshold, or a floor moved by >= (threshold - 1) training spreads.
    warn : bool
        Emit a ``UserWarning`` with the message when the image is out of distribution.
    features : bool
        Also measure how far the BatchNorm inputs drift on the image's tiles (see :func:`feature_shift`).
    max_tiles : int
        Tiles used for ``features``.

    Returns
    -------
    dict
        ``ood`` (bool), ``score`` (largest factor over channels; 1 = identical), ``threshold``,
        ``source`` ("intensity_stats" or "norm_stats"), ``channels`` (one dict per channel with
        ``train_level``, ``image_level``, ``brightness_ratio``, ``spread_ratio``, ``floor_shift``,
        ``factor``), ``reasons`` (list of str), ``message`` (str) and, with ``features``,
        ``feature_shift``.

    Raises
    ------
    ValueError
        Channels do not match the model, or no training statistics exist (fixed_range without reference).
    """
    if not float(threshold) > 1:
        raise ValueError(f"threshold must be a factor > 1, got {threshold!r}; e.g. 2.0")
    img = _prepared(model, image)
    source, tr, cur, level_name = _reference(model, img, reference)
    rows, reasons = [], []
    for c, name in enumerate(img.channel_names):
        br = _ratio(cur["level"][c], tr["level"][c])
        sr = _ratio(cur["spread"][c], tr["spread"][c])
        shift = float((cur["floor"][c] - tr["floor"][c]) / tr["spread"][c]) if tr["spread"][c] > 0 else 0.0
        factor = max(max(br, 1 / br), max(sr, 1 / sr), 1 + abs(shift))
        rows.append({"channel": name, "train_level": float(tr["level"][c]), "image_level": float(cur["level"][c]),
                     "brightness_ratio": br, "spread_ratio": sr, "floor_shift": shift, "factor": factor})
        if factor < threshold:
            continue
        lv = f"{level_name} {cur['level'][c]:.4g} vs {tr['level'][c]:.4g}"
        if br >= threshold:
            reasons.append(f"channel {name} is {br:.1f}x brighter than in training ({lv})")
        elif br <= 1 / threshold:
            reasons.append(f"channel {name} is {1 / br:.1f}x dimmer than in training ({lv})")
        elif max(sr, 1 / sr) >= threshold:
            reasons.append(f"channel {name} has {sr:.1f}x the intensity spread of training "
                           f"({'more' if sr > 1 else 'less'} contrast)")
        else:
            reasons.append(f"channel {name}'s background moved by {shift:+.1f} training ranges")
    score = max(r["factor"] for r in rows)
    ood = score >= threshold
    out = {"ood": bool(ood), "score": float(score), "threshold": float(threshold), "source": source,
           "channels": rows, "reasons": reasons}
    if ood:
        fix = ("normalizing per image (model.predict(img, per_image_norm=True))"
               if model.config.use_training_stats else "checking the image acquisition")
        msg = (f"Distribution shift (score {score:.1f} >= {threshold:g}): " + "; ".join(reasons) +
               f". Predictions may be unreliable; try pixlab.analysis.shift.adabn(model, image) or {fix}, "
               f"and check the result.")
    else:
        msg = f"OK: intensities match training (largest difference {score:.2f}x < {threshold:g}x)."
    if features:
        fs = feature_shift(model, img, max_tiles=max_tiles)
        out["feature_shift"] = fs
        msg += f" BatchNorm feature shift {fs:.2f} (0 = as in training)."
    out["message"] = msg
    if ood and warn:
        warnings.warn(msg, UserWarning, stacklevel=2)
    return out


# ------------------------------------------------------------------------------------------ tiles
def _image_tiles(model, images, max_tiles: int, tile: int | None, seed: int):
    """Up to ``max_tiles`` normalized (C, t, t) tiles drawn from a grid over the images (seeded)."""
    from pixlab.image.io import open_image
    from pixlab.inference.predict import image_stats_for, match_channels, tile_reader
    from pixlab.inference.tiling import tile_starts

    imgs = images if isinstance(images, (list, tuple)) else [images]
    if not imgs:
        raise ValueError("images is an empty list; give at least one image")
    if int(max_tiles) < 1:
        raise ValueError(f"max_tiles must be >= 1, got {max_tiles!r}; e.g. 64")
    t = int(tile or model.config.tile_size)
    ds = float(model.config.downsample)
    readers, slots = [], []
    for i, im in enumerate(imgs):
        img = match_channels(model, open_image(im))
        if ds > 1:
            img = img.downsampled(ds)
        readers.append(tile_reader(img, image_stats_for(model, img)))
        H, W = img.shape[1:]
        slots += [(i, y, x, H, W) for y in tile_starts(H, t, t) for x in tile_starts(W, t, t)]
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(slots), size=min(int(max_tiles), len(slots)), replace=False))
    for j in chosen:
        i, y, x, H, W = slots[j]
        a = readers[i](y, min(y + t, H), x, min(x + t, W))
        yield pad_to(a, t, t)  # image smaller than a tile: padded like inference pads it


def _batch_norms(network):
    import torch
    return [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def feature_shift(model, images, max_tiles: int = 16, seed: int = 0) -> float:
    """How far the BatchNorm layers' inputs on some images are from their training statistics.

    For each BatchNorm layer, the per-channel mean of its input over the tiles is compared with its
    running mean in units of its running standard deviation; the result is the average of
    ``|mean - running_mean| / running_std`` over channels and layers (0 = as in training, ~1 = the
    features moved by a whole standard deviation).

    Parameters
    ----------
    model : pixlab.Model
    images : Image, array, path or list of them
    max_tiles : int
    seed : int

    Returns
    -------
    float
    """
    import torch

    bns = _batch_norms(model.network)
    if not bns:
        raise ValueError(f"the network ({model.config.architecture}) has no BatchNorm layers; "
                         f"feature_shift needs them")
    sums = {id(m): [0.0, 0] for m in bns}

    def hook(mod, args):
        x = args[0].detach().float()
        s = sums[id(mod)]
        s[0] = s[0] + x.mean(dim=(0, 2, 3)).cpu().numpy() * x.shape[0]
        s[1] += x.shape[0]
    handles = [m.register_forward_pre_hook(hook) for m in bns]
    try:
        for batch in _batches(_image_tiles(model, images, max_tiles, None, seed), 4):
            model.infer_batch(batch)
    finally:
        for h in handles:
            h.remove()
    vals = []
    for m in bns:
        total, n = sums[id(m)]
        if n:
            rm = m.running_mean.detach().cpu().numpy()
            rs = np.sqrt(m.running_var.detach().cpu().numpy() + m.eps)
            vals.append(float(np.mean(np.abs(total / n - rm) / rs)))
    return float(np.mean(vals)) if vals else float("nan")


def _batches(tiles, size: int):
    buf = []
    for t in tiles:
        buf.append(t)
        if len(buf) == size:
            yield np.stack(buf)
            buf = []
    if buf:
        yield np.stack(buf)


def adabn(model, images, max_tiles: int = 64, *, batch_size: int = 8, tile_size: int | None = None,
          seed: int = 0):
    """Adaptive Batch Normalization: recalibrate BatchNorm statistics on new images (no labels).

    Every BatchNorm layer's running mean and variance are reset and re-estimated as the cumulative
    average (``momentum=None``) over tiles of ``images``, normalized the way the model normalizes at
    inference. Weights are unchanged. The original model is not modified.

    Parameters
    ----------
    model : pixlab.Model
    images : Image, array, path or list of them
        The new data (e.g. the slide to predict, or several from the new batch).
    max_tiles : int
        Tiles drawn (seeded, without replacement) from a grid over the images; 32-128 are plenty.
    batch_size : int
        Tiles per forward pass.
    tile_size : int, optional
        Default: the training tile size.
    seed : int
        Which tiles are drawn.

    Returns
    -------
    pixlab.Model
        A calibrated copy; ``metadata["adabn"]`` records the images and tile count.

    Raises
    ------
    ValueError
        No BatchNorm layer in the network, channel mismatch, ``max_tiles < 1``.

    Examples
    --------
    >>> calibrated = adabn(model, new_image)             # doctest: +SKIP
    >>> probs = calibrated.predict(new_image)            # doctest: +SKIP
    """
    import torch

    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    out = model.copy()
    net = out.network
    bns = _batch_norms(net)
    if not bns:
        raise ValueError(f"the network ({model.config.architecture}) has no BatchNorm layers, so AdaBN cannot "
                         f"recalibrate it; retrain on images like the new ones instead")
    momenta = [m.momentum for m in bns]
    dev = out.device
    n = 0
    net.eval()  # dropout etc. stay off; only the BatchNorm layers collect statistics
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average over all batches
            # Set the flag directly: frozen norm layers have train() patched to stay in eval mode.
            m.training = True
        with torch.no_grad():
            for batch in _batches(_image_tiles(out, images, max_tiles, tile_size, seed), int(batch_size)):
                net(torch.from_numpy(batch).to(dev))
                n += batch.shape[0]
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
            m.training = False
    imgs = images if isinstance(images, (list, tuple)) else [images]
    names = [getattr(im, "name", str(im) if isinstance(im, str) else "array") for im in imgs]
    out.metadata["adabn"] = {"images": names, "tiles": int(n), "layers": len(bns)}
    return out
