"""Prediction of a whole image held in memory (what :meth:`pixlab.Model.predict` runs).

Kept apart from :mod:`pixlab.inference.stream` (files of any size) so that ``Model.predict`` does
not depend on the file pipeline, which loads models from folders (an import cycle otherwise).
"""

from __future__ import annotations

import numpy as np

from pixlab.inference.backends import inference_batch_size
from pixlab.inference.prepare import image_stats_for, match_channels, tile_reader, working_image
from pixlab.nn.tile_size import check_tile_size

__all__ = ["predict_image", "predict_at_model_resolution"]


def predict_image(model, image, *, tile_size=None, overlap=None, batch_size=None, per_image_norm=None,
                  channels=None):
    """Class probabilities (K, Y, X) float32 for a whole image; see :meth:`pixlab.Model.predict`."""
    from pixlab.image.io import open_image

    img = match_channels(model, open_image(image), channels)
    stats = image_stats_for(model, img, per_image_norm)
    full_yx = img.shape[1:]
    work, ds = working_image(model, img)
    probs = _predict_as_is(model, work, stats, tile_size, overlap, batch_size)
    if tuple(probs.shape[1:]) != tuple(full_yx):  # predicted at the model's pixel size: back to the image's
        import torch
        t = torch.from_numpy(probs)[None]
        probs = torch.nn.functional.interpolate(t, size=tuple(full_yx), mode="bilinear",
                                                align_corners=False)[0].numpy()
    return np.ascontiguousarray(probs, dtype=np.float32)


def predict_at_model_resolution(model, image) -> np.ndarray:
    """Class probabilities (K, Y, X) of an image that is already at the model's working resolution.

    No pixel size is looked at and nothing is resampled: for images taken from the training data
    at the training resolution (the post-training quality check), where :func:`predict_image` would
    downsample an image without pixel size by the model's ``downsample`` a second time.
    """
    from pixlab.image.io import open_image

    img = match_channels(model, open_image(image))
    return _predict_as_is(model, img, image_stats_for(model, img))


def _predict_as_is(model, work, stats, tile_size=None, overlap=None, batch_size=None) -> np.ndarray:
    from pixlab.inference.tiling import predict_tiled

    tile = model.inference_tile_size if tile_size is None else check_tile_size(tile_size, "tile_size", model.tile_multiple)
    ov = model.config.tile_overlap if overlap is None else overlap
    bs = inference_batch_size(model, tile, work.n_channels, batch_size)
    return predict_tiled(tile_reader(work, stats), work.shape[1:], model.n_classes, model.infer_batch,
                         tile=tile, overlap=ov, batch_size=bs)
