"""Preparing an image for a model: its channels, its normalisation and a reader of normalised tiles."""

from __future__ import annotations

import numpy as np

__all__ = ["match_channels", "image_stats_for", "tile_reader", "read_rows", "working_image", "BAND_CACHE_BYTES"]


def match_channels(model, img, channels=None):
    """Return ``img`` with the channels the model expects, in its order.

    The rule (by name when names are informative, by position with a warning when they are
    generic, an error for a different count unless ``channels`` selects them) is
    :func:`pixlab.image.channels.match_channels`.
    """
    from pixlab.image.channels import match_channels as match
    return match(img, model.channel_names, channels)


def image_stats_for(model, img, per_image_norm: bool | None = None) -> dict:
    """Normalization statistics to apply to ``img``: the training set's, or the image's own."""
    if per_image_norm is None:
        per_image_norm = not model.config.use_training_stats
    if not per_image_norm:
        return model.norm_stats
    from pixlab.image.normalize import compute_stats
    s = model.norm_stats
    return compute_stats(img, method=s["method"], per_channel=s["per_channel"],
                         fixed_range=model.config.fixed_range)


#: tile_reader reads a whole row of tiles at once when it takes at most this many bytes.
BAND_CACHE_BYTES = 256 * 2**20


def tile_reader(img, stats, band_cache_bytes: int = BAND_CACHE_BYTES):
    """A ``read_tile(y0, y1, x0, x1)`` for :func:`pixlab.inference.tiling.predict_tiled`: read, normalize, check.

    The tiles of one row share their rows, and overlapping tiles share file chunks: the full-width
    band is read once (when it fits in ``band_cache_bytes``) and tiles are cut from it. On a
    4096 px tiled TIFF this halved the reading time (1.64 -> 0.87 CPU s for 121 tiles of 512 px),
    since each chunk is decoded once per band instead of once per tile that overlaps it. Calls from
    one thread at a time (predict_tiled's prefetch thread).
    """
    from pixlab.image.normalize import apply

    width = img.shape[2]
    row_bytes = width * img.n_channels * np.dtype(img.dtype).itemsize
    band = {"rows": None, "data": None}

    def read_raw(y0, y1, x0, x1):
        if (y1 - y0) * row_bytes > band_cache_bytes:
            return read_region(img, y0, y1, x0, x1, scheduler=None)
        if band["rows"] != (y0, y1):
            band["data"] = None  # let the previous band go before reading the next
            band["data"] = read_region(img, y0, y1, 0, width, scheduler=None)
            band["rows"] = (y0, y1)
        return band["data"][:, :, x0:x1]

    def read_tile(y0, y1, x0, x1):
        tile = apply(read_raw(y0, y1, x0, x1), stats)
        _check_finite(img, tile, (y0, y1, x0, x1))
        return tile
    return read_tile


def _check_finite(img, data, box) -> None:
    if np.issubdtype(data.dtype, np.integer) or np.isfinite(data).all():
        return
    y0, y1, x0, x1 = box
    bad = [img.channel_names[c] for c in range(data.shape[0]) if not np.isfinite(data[c]).all()]
    raise ValueError(f"image '{img.name}' has NaN or infinite values in channel(s) {bad} near "
                     f"y={y0}..{y1}, x={x0}..{x1}; replace them (e.g. numpy.nan_to_num) before predicting")


def read_region(img, y0, y1, x0, x1, scheduler: str | None = "synchronous") -> np.ndarray:
    """``img`` over ``[y0, y1) x [x0, x1)`` in its own dtype; a damaged file is one clear ValueError.

    Safe to call from several threads at once (tifffile's file handle is locked while bytes are
    read; decoding runs in parallel). A lazy image is computed with dask's synchronous scheduler:
    the callers parallelise over regions themselves, and no dask pool thread is left behind
    (``scheduler=None``: dask's default, its own thread pool, for a caller that reads one region at
    a time).
    """
    from pixlab.image.formats import unreadable

    arr = img.data[:, y0:y1, x0:x1]
    if not hasattr(arr, "compute"):
        return np.asarray(arr)
    try:
        try:
            return np.asarray(arr.compute(scheduler=scheduler) if scheduler else arr.compute())
        except (OSError, ValueError) as exc:  # tifffile.TiffFileError is a ValueError: as Image.read says it
            raise unreadable(img.path or img.name, exc) from exc
    except ValueError:
        raise
    except Exception as e:  # e.g. imagecodecs.DeflateError (a RuntimeError) for a damaged tile
        raise ValueError(
            f"cannot read image '{img.path or img.name}' near y={y0}..{y1}, x={x0}..{x1}: "
            f"{type(e).__name__}: {e}; the file is damaged, copy or export it again") from e


def read_rows(img, y0, y1) -> np.ndarray:
    """Full-width rows ``[y0, y1)`` of ``img`` (see :func:`read_region`), checked for NaN/inf."""
    raw = read_region(img, y0, y1, 0, img.shape[2])
    _check_finite(img, raw, (y0, y1, 0, img.shape[2]))
    return raw


def working_image(model, img):
    """The image at the model's training pixel size (a pyramid level, or resampled: says which);
    see :func:`pixlab.image.resolution.working_image`. Returns (image, level-0 px per working px)."""
    from pixlab.image.resolution import working_image as at_model_resolution
    return at_model_resolution(img, model)
