"""Applying a model to images: tiled, normalised the way it was trained, blended without seams.

- :func:`predict_image`: a whole image in memory -> ``(K, Y, X)`` probabilities (``Model.predict``).
- :func:`predict_file` (:mod:`pixlab.inference.stream`): an image file of any size -> files
  (pyramidal OME-TIFF / OME-Zarr of probabilities or labels, measurements CSV, QuPath GeoJSON,
  overlay PNG), streamed so that memory does not grow with the image.
- :func:`predict_folder` (:mod:`pixlab.inference.folders`): many images, with resume (finished
  outputs are skipped) and one failing image reported without stopping the rest.

Channel matching and normalisation are :mod:`pixlab.inference.prepare`; the network
implementations (eager PyTorch, ONNX Runtime, "auto") are :mod:`pixlab.inference.backends`. Every
name is re-exported here, so ``from pixlab.inference.predict import predict_file`` keeps working.
"""

from __future__ import annotations

import numpy as np

from pixlab.inference.backends import AUTO_TOLERANCE, BACKENDS, cuda_batch_size, get_backend  # noqa: F401
from pixlab.inference.folders import (_check_formats, _gather_measurements, list_images,  # noqa: F401
                                      output_paths, predict_folder)
from pixlab.inference.prepare import (BAND_CACHE_BYTES, image_stats_for, match_channels,  # noqa: F401
                                      tile_reader, working_image)
from pixlab.inference.stream import predict_file  # noqa: F401

__all__ = ["predict_image", "match_channels", "image_stats_for", "tile_reader", "predict_file",
           "predict_folder", "list_images", "output_paths", "get_backend", "cuda_batch_size", "BACKENDS"]


def predict_image(model, image, *, tile_size=None, overlap=None, batch_size=None, per_image_norm=None):
    """Class probabilities (K, Y, X) float32 for a whole image; see :meth:`pixlab.Model.predict`."""
    from pixlab.image.io import open_image
    from pixlab.inference.tiling import predict_tiled

    img = match_channels(model, open_image(image))
    stats = image_stats_for(model, img, per_image_norm)
    full_yx = img.shape[1:]
    work, ds = working_image(model, img)
    tile = int(tile_size or model.inference_tile_size)
    ov = model.config.tile_overlap if overlap is None else overlap
    bs = int(batch_size or (model.config.batch_size if model.device.type == "cuda" else 4))
    probs = predict_tiled(tile_reader(work, stats), work.shape[1:], model.n_classes, model.infer_batch,
                          tile=tile, overlap=ov, batch_size=bs)
    if tuple(probs.shape[1:]) != tuple(full_yx):  # predicted at the model's pixel size: back to the image's
        import torch
        t = torch.from_numpy(probs)[None]
        probs = torch.nn.functional.interpolate(t, size=tuple(full_yx), mode="bilinear",
                                                align_corners=False)[0].numpy()
    return np.ascontiguousarray(probs, dtype=np.float32)
