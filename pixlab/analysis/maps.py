"""Per-pixel diagnostic maps of a whole image: confidence, entropy, margin, loss, disagreement."""

from __future__ import annotations

import math

import numpy as np

from pixlab.analysis.active import _probs
from pixlab.analysis.metrics import EPS as _EPS
from pixlab.labels.classids import argmax_labels

__all__ = ["pixel_maps", "map_overlay", "MAP_STYLES"]


def pixel_maps(model, image, labels=None, probs=None) -> dict:
    """Per-pixel diagnostic maps of a whole image (full resolution).

    Parameters
    ----------
    model : pixlab.Model or None
        Used to predict ``image`` unless ``probs`` is given.
    image : Image, array or path
    labels : array_like (Y, X), optional
        Sparse labels; adds the ``loss`` and ``disagreement`` maps.
    probs : array (K, Y, X), optional
        ``model.predict(image)`` when already computed.

    Returns
    -------
    dict of str -> ndarray (Y, X)
        ``prediction`` (class ids 1..K, uint8; uint16 beyond 255 classes), ``confidence`` (max probability), ``entropy``
        (normalized to 0..1 by log K), ``margin`` (best minus second-best probability); with labels also
        ``loss`` (cross-entropy, NaN on unlabelled pixels) and ``disagreement`` (1 where the prediction
        differs from the label, 0 where it agrees, NaN on unlabelled pixels).
    """
    p = _probs(model, image, probs)
    K = p.shape[0]
    srt = np.sort(p, axis=0)
    out = {
        "prediction": argmax_labels(p),
        "confidence": srt[-1],
        "entropy": (-(p * np.log(np.clip(p, _EPS, 1))).sum(0) / math.log(K)).astype(np.float32),
        "margin": (srt[-1] - srt[-2]) if K > 1 else np.ones_like(srt[-1]),
    }
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != p.shape[1:]:
            raise ValueError(f"labels have shape {lab.shape} but the prediction is {p.shape[1:]}; "
                             f"give the labels of this image")
        if lab.max() > K:
            raise ValueError(f"labels contain class id {int(lab.max())} but the model has {K} classes")
        m = lab > 0
        p_true = np.take_along_axis(p, (lab.astype(np.int64) - 1).clip(0)[None], 0)[0]
        out["loss"] = np.where(m, -np.log(np.clip(p_true, _EPS, 1)), np.nan).astype(np.float32)
        out["disagreement"] = np.where(m, (out["prediction"] != lab).astype(np.float32), np.nan).astype(np.float32)
    return out


#: Colour map and value range per pixel map (None = the map's 99th percentile), shared by
#: :func:`plot_maps` and the brush annotator's overlays so both look the same.
MAP_STYLES = {"confidence": ("viridis", 0, 1), "entropy": ("magma", 0, 1), "margin": ("viridis", 0, 1),
              "loss": ("inferno", 0, None), "disagreement": ("coolwarm", 0, 1)}


def map_overlay(values, cmap: str = "magma", vmin: float | None = 0.0, vmax: float | None = None,
                opacity: float = 0.6) -> np.ndarray:
    """Colour a (Y, X) map as an RGBA overlay; NaN pixels are transparent (for the brush annotator).

    Parameters
    ----------
    values : array_like (Y, X)
    cmap : str
        A matplotlib colormap name.
    vmin, vmax : float, optional
        Colour range (default: data min/max of finite values).
    opacity : float
        Alpha of the finite pixels, 0-1.

    Returns
    -------
    numpy.ndarray (Y, X, 4) uint8
    """
    import matplotlib

    v = np.asarray(values, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError(f"values must be a (Y, X) map, got shape {v.shape}")
    if not 0 <= float(opacity) <= 1:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity!r}")
    fin = np.isfinite(v)
    lo = float(np.nanmin(v[fin])) if vmin is None and fin.any() else float(vmin or 0.0)
    hi = float(np.nanmax(v[fin])) if vmax is None and fin.any() else float(vmax if vmax is not None else 1.0)
    scaled = np.clip((np.where(fin, v, lo) - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    rgba = matplotlib.colormaps[cmap](scaled, bytes=True)
    rgba[..., 3] = np.where(fin, round(float(opacity) * 255), 0)
    return rgba
