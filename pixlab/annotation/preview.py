"""Instant preview: a random forest refitted in a background thread after each stroke (or a trained model).

Requests are "latest wins": a request made while a fit runs replaces any older pending one, and its
waiters get the newer answer. The worker changes no process-wide state (thread counts, warning
filters): the forest's own ``n_jobs`` bounds its threads.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["PreviewResult", "Previewer", "PreviewMixin", "check_model", "PREVIEW_FEATURE_BYTES",
           "MODEL_PREVIEW_PIXELS"]

#: Preview features cost 4 bytes x (4 filters x n_sigmas) x channels per pixel; beyond this budget
#: the preview is computed on a downsampled level instead (a 1024^2 RGB image fits at full resolution).
PREVIEW_FEATURE_BYTES = 256 * 2**20
#: A deep-learning preview larger than this (pixels) asks the user to zoom in instead of waiting minutes.
MODEL_PREVIEW_PIXELS = 4_000_000


@dataclass
class PreviewResult:
    """Class probabilities for (part of) an image, with where they lie.

    Attributes
    ----------
    probs : numpy.ndarray or None
        ``(K, h, w)`` float32; ``probs[k - 1]`` is class ``k``. None when no preview could be made
        (see ``message``).
    origin : (int, int)
        Full-resolution ``(y, x)`` of ``probs[:, 0, 0]``.
    factor : int
        Full-resolution pixels per ``probs`` pixel (1 unless the view was too large for the budget).
    region : (y0, y1, x0, x1)
        The full-resolution region that was asked for.
    source : {"features", "model"}
        Random forest on features, or the deep-learning model set with ``set_model``.
    image : int
        Image index.
    message : str or None
        Why ``probs`` is None.
    elapsed_s : float
        Time to compute it.
    """

    probs: np.ndarray | None
    origin: tuple = (0, 0)
    factor: int = 1
    region: tuple = (0, 0, 0, 0)
    source: str = "features"
    image: int = 0
    message: str | None = None
    elapsed_s: float = 0.0

    def full_resolution(self) -> np.ndarray | None:
        """``probs`` for exactly ``region`` at full resolution (nearest-neighbour upsampling)."""
        if self.probs is None:
            return None
        f = int(self.factor)
        up = self.probs if f == 1 else np.repeat(np.repeat(self.probs, f, axis=1), f, axis=2)
        y0, y1, x0, x1 = self.region
        oy, ox = self.origin
        return up[:, y0 - oy:y1 - oy, x0 - ox:x1 - ox]


_TWO_CLASSES = "paint at least two classes to see the preview"


def check_model(model) -> None:
    """One error for anything that is not a model (None is allowed: no model)."""
    if model is not None and not hasattr(model, "predict"):
        raise ValueError(f"model must be a pixlab Model with a predict() method, got {type(model).__name__}")


class Previewer:
    """The preview of one :class:`~pixlab.annotation.AnnotationSession`: classifier, model, worker thread.

    It reads the session only through its public accessors (``image_for_training``,
    ``label_store``, ``names``, ``n_classes``, ``channels``, ``per_channel``).
    """

    def __init__(self, session, classifier=None, on_error: Callable[[str], None] | None = None):
        self.session = session
        self._classifier = classifier
        self._on_error = on_error or (lambda message: None)
        self.model = None
        self._model_cache: dict = {}
        self._stats_norm: dict = {}
        self._cond = threading.Condition()
        self._request = None
        self._generation = 0
        self._waiters: list = []
        self._thread: threading.Thread | None = None
        self._busy = False
        self.last_preview: PreviewResult | None = None

    @property
    def classifier(self):
        """The preview's :class:`pixlab.training.forest.FeatureClassifier` (created on first use)."""
        if self._classifier is None:
            from pixlab.training.forest import FeatureClassifier

            # 32 trees instead of the 50 used for pseudo-labels: the refit + predict after each stroke
            # must stay under a second on 2 cores, and a preview does not need the last bit of quality.
            self._classifier = FeatureClassifier(n_estimators=32, max_depth=10, n_jobs=-1, seed=0)
        return self._classifier

    def set_model(self, model) -> None:
        self.model = model
        self._model_cache.clear()

    def normalization_changed(self) -> None:
        """The channel selection or normalization changed: forget the cached intensity statistics."""
        self._stats_norm.clear()

    # ------------------------------------------------------------------------------------------
    # Worker
    # ------------------------------------------------------------------------------------------
    def request(self, i: int, region=None, callback: Callable | None = None, warm: bool = False) -> Future:
        """Queue a preview of image ``i``; the Future resolves to a :class:`PreviewResult` (see the module doc)."""
        fut: Future = Future()
        with self._cond:
            if warm and (self._busy or self._request is not None):
                fut.set_result(None)  # a real preview is on its way; warming up must not replace it
                return fut
            self._generation += 1
            self._request = (self._generation, i, region, warm)
            self._waiters.append((fut, callback))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="pixlab-preview", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return fut

    def stop(self) -> None:
        """Stop the worker thread after the request in progress."""
        with self._cond:
            self._request = ("stop",)
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._request is None:
                    self._cond.wait()
                request, self._request = self._request, None
                if request[0] == "stop":
                    return
                self._busy = True
            _, i, region, warm = request
            try:
                result = self.compute(i, region, warm)
            except Exception as e:  # reported through the result, never raised in the worker
                result = PreviewResult(None, image=i, message=f"preview failed: {e}")
            with self._cond:
                self._busy = False
                if self._request is not None:
                    continue  # superseded while computing: the waiters get the newer result
                waiters, self._waiters = self._waiters, []
            if not warm:
                self.last_preview = result
            for fut, cb in waiters:
                if cb is not None:
                    try:
                        cb(result)
                    except Exception as e:
                        self._on_error(f"preview callback failed: {e}")
                if not fut.done():
                    fut.set_result(result)

    # ------------------------------------------------------------------------------------------
    # Computing
    # ------------------------------------------------------------------------------------------
    def _norm_stats(self, i: int, img):
        from pixlab.image.normalize import compute_stats

        s = self.session
        key = (i, tuple(s.channels) if s.channels is not None else None, s.per_channel)
        if key not in self._stats_norm:
            self._stats_norm[key] = compute_stats(img, per_channel=s.per_channel)
        return self._stats_norm[key]

    def _input(self, i: int, img, region, union):
        """Choose the level and crop the preview works on.

        The whole image is used when its features fit the memory budget (they then stay cached across
        strokes and views); otherwise the crop covering the view and the labelled pixels (``union``),
        at the smallest power-of-two downsample that fits - or, when that level would be more than
        twice as coarse as the view alone needs (strokes far away on a slide), the view and its
        surroundings at the view's level.

        Returns
        -------
        (factor, level shape, crop at that level, normalized crop, full-res box the labels come from)
        """
        from pixlab.image.normalize import apply
        from pixlab.training.forest import feature_margin

        clf = self.classifier
        ny, nx = img.shape[1:]
        n_sigmas = int(math.floor(math.log2(clf.sigma_max / clf.sigma_min))) + 1
        bytes_per_px = 4 * 4 * n_sigmas * img.n_channels

        def factor(box):
            f = 1
            while ((ny // f) * (nx // f) * bytes_per_px > PREVIEW_FEATURE_BYTES
                   and (box[1] - box[0]) * (box[3] - box[2]) / f**2 * bytes_per_px > PREVIEW_FEATURE_BYTES):
                f *= 2
            return f

        f = factor(union)
        if f > 2 * factor(region):
            # Strokes far from the view (elsewhere on a slide) would force a level too coarse to see
            # anything: fit on the strokes in and around the view only, at the view's own level.
            f = factor(region)
            m = feature_margin(clf.sigma_max) * f
            union = (max(0, region[0] - 4 * m), min(ny, region[1] + 4 * m),
                     max(0, region[2] - 4 * m), min(nx, region[3] + 4 * m))
        level = img.downsampled(f) if f > 1 else img
        ly, lx = level.shape[1:]
        if ly * lx * bytes_per_px <= PREVIEW_FEATURE_BYTES:
            crop = (0, ly, 0, lx)
        else:
            m = feature_margin(clf.sigma_max)
            crop = (max(0, union[0] // f - m), min(ly, -(-union[1] // f) + m),
                    max(0, union[2] // f - m), min(lx, -(-union[3] // f) + m))
        norm = apply(level.read(crop), self._norm_stats(i, img))
        return f, (ly, lx), crop, norm, union

    def compute(self, i: int, region, warm: bool = False) -> PreviewResult:
        """The preview of ``region`` of image ``i``, computed in the calling thread."""
        t0 = time.perf_counter()
        s = self.session
        img = s.image_for_training(i)
        ny, nx = img.shape[1:]
        if region is None:
            region = (0, ny, 0, nx)
        ry0, ry1, rx0, rx1 = (int(v) for v in region)
        ry0, ry1, rx0, rx1 = max(0, ry0), min(ny, ry1), max(0, rx0), min(nx, rx1)
        if ry1 <= ry0 or rx1 <= rx0:
            return PreviewResult(None, region=tuple(region), image=i,
                                 message=f"region {tuple(region)} is outside image '{s.names[i]}'")
        region = (ry0, ry1, rx0, rx1)
        if self.model is not None and not warm:
            return self._model_preview(i, img, region, t0)
        if warm:
            _, _, _, norm, _ = self._input(i, img, region, region)
            self.classifier.features(norm)
            return PreviewResult(None, region=region, image=i, message="features ready",
                                 elapsed_s=time.perf_counter() - t0)
        with s.lock:
            store = s.label_store(i)
            counts = store.bincount(s.n_classes + 1)
            box = store.bbox()
            k = s.n_classes
        if np.count_nonzero(counts[1:]) < 2:
            return PreviewResult(None, region=region, image=i, message=_TWO_CLASSES)
        union = (min(ry0, box[0]), max(ry1, box[1]), min(rx0, box[2]), max(rx1, box[3]))
        f, (ly, lx), crop, norm, union = self._input(i, img, region, union)
        with s.lock:
            # Block maximum, the trainer's rule (pixlab.training.samples.downsample_labels), so preview = training.
            lab = s.label_store(i).read_max((crop[0] * f, crop[1] * f, crop[2] * f, crop[3] * f), f)
        lab = lab[: crop[1] - crop[0], : crop[3] - crop[2]]
        if len(np.unique(lab[lab > 0])) < 2:
            near = union != (min(ry0, box[0]), max(ry1, box[1]), min(rx0, box[2]), max(rx1, box[3]))
            return PreviewResult(None, region=region, image=i, message=_TWO_CLASSES + (
                " near this view (strokes elsewhere on the image are too far away to fit at this zoom)"
                if near else ""))
        clf = self.classifier
        clf.fit(norm, lab, n_classes=k)
        ly0, ly1 = ry0 // f, min(ly, -(-ry1 // f))
        lx0, lx1 = rx0 // f, min(lx, -(-rx1 // f))
        probs = clf.predict_proba(norm, region=(ly0 - crop[0], ly1 - crop[0], lx0 - crop[2], lx1 - crop[2]))
        return PreviewResult(probs, (ly0 * f, lx0 * f), f, region, "features", i, None, time.perf_counter() - t0)

    def _model_preview(self, i: int, img, region, t0) -> PreviewResult:
        from pixlab.image.io import Image

        ry0, ry1, rx0, rx1 = region
        if (ry1 - ry0) * (rx1 - rx0) > MODEL_PREVIEW_PIXELS:
            return PreviewResult(None, region=region, image=i, source="model",
                                 message="the view is too large for the model preview; zoom in")
        key = (i, region, id(self.model))
        probs = self._model_cache.get(key)
        if probs is None:
            crop = Image(img.read(region), img.channel_names, img.pixel_size, name=img.name)
            probs = self.model.predict(crop)
            self._model_cache.clear()  # keep one: the view changes, the old one is not needed
            self._model_cache[key] = probs
        return PreviewResult(probs, (ry0, rx0), 1, region, "model", i, None, time.perf_counter() - t0)


class PreviewMixin:
    """The preview side of :class:`~pixlab.annotation.AnnotationSession` (it owns a :class:`Previewer`)."""

    @property
    def model(self):
        """The deep-learning model used for the preview (None: the feature classifier is used)."""
        return self._previewer.model

    def set_model(self, model) -> None:
        """Use a trained :class:`pixlab.Model` for the preview (None goes back to the feature classifier)."""
        check_model(model)
        self._previewer.set_model(model)

    @property
    def classifier(self):
        """The preview's :class:`pixlab.training.forest.FeatureClassifier` (created on first use)."""
        return self._previewer.classifier

    @property
    def last_preview(self) -> PreviewResult | None:
        """The last preview computed (None before the first)."""
        return self._previewer.last_preview

    def preview_async(self, region=None, callback: Callable | None = None, image=None, _warm: bool = False) -> Future:
        """Request a preview in the background; latest request wins.

        Parameters
        ----------
        region : (y0, y1, x0, x1), optional
            Full-resolution region to predict (default the whole image), e.g. the visible view.
        callback : callable, optional
            Called with the :class:`PreviewResult` in the worker thread when it is ready.
        image : int or str, optional
            Default the current image.

        Returns
        -------
        concurrent.futures.Future
            Resolves to a :class:`PreviewResult`. A request superseded by a newer one before it ran
            resolves to the newer one's result.
        """
        return self._previewer.request(self.index_of(image), region, callback, _warm)

    def preview(self, region=None, image=None, timeout: float | None = None) -> PreviewResult:
        """Compute the preview for ``region`` of an image and wait for it (see :meth:`preview_async`).

        Returns
        -------
        PreviewResult
            ``probs`` (K, h, w) float32 for the region (``factor`` > 1 only for regions beyond the
            feature memory budget), or ``probs=None`` with a ``message`` (e.g. fewer than two
            classes painted).
        """
        return self.preview_async(region, image=image).result(timeout)

    def warm_preview(self, image=None) -> Future:
        """Compute the preview features of an image in the background (e.g. when it is shown), so the
        first preview after a stroke only fits the forest. Any real request supersedes it."""
        return self.preview_async(None, image=image, _warm=True)
