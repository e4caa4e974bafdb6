"""Per-pixel filter features of the random forest: multiscale smoothing, edges and texture, exact in regions.

:func:`pixel_features` computes them (scikit-image's ``multiscale_basic_features``);
:func:`feature_margin` is the context a region needs for its features to equal the whole image's,
so large images are processed block by block or in bands; :func:`labelled_subset` caps the
labelled pixels a forest is fitted on, per class.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pixel_features", "feature_margin", "labelled_subset", "n_features", "scale_columns"]

# Gaussian kernels are cut at 4 sigma (scipy's default ``truncate``); the gradient / Hessian
# (np.gradient twice) and Sobel steps look at most 2 more pixels; one extra for safety.
_TRUNCATE = 4.0
_DERIVATIVE_REACH = 3


def feature_margin(sigma_max: float) -> int:
    """Pixels of context needed around a region so its features equal the whole-image features.

    Parameters
    ----------
    sigma_max : float
        Largest Gaussian sigma of the features.

    Returns
    -------
    int
        Margin in pixels.

    Examples
    --------
    >>> feature_margin(16)
    67
    """
    return int(_TRUNCATE * float(sigma_max) + 0.5) + _DERIVATIVE_REACH


def labelled_subset(flat_labels: np.ndarray, cap: int | None, rng) -> np.ndarray:
    """Sorted flat indices of the labelled pixels (label > 0), at most ``cap`` per class.

    Each class is capped on its own (a seeded random subset), so that dense labels of a big class
    cannot crowd out the others; ``cap=None`` keeps them all.

    Examples
    --------
    >>> labelled_subset(np.array([0, 1, 1, 2, 1]), 2, np.random.default_rng(0)).size
    3
    """
    index = np.flatnonzero(flat_labels)
    if cap is None:
        return index
    kept = []
    for k in np.unique(flat_labels[index]):
        members = index[flat_labels[index] == k]
        if len(members) > cap:
            members = np.sort(rng.choice(members, cap, replace=False))
        kept.append(members)
    return np.sort(np.concatenate(kept)) if kept else index


def _as_image(image_norm) -> np.ndarray:
    """(C, Y, X) float32 C-contiguous; a (Y, X) array is one channel."""
    array = np.asarray(image_norm)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(
            f"image_norm must be a (C, Y, X) array but has shape {array.shape}; "
            "move channels first, e.g. np.moveaxis(image, -1, 0)"
        )
    if array.dtype.kind not in "fiub":
        raise ValueError(
            f"image_norm has dtype {array.dtype}; pass a normalised float32 image (pixlab.image.normalize.apply)"
        )
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError(
            "image_norm contains NaN or infinite values; normalise the image with finite statistics "
            "or replace them with np.nan_to_num"
        )
    return array


def _clip_region(region, shape_yx) -> tuple[int, int, int, int]:
    try:
        y0, y1, x0, x1 = (int(v) for v in region)
    except (TypeError, ValueError):
        raise ValueError(f"region must be (y0, y1, x0, x1), got {region!r}; pass four integers") from None
    height, width = shape_yx
    y0, y1 = max(0, y0), min(height, y1)
    x0, x1 = max(0, x0), min(width, x1)
    if y0 >= y1 or x0 >= x1:
        raise ValueError(
            f"region {tuple(region)} does not overlap the image of shape {shape_yx} (Y, X); "
            "pass (y0, y1, x0, x1) with y0 < y1 and x0 < x1 inside the image"
        )
    return y0, y1, x0, x1


def pixel_features(image_norm, sigma_min: float = 1, sigma_max: float = 16, region=None, workers=None):
    """Per-pixel intensity, edge and texture features at several scales.

    Parameters
    ----------
    image_norm : array_like, shape (C, Y, X)
        Normalised image (a ``(Y, X)`` array is one channel).
    sigma_min, sigma_max : float
        Smallest and largest Gaussian sigma; sigmas are ``sigma_min * 2**i`` up to ``sigma_max``.
    region : tuple of int, optional
        ``(y0, y1, x0, x1)``: compute features only for this region (clipped to the image). The
        region is padded with :func:`feature_margin` pixels of real context so the result equals the
        corresponding crop of the whole-image features.
    workers : int, optional
        Threads for the filters (default: all cores).

    Returns
    -------
    numpy.ndarray, shape (h, w, F)
        float32 features, ``F = 4 * n_sigmas * C`` (smoothed intensity, gradient magnitude and two
        Hessian eigenvalues per sigma and channel), from
        ``skimage.feature.multiscale_basic_features``.
    """
    from skimage.feature import multiscale_basic_features

    image = _as_image(image_norm)
    crop = (slice(None), slice(None))
    if region is not None:
        y0, y1, x0, x1 = _clip_region(region, image.shape[1:])
        m = feature_margin(sigma_max)
        py0, px0 = max(0, y0 - m), max(0, x0 - m)
        py1, px1 = min(image.shape[1], y1 + m), min(image.shape[2], x1 + m)
        image = image[:, py0:py1, px0:px1]
        crop = (slice(y0 - py0, y1 - py0), slice(x0 - px0, x1 - px0))
    # One channel at a time, written into the result: scikit-image stacks its list of feature maps
    # into a second array, so a whole multichannel call would hold the features twice.
    out = None
    for c in range(image.shape[0]):
        feats = multiscale_basic_features(image[c], intensity=True, edges=True, texture=True,
                                          sigma_min=sigma_min, sigma_max=sigma_max, workers=workers)[crop]
        if out is None:
            out = np.empty(feats.shape[:2] + (image.shape[0] * feats.shape[2],), np.float32)
        f = feats.shape[2]
        out[:, :, c * f:(c + 1) * f] = feats
        del feats
    return out


def n_features(n_channels: int, sigma_min: float = 1, sigma_max: float = 16) -> int:
    """Features per pixel of :func:`pixel_features`: 4 per sigma and channel.

    Examples
    --------
    >>> n_features(3)  # sigmas 1, 2, 4, 8, 16
    60
    """
    n_sigmas = int(np.log2(sigma_max) - np.log2(sigma_min) + 1)
    return 4 * n_sigmas * int(n_channels)


def scale_columns(n_channels: int, sigma_min: float = 1, sigma_max: float = 16, upto: float = 4) -> np.ndarray:
    """Columns of :func:`pixel_features` that hold the sigmas up to ``upto``.

    The features are ordered channel by channel, sigma by sigma (4 per sigma), so these columns equal
    ``pixel_features(image, sigma_min, upto)``: a fine-scale view of the same pixels without
    computing it again.

    Examples
    --------
    >>> scale_columns(2, 1, 16, 2).tolist()  # sigmas 1 and 2 of each channel
    [0, 1, 2, 3, 4, 5, 6, 7, 20, 21, 22, 23, 24, 25, 26, 27]
    """
    per_channel = n_features(1, sigma_min, sigma_max)
    kept = n_features(1, sigma_min, min(float(upto), float(sigma_max)))
    return np.concatenate([c * per_channel + np.arange(kept) for c in range(int(n_channels))])
