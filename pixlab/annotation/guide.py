"""Guided annotation: where to brush next and what to check, from a trained model and the session's labels.

Core module (no Jupyter imports); the brush annotator's "Guided annotation" panel
(:class:`pixlab.widgets.GuidePanel`) shows what it computes. It reads the session only through its
public accessors (``index_of``, ``image_of``, ``labels_snapshot``, ``labels_versions``, ``labels_of``).
"""

from __future__ import annotations

import threading

import numpy as np

from pixlab.annotation.preview import check_model

__all__ = ["AnnotationGuide", "GUIDE_OVERLAYS", "GUIDE_PIXELS"]

# The guide keeps whole-image probabilities and maps in memory (~(K + 6) x 4 bytes per pixel, ~0.3 GB
# at 8 Mpx and 3 classes); larger images are analysed in the visible region instead.
GUIDE_PIXELS = 8_000_000

#: Overlays offered by :meth:`AnnotationGuide.overlay` (and the annotator's "Overlay" menu).
GUIDE_OVERLAYS = ("none", "prediction", "confidence", "entropy", "disagreement", "loss")


class AnnotationGuide:
    """Guided annotation over a session and a trained model: where to brush next, and what to check.

    The core of the brush annotator's "Guided annotation" panel (plain Python, usable without it).
    It wraps :func:`pixlab.analysis.active.suggest_regions`, :func:`pixlab.analysis.diagnostics.pixel_maps` /
    :func:`~pixlab.analysis.diagnostics.map_overlay`, :func:`pixlab.analysis.active.label_refinements` and
    :func:`pixlab.analysis.diagnostics.evaluate` for the session's images and labels, and caches what they
    cost: the model's probabilities once per (model, image, region); maps and overlays once per
    labels version (a stroke, undo or new model invalidates them; redraws never recompute them).

    Parameters
    ----------
    session : AnnotationSession
    model : pixlab.Model, optional
        Set later with :meth:`set_model`; every analysis needs one.
    max_pixels : int
        Largest region (pixels) analysed at once; a larger image is analysed in a region (e.g. the
        visible one, see :meth:`analysis_region`).

    Notes
    -----
    Coordinates are full-resolution image pixels everywhere (tables have ``y0, y1, x0, x1``), also
    when only a region was analysed, so the annotator can pan to them at any zoom.
    """

    def __init__(self, session, model=None, *, max_pixels: int = GUIDE_PIXELS):
        self.session = session
        self.max_pixels = int(max_pixels)
        self._lock = threading.RLock()
        self._model = None
        self._probs = None     # (image, region, model, probs)
        self._maps = None      # (image, region, model, labels version, maps)
        self._overlay = None   # (maps key, name, opacity, rgba)
        self._report = None    # (model, label versions, report, session image index per sample)
        if model is not None:
            self.set_model(model)

    # ------------------------------------------------------------------------------------------
    @property
    def model(self):
        """The model analysed (None until :meth:`set_model`)."""
        return self._model

    def set_model(self, model) -> None:
        """Analyse with ``model`` (a :class:`pixlab.Model`; None switches the guide off); drops every cache."""
        check_model(model)
        with self._lock:
            self._model = model
            self._probs = self._maps = self._overlay = self._report = None

    def _require_model(self):
        if self._model is None:
            raise ValueError("no model to guide annotation yet; train one or call set_model(model) first")
        return self._model

    def _region(self, i: int, region) -> tuple:
        ny, nx = self.session.image_of(i).shape[1:]
        if region is None:
            region = (0, ny, 0, nx)
        try:
            y0, y1, x0, x1 = (int(v) for v in region)
        except (TypeError, ValueError):
            raise ValueError(f"region must be (y0, y1, x0, x1) in image pixels, got {region!r}") from None
        y0, y1, x0, x1 = max(0, y0), min(ny, y1), max(0, x0), min(nx, x1)
        if y1 <= y0 or x1 <= x0:
            raise ValueError(f"region {tuple(region)} is outside image '{self.session.names[i]}' of size "
                             f"(Y={ny}, X={nx})")
        if (y1 - y0) * (x1 - x0) > self.max_pixels:
            raise ValueError(
                f"region of {y1 - y0} x {x1 - x0} px of image '{self.session.names[i]}' is more than the "
                f"{self.max_pixels:,} px the guide analyses at once; zoom in (or pass a smaller region) and refresh")
        return y0, y1, x0, x1

    def analysis_region(self, view_region=None, image=None):
        """What to analyse: None (the whole image) when it fits ``max_pixels``, else ``view_region``.

        Raises
        ------
        ValueError
            The image is too large and ``view_region`` is missing or too large too (the message says
            to zoom in).
        """
        i = self.session.index_of(image)
        ny, nx = self.session.image_of(i).shape[1:]
        if ny * nx <= self.max_pixels:
            return None
        if view_region is None:
            raise ValueError(f"image '{self.session.names[i]}' has {ny} x {nx} px, more than the "
                             f"{self.max_pixels:,} px the guide analyses at once; give a region (zoom in)")
        return self._region(i, view_region)

    def probabilities(self, image=None, region=None) -> np.ndarray:
        """The model's ``(K, h, w)`` probabilities of ``region`` (default the whole image), cached per model."""
        from pixlab.image.io import Image

        model = self._require_model()
        i = self.session.index_of(image)
        reg = self._region(i, region)
        with self._lock:
            c = self._probs
            if c is not None and c[0] == i and c[1] == reg and c[2] is model:
                return c[3]
            img = self.session.image_of(i)
            if reg != (0, img.shape[1], 0, img.shape[2]):
                img = Image(img.read(reg), img.channel_names, img.pixel_size, name=img.name)
            probs = model.predict(img)  # all channels: predict() picks the model's by name
            self._probs = (i, reg, model, probs)
            return probs

    def _labels_crop(self, i: int, reg) -> tuple[int, np.ndarray]:
        return self.session.labels_snapshot(reg, i)

    def maps(self, image=None, region=None) -> dict:
        """:func:`pixlab.analysis.diagnostics.pixel_maps` of ``region`` with the current labels, cached per labels version.

        Returns
        -------
        dict of str -> ndarray (h, w)
            ``prediction``, ``confidence``, ``entropy``, ``margin``, ``loss``, ``disagreement``; the
            arrays start at full-res pixel ``(region y0, region x0)``.
        """
        from pixlab.analysis.maps import pixel_maps

        model = self._require_model()
        i = self.session.index_of(image)
        reg = self._region(i, region)
        with self._lock:
            probs = self.probabilities(i, reg)
            version, lab = self._labels_crop(i, reg)
            c = self._maps
            if c is not None and c[0] == i and c[1] == reg and c[2] is model and c[3] == version:
                return c[4]
            maps = pixel_maps(None, None, lab, probs=probs)
            self._maps = (i, reg, model, version, maps)
            return maps

    def overlay(self, name: str, opacity: float = 0.6, image=None, region=None):
        """RGBA ``(h, w, 4)`` uint8 of one map for the annotator's overlay layer (None for ``"none"``).

        Parameters
        ----------
        name : {"none", "prediction", "confidence", "entropy", "disagreement", "loss"}
            ``prediction`` uses the model's class colours (:func:`pixlab.image.display.label_overlay`); the
            others :func:`pixlab.analysis.diagnostics.map_overlay` with the colour maps and ranges of notebook 03's
            figures (loss up to its 99th percentile). Unlabelled pixels are transparent in loss and
            disagreement.
        opacity : float
            Alpha of the coloured pixels, 0-1.
        """
        from pixlab.analysis.maps import MAP_STYLES, map_overlay
        from pixlab.image.display import label_overlay

        if name not in GUIDE_OVERLAYS:
            raise ValueError(f"overlay {name!r} is not known; choose one of {', '.join(GUIDE_OVERLAYS)}")
        if name == "none":
            return None
        with self._lock:
            maps = self.maps(image, region)
            c = self._overlay
            if c is not None and c[0] is maps and c[1] == name and c[2] == opacity:
                return c[3]
            if name == "prediction":
                colours = getattr(self._model, "colours", None)
                colours = self.session.colours if colours is None or not len(colours) else colours
                rgba = label_overlay(maps["prediction"], colours, opacity)
            else:
                cmap, lo, hi = MAP_STYLES[name]
                v = maps[name]
                if hi is None:  # as plot_maps: a few confident mistakes (loss ~16) must not wash out the rest
                    hi = max(float(np.nanpercentile(v, 99)), 1e-6) if np.isfinite(v).any() else 1.0
                rgba = map_overlay(v, cmap, lo, hi, opacity)
            self._overlay = (maps, name, opacity, rgba)
            return rgba

    def suggestions(self, n: int = 5, box=64, measure: str = "entropy", image=None, region=None):
        """"Annotate here next": :func:`pixlab.analysis.active.suggest_regions` with the current labels.

        Returns
        -------
        pandas.DataFrame
            ``rank, y0, y1, x0, x1, score, uncertainty, labelled``, best first, in full-res pixels.
        """
        from pixlab.analysis.active import suggest_regions

        self._require_model()
        i = self.session.index_of(image)
        reg = self._region(i, region)
        probs = self.probabilities(i, reg)
        _, lab = self._labels_crop(i, reg)
        df = suggest_regions(None, None, lab, box=box, n=n, measure=measure, probs=probs)
        return _shift(df, reg)

    def refinements(self, min_confidence: float = 0.9, min_pixels: int = 5, image=None, region=None):
        """Possible label mistakes: :func:`pixlab.analysis.active.label_refinements` with the current labels.

        Returns
        -------
        pandas.DataFrame
            ``class, predicted, confidence, pixels, stroke_fraction, y0, y1, x0, x1`` (full-res), most
            suspicious first.
        """
        from pixlab.analysis.active import label_refinements

        model = self._require_model()
        i = self.session.index_of(image)
        reg = self._region(i, region)
        probs = self.probabilities(i, reg)
        _, lab = self._labels_crop(i, reg)
        names = list(getattr(model, "class_names", None) or self.session.class_names)
        df = label_refinements(None, None, lab, probs=probs, min_confidence=min_confidence,
                               min_pixels=min_pixels, class_names=names)
        return _shift(df, reg)

    def report(self):
        """:func:`pixlab.analysis.diagnostics.evaluate` of the model on every labelled image of the session (cached).

        Returns
        -------
        pixlab.analysis.diagnostics.Report
            Its ``tiles["image"]`` indexes the labelled images in session order; :meth:`confused_tiles`
            adds the session's image index.
        """
        from pixlab.analysis.evaluate import evaluate

        model = self._require_model()
        s = self.session
        versions = s.labels_versions()
        c = self._report
        if c is not None and c[0] is model and c[1] == versions:
            return c[2]
        samples, index = [], []
        for i in range(s.n_images):
            try:
                if not s.label_store(i).any():
                    continue
                lab = s.labels_of(i)
            except ValueError:  # an unusable labels file: label_problems() reports it
                continue
            samples.append((s.image_of(i), lab))
            index.append(i)
        if not samples:
            raise ValueError("no image has labels yet; brush strokes before reviewing the model")
        report = evaluate(model, samples)
        with self._lock:
            self._report = (model, versions, report, index)
        return report

    def confusions(self, n: int = 5):
        """The largest confusion-matrix cells (``Report.top_confusions`` of all labels)."""
        return self.report().top_confusions("all", n=n)

    def confused_tiles(self, true_class, predicted_class, split: str | None = None):
        """Review tiles behind one confusion cell (``Report.tiles_with_confusion``), plus ``session_image``.

        Returns
        -------
        pandas.DataFrame
            The report's tile rows (full-res ``y0, y1, x0, x1``), most such pixels first, with
            ``session_image`` = the image's index in the session.
        """
        report = self.report()
        index = self._report[3]
        df = report.tiles_with_confusion(true_class, predicted_class, split=split)
        return df.assign(session_image=[index[int(k)] for k in df["image"]])


def _shift(df, region):
    """Table coordinates of a crop starting at region's corner -> full-res image coordinates."""
    if len(df) and (region[0] or region[2]):
        df = df.copy()
        df[["y0", "y1"]] += region[0]
        df[["x0", "x1"]] += region[2]
    return df
