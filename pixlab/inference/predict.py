"""Applying a model to images: tiled, normalised the way it was trained, blended without seams.

- :func:`predict_image` (:mod:`pixlab.inference.in_memory`): a whole image in memory -> ``(K, Y, X)``
  probabilities (``Model.predict``).
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

from pixlab.inference.backends import AUTO_TOLERANCE, BACKENDS, cuda_batch_size, get_backend  # noqa: F401
from pixlab.inference.in_memory import predict_image  # noqa: F401
from pixlab.inference.folders import (_check_formats, _gather_measurements, list_images,  # noqa: F401
                                      output_paths, predict_folder)
from pixlab.inference.prepare import (BAND_CACHE_BYTES, image_stats_for, match_channels,  # noqa: F401
                                      tile_reader, working_image)
from pixlab.inference.stream import predict_file  # noqa: F401

__all__ = ["predict_image", "match_channels", "image_stats_for", "tile_reader", "predict_file",
           "predict_folder", "list_images", "output_paths", "get_backend", "cuda_batch_size", "BACKENDS"]
