"""Fast feature-based pixel classifier (ilastik style): multiscale filters + a random forest.

The filters themselves are :mod:`pixlab.training.features` (re-exported here).

It serves three purposes in pixlab: the brush annotator's instant preview, pseudo-labels for
unlabelled pixels during network training, and the baseline in ``bench/sparse_strokes.py``.

Filters (Gaussian smoothing, gradient magnitude and Hessian eigenvalues at sigmas 1, 2, 4, ... px)
are the expensive part, so :class:`FeatureClassifier` caches them for the last images it saw: after
each new stroke only the forest is refitted and re-run.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict

import numpy as np

from pixlab.labels.masks import _as_integer_labels
from pixlab.training.features import _as_image, _clip_region, feature_margin, labelled_subset, pixel_features

__all__ = ["FeatureClassifier", "pixel_features", "feature_margin", "labelled_subset"]

# Pixels per predict_proba call: bounds the forest's temporary (N, K) float64 arrays.
_PREDICT_CHUNK = 1 << 18

# Features take 4 bytes x 4 x n_sigmas (20 for sigmas 1..16) per channel and pixel: ~320 MB per
# channel for 2048 x 2048. Larger images (or regions) are processed in bands of rows with exact
# margins instead of being cached whole, so memory stays bounded (pseudo-labels on big images).
_MAX_CACHED_PIXELS = 2048 * 2048
_BAND_PIXELS = 1 << 20


class FeatureClassifier:
    """Random forest on multiscale filter features, trained from sparse strokes.

    Parameters
    ----------
    n_estimators : int, default 50
        Trees in the forest.
    max_depth : int, default 10
        Maximum tree depth.
    sigma_min, sigma_max : float, default 1 and 16
        Range of Gaussian scales of the features (pixels).
    n_jobs : int, default -1
        Threads for the filters and the forest (-1: all cores).
    seed : int, default 0
        Random state of the forest and of the training-pixel subsampling; the same seed gives the
        same probabilities.
    max_samples_per_class : int or None, default 10_000
        At most this many labelled pixels per class are used for fitting (a seeded random subset),
        so dense labels do not make refitting slow. ``None`` uses all of them.
    cache_size : int, default 2
        Number of (image, region) feature arrays kept, most recent first. Two covers "the whole
        view" plus "the last region".

    Attributes
    ----------
    n_classes_ : int
        Number of output classes ``K`` (set by :meth:`fit`).
    classes_ : numpy.ndarray
        Class ids that had labelled pixels in the last fit.
    forest_ : sklearn.ensemble.RandomForestClassifier
        The fitted forest.

    Notes
    -----
    Label 0 means "unlabelled" and is ignored; classes are ``1..K``, as everywhere in pixlab.
    Features of the last images are cached by content (a hash of the pixel values, so editing an
    array in place is noticed), which makes a refit after each stroke cost only the forest.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> image = rng.normal(0, 0.1, (1, 64, 64)).astype(np.float32)
    >>> image[:, 16:48, 16:48] += 1
    >>> labels = np.zeros((64, 64), np.uint8)
    >>> labels[2:6, 2:30] = 1; labels[28:32, 24:40] = 2
    >>> clf = FeatureClassifier(n_estimators=10, sigma_max=4).fit(image, labels)
    >>> clf.predict(image)[32, 32], clf.predict(image)[60, 60]
    (np.uint8(2), np.uint8(1))
    """

    def __init__(
        self,
        n_estimators: int = 50,
        max_depth: int | None = 10,
        sigma_min: float = 1,
        sigma_max: float = 16,
        n_jobs: int = -1,
        seed: int = 0,
        max_samples_per_class: int | None = 10_000,
        cache_size: int = 2,
    ):
        if not 0 < sigma_min <= sigma_max:
            raise ValueError(
                f"sigma_min={sigma_min!r} and sigma_max={sigma_max!r} must satisfy "
                "0 < sigma_min <= sigma_max; e.g. sigma_min=1, sigma_max=16"
            )
        if int(n_estimators) != n_estimators or n_estimators < 1:
            raise ValueError(f"n_estimators must be a positive integer, got {n_estimators!r}; e.g. 50")
        self.n_estimators = int(n_estimators)
        self.max_depth = max_depth
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.n_jobs = n_jobs
        self.seed = seed
        self.max_samples_per_class = max_samples_per_class
        self.cache_size = max(1, int(cache_size))
        self._cache: OrderedDict = OrderedDict()
        self.forest_ = None
        self.n_classes_ = None
        self.classes_ = None
        self._n_channels = None

    def __repr__(self) -> str:
        return (
            f"FeatureClassifier(n_estimators={self.n_estimators}, max_depth={self.max_depth}, "
            f"sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, n_jobs={self.n_jobs}, "
            f"seed={self.seed})"
        )

    # ----------------------------------------------------------------------------------------------
    # Features
    # ----------------------------------------------------------------------------------------------

    @property
    def _workers(self):
        # skimage takes None for "all cores"; sklearn's -1 convention is mapped onto it.
        return None if self.n_jobs is None or self.n_jobs < 0 else max(1, int(self.n_jobs))

    def _image_key(self, image: np.ndarray) -> tuple:
        # Hashing every pixel costs a few ms for a view-sized image (much less than the filters) and,
        # unlike id(), cannot confuse a new or edited array with the cached one.
        digest = hashlib.blake2b(memoryview(image).cast("B"), digest_size=16).hexdigest()
        return (image.shape, digest, float(self.sigma_min), float(self.sigma_max))

    def features(self, image_norm, region=None) -> np.ndarray:
        """Features of an image (or of a region of it), from the cache when possible.

        Parameters
        ----------
        image_norm : array_like, shape (C, Y, X)
            Normalised float image.
        region : tuple of int, optional
            ``(y0, y1, x0, x1)``, clipped to the image. When the whole image's features are cached
            the region is cut from them; otherwise it is computed with a margin of context (see
            :func:`pixel_features`), giving the same values.

        Returns
        -------
        numpy.ndarray, shape (h, w, F)
            float32 features. Treat as read-only: it may be the cached array.
        """
        image = _as_image(image_norm)
        key = self._image_key(image)
        whole = self._cache_get((key, None))
        if region is None:
            if whole is None:
                whole = self._compute(image, None)
                self._cache_put((key, None), whole)
            return whole
        region = _clip_region(region, image.shape[1:])
        y0, y1, x0, x1 = region
        if whole is not None:
            return whole[y0:y1, x0:x1]
        crop = self._cache_get((key, region))
        if crop is None:
            crop = self._compute(image, region)
            self._cache_put((key, region), crop)
        return crop

    def _compute(self, image: np.ndarray, region) -> np.ndarray:
        return pixel_features(image, self.sigma_min, self.sigma_max, region, self._workers)

    def _cache_get(self, key):
        value = self._cache.get(key)
        if value is not None:
            self._cache.move_to_end(key)
        return value

    def _cache_put(self, key, value) -> None:
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        """Forget cached features (frees their memory)."""
        self._cache.clear()

    # ----------------------------------------------------------------------------------------------
    # Fit / predict
    # ----------------------------------------------------------------------------------------------

    def fit(self, image_norm, labels, n_classes: int | None = None) -> "FeatureClassifier":
        """Fit the forest on the labelled pixels (label > 0) of one image.

        Parameters
        ----------
        image_norm : array_like, shape (C, Y, X)
            Normalised float image.
        labels : array_like, shape (Y, X)
            Class ids, 0 = unlabelled.
        n_classes : int, optional
            Number of classes ``K`` of the task; default: the largest label present. Classes
            without labelled pixels get probability 0.

        Returns
        -------
        FeatureClassifier
            ``self``.

        Raises
        ------
        ValueError
            If no pixel is labelled, shapes differ, or a label exceeds ``n_classes``.
        """

        image = _as_image(image_norm)
        labels = _as_integer_labels(labels)
        if labels.shape != image.shape[1:]:
            raise ValueError(
                f"labels have shape {labels.shape} but the image is {image.shape[1:]} (Y, X); "
                "draw labels on the same image or resize them"
            )
        top = int(labels.max()) if labels.size else 0
        if top == 0:
            raise ValueError(
                "labels contain no labelled pixels (all 0); draw at least one stroke per class before fitting"
            )
        if n_classes is None:
            n_classes = top
        elif int(n_classes) != n_classes or n_classes < 1:
            raise ValueError(
                f"n_classes must be a positive integer, got {n_classes!r}; pass len(class_names)"
            )
        elif top > n_classes:
            raise ValueError(
                f"labels contain class id {top} but n_classes={n_classes}; pass the number of classes "
                "of the task or relabel"
            )

        flat_labels = labels.ravel()
        index = labelled_subset(flat_labels, self.max_samples_per_class, np.random.default_rng(self.seed))
        return self.fit_features(self._labelled_features(image, index), flat_labels[index], n_classes,
                                 n_channels=image.shape[0])

    def fit_features(self, features, labels, n_classes: int, n_channels: int) -> "FeatureClassifier":
        """Fit the forest on the features of labelled pixels gathered elsewhere (e.g. block by block).

        Parameters
        ----------
        features : numpy.ndarray, shape (N, F)
            Features of ``N`` labelled pixels (:func:`pixel_features` rows of images with
            ``n_channels`` channels).
        labels : numpy.ndarray, shape (N,)
            Their class ids ``1..n_classes`` (no 0). Use :func:`labelled_subset` to cap them.
        n_classes : int
            Number of classes ``K`` of the task.
        n_channels : int
            Channels of the images the features came from (checked at prediction).

        Returns
        -------
        FeatureClassifier
            ``self``.
        """
        from sklearn.ensemble import RandomForestClassifier

        x, y = np.asarray(features, np.float32), np.asarray(labels)
        if x.ndim != 2 or y.shape != (len(x),) or not len(x):
            raise ValueError(f"features must be (N, F) and labels (N,) with N > 0, got {x.shape} and {y.shape}")
        if y.min() < 1 or y.max() > n_classes:
            raise ValueError(f"labels must be class ids 1..{n_classes}, got {int(y.min())}..{int(y.max())}")
        forest = RandomForestClassifier(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            max_features="sqrt",
            n_jobs=self.n_jobs,
            random_state=self.seed,
        )
        forest.fit(x, y)
        self.forest_ = forest
        self.n_classes_ = int(n_classes)
        self.classes_ = forest.classes_.astype(np.int64)
        self._n_channels = int(n_channels)
        return self

    def _bands(self, region) -> list[tuple[int, int]]:
        """Row bands of about ``_BAND_PIXELS`` pixels covering ``region``."""
        y0, y1, x0, x1 = region
        step = max(1, _BAND_PIXELS // (x1 - x0))
        return [(start, min(start + step, y1)) for start in range(y0, y1, step)]

    def _in_one_piece(self, image: np.ndarray, region) -> bool:
        """Whether ``region``'s features come from (or go into) the cache rather than in bands."""
        y0, y1, x0, x1 = region
        if (y1 - y0) * (x1 - x0) <= _MAX_CACHED_PIXELS:
            return True
        return self._cache_get((self._image_key(image), None)) is not None

    def _feature_pieces(self, image: np.ndarray, region):
        """Yield ``(y0, y1, features)`` covering ``region``: one piece through the cache when small
        (or already cached), else bands of rows computed lazily, one at a time, with exact margins."""
        y0, y1, x0, x1 = region
        if self._in_one_piece(image, region):
            whole = region == (0, image.shape[1], 0, image.shape[2])
            yield y0, y1, self.features(image, None if whole else region)
            return
        for b0, b1 in self._bands(region):
            yield b0, b1, self._compute(image, (b0, b1, x0, x1))

    def _labelled_features(self, image: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Features of the pixels at the sorted flat indices ``index``."""
        height, width = image.shape[1:]
        whole = (0, height, 0, width)
        if self._in_one_piece(image, whole):
            feats = self.features(image)
            return feats.reshape(-1, feats.shape[-1])[index]
        pieces = []
        for y0, y1 in self._bands(whole):
            lo, hi = np.searchsorted(index, [y0 * width, y1 * width])
            if hi > lo:  # only bands holding labelled pixels are computed
                feats = self._compute(image, (y0, y1, 0, width))
                pieces.append(feats.reshape(-1, feats.shape[-1])[index[lo:hi] - y0 * width])
        return np.concatenate(pieces)

    def _check_fitted(self, image: np.ndarray) -> None:
        if self.forest_ is None:
            raise ValueError("this FeatureClassifier is not fitted yet; call fit(image_norm, labels) first")
        if image.shape[0] != self._n_channels:
            raise ValueError(
                f"image_norm has {image.shape[0]} channels but the classifier was fitted on "
                f"{self._n_channels}; pass the same channels as in fit"
            )

    def predict_proba(self, image_norm, region=None) -> np.ndarray:
        """Class probabilities per pixel.

        Parameters
        ----------
        image_norm : array_like, shape (C, Y, X)
            Normalised float image, same channels as in :meth:`fit`.
        region : tuple of int, optional
            ``(y0, y1, x0, x1)`` (clipped to the image); the result equals that crop of the
            whole-image prediction.

        Returns
        -------
        numpy.ndarray, shape (K, h, w)
            float32; ``probs[k - 1]`` is the probability of class ``k``. Over the classes seen in
            :meth:`fit` they sum to 1; classes without labels are 0.
        """
        image = _as_image(image_norm)
        self._check_fitted(image)
        if region is None:
            region = (0, image.shape[1], 0, image.shape[2])
        y0, y1, x0, x1 = _clip_region(region, image.shape[1:])
        probs = np.zeros((self.n_classes_, y1 - y0, x1 - x0), np.float32)
        for band_y0, band_y1, feats in self._feature_pieces(image, (y0, y1, x0, x1)):
            probs[:, band_y0 - y0 : band_y1 - y0] = self.predict_proba_features(feats)
        return probs

    def predict_proba_features(self, features, columns=None) -> np.ndarray:
        """Class probabilities from precomputed features.

        Parameters
        ----------
        features : numpy.ndarray, shape (..., F)
            :func:`pixel_features` of pixels (e.g. ``(h, w, F)`` of a block).
        columns : array_like of int, optional
            Use only these feature columns (those the forest was fitted on, e.g.
            :func:`~pixlab.training.features.scale_columns`), taken chunk by chunk.

        Returns
        -------
        numpy.ndarray, shape (K, ...)
            float32, as :meth:`predict_proba`.
        """
        if self.forest_ is None:
            raise ValueError("this FeatureClassifier is not fitted yet; call fit(image_norm, labels) first")
        feats = np.asarray(features)
        flat = feats.reshape(-1, feats.shape[-1])
        out = np.zeros((self.n_classes_, len(flat)), np.float32)
        rows = self.classes_ - 1
        for start in range(0, len(flat), _PREDICT_CHUNK):
            stop = min(start + _PREDICT_CHUNK, len(flat))
            chunk = flat[start:stop] if columns is None else flat[start:stop][:, columns]
            out[rows, start:stop] = self.forest_.predict_proba(chunk).T
        return out.reshape((self.n_classes_,) + feats.shape[:-1])

    def predict(self, image_norm, region=None) -> np.ndarray:
        """Most probable class per pixel.

        Parameters
        ----------
        image_norm : array_like, shape (C, Y, X)
            Normalised float image.
        region : tuple of int, optional
            ``(y0, y1, x0, x1)``, as in :meth:`predict_proba`.

        Returns
        -------
        numpy.ndarray, shape (h, w)
            Class ids ``1..K`` (``uint8``, ``uint16`` beyond 255 classes).
        """
        from pixlab.labels.classids import argmax_labels
        return argmax_labels(self.predict_proba(image_norm, region))
