"""Applying a model to images: tiled, normalized the way it was trained, blended without seams."""

from __future__ import annotations

import numpy as np

__all__ = ["predict_image", "match_channels", "image_stats_for", "tile_reader"]


def match_channels(model, img):
    """Return ``img`` restricted/ordered to the channels the model expects.

    An image with exactly the model's channel count is used as is; an image with more channels is
    matched by name. Anything else raises a ValueError naming both counts and the expected names.
    """
    want = model.channel_names
    if img.n_channels == len(want):
        return img
    if set(want) <= set(img.channel_names):
        return img.select_channels(want)
    raise ValueError(
        f"image '{img.name}' has {img.n_channels} channel(s) {img.channel_names} but the model expects "
        f"{len(want)} channel(s) {want}; open the image with channels={want!r} or use a model trained "
        f"on these channels")


def image_stats_for(model, img, per_image_norm: bool | None = None) -> dict:
    """Normalization statistics to apply to ``img``: the training set's, or the image's own."""
    if per_image_norm is None:
        per_image_norm = not model.config.use_training_stats
    if not per_image_norm:
        return model.norm_stats
    from .normalize import compute_stats
    s = model.norm_stats
    return compute_stats(img, method=s["method"], per_channel=s["per_channel"],
                         fixed_range=model.config.fixed_range)


def tile_reader(img, stats):
    """A ``read_tile(y0, y1, x0, x1)`` for :func:`pixlab.tiling.predict_tiled`: read, normalize, check."""
    from .normalize import apply

    def read_tile(y0, y1, x0, x1):
        tile = apply(img.read((y0, y1, x0, x1)), stats)
        if not np.isfinite(tile).all():
            bad = [img.channel_names[c] for c in range(tile.shape[0]) if not np.isfinite(tile[c]).all()]
            raise ValueError(f"image '{img.name}' has NaN or infinite values in channel(s) {bad} near "
                             f"y={y0}..{y1}, x={x0}..{x1}; replace them (e.g. numpy.nan_to_num) before predicting")
        return tile
    return read_tile


def predict_image(model, image, *, tile_size=None, overlap=None, batch_size=None, per_image_norm=None):
    """Class probabilities (K, Y, X) float32 for a whole image; see :meth:`pixlab.Model.predict`."""
    from .io import open_image
    from .tiling import predict_tiled

    img = match_channels(model, open_image(image))
    stats = image_stats_for(model, img, per_image_norm)
    full_yx = img.shape[1:]
    ds = float(model.config.downsample)
    work = img.downsampled(ds) if ds > 1 else img
    tile = int(tile_size or model.inference_tile_size)
    ov = model.config.tile_overlap if overlap is None else overlap
    bs = int(batch_size or (model.config.batch_size if model.device.type == "cuda" else 4))
    probs = predict_tiled(tile_reader(work, stats), work.shape[1:], model.n_classes, model.infer_batch,
                          tile=tile, overlap=ov, batch_size=bs)
    if ds > 1:
        import torch
        t = torch.from_numpy(probs)[None]
        probs = torch.nn.functional.interpolate(t, size=tuple(full_yx), mode="bilinear",
                                                align_corners=False)[0].numpy()
    return np.ascontiguousarray(probs, dtype=np.float32)
