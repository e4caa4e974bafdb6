"""The physical resolution contract: a model sees images at the pixel size it was trained at.

- Training records the pixel size (µm/px) of its images at level 0 in the bundle,
  ``model.metadata["pixel_size_um"]`` (:func:`training_pixel_size`); the network itself saw
  ``pixel_size_um x config.downsample``.
- Prediction brings each image to that network pixel size (:func:`working_image`): a pyramid level
  when one matches (a 40x slide with a 20x model reads the 2x level, no pixel of level 0), else a
  whole-number block mean from the nearest finer level, then, for the part of the factor that is not
  a whole number, a lazy bilinear resampling. Whatever was chosen is said in a warning, and the
  working image carries its true pixel size, so outputs written from it carry it too.
- An image without a pixel size, or a model without one, falls back to the model's ``downsample``
  (what pixlab always did); a model with a pixel size and an image without gives a warning that says
  how to set it.
"""

from __future__ import annotations

import math
import warnings

import dask.array as da
import numpy as np

from pixlab.image.image import Image

__all__ = ["training_pixel_size", "network_pixel_size", "working_image", "resample", "output_pixel_size",
           "TOLERANCE"]

#: Pixel sizes within 2 % are the same resolution (scanners' calibrations differ by about that).
TOLERANCE = 0.02


def _fmt(ps) -> str:
    return f"{ps[0]:.4g}" if abs(ps[0] - ps[1]) <= 1e-3 * ps[0] else f"{ps[0]:.4g} x {ps[1]:.4g}"


def training_pixel_size(images, downsample=1.0):
    """Level-0 pixel size ``[y, x]`` (µm) to record for a model, from its training images.

    Parameters
    ----------
    images : list of Image
        The training images as the trainer uses them (already reduced by ``downsample``).
    downsample : float
        The training downsample, by which their pixel size was multiplied.

    Returns
    -------
    list of two floats, or None
        The first image's pixel size; None if no image has one. Images that disagree by more than
        :data:`TOLERANCE`, or lack one, are named in a warning (the model then records the first).
    """
    ds = float(downsample)
    sizes = [None if im.pixel_size is None else (im.pixel_size[0] / ds, im.pixel_size[1] / ds) for im in images]
    known = [(im, ps) for im, ps in zip(images, sizes) if ps is not None]
    if not known:
        return None
    ref = known[0][1]
    odd = [f"'{im.name}' ({_fmt(ps)} µm)" for im, ps in known[1:]
           if any(abs(a - b) > TOLERANCE * b for a, b in zip(ps, ref))]
    missing = [f"'{im.name}'" for im, ps in zip(images, sizes) if ps is None]
    if odd or missing:
        warnings.warn(
            f"training images disagree on pixel size: the model records {_fmt(ref)} µm/px (from "
            f"'{known[0][0].name}')" + (f"; different: {', '.join(odd)}" if odd else "")
            + (f"; unknown: {', '.join(missing)}" if missing else "")
            + ". Train on images of one resolution, or give open_image(..., pixel_size=...)", stacklevel=3)
    return [float(ref[0]), float(ref[1])]


def network_pixel_size(model):
    """The pixel size (µm, ``(y, x)``) the network was trained at, or None when the bundle has none."""
    ps = (getattr(model, "metadata", None) or {}).get("pixel_size_um")
    if ps is None:
        return None
    if np.isscalar(ps):
        ps = (ps, ps)
    ds = float(model.config.downsample)
    return (float(ps[0]) * ds, float(ps[1]) * ds)


def output_pixel_size(img: Image, work: Image) -> dict:
    """The pixel size to write into an output made from ``work`` (the working image of ``img``).

    The physical size when it is known; otherwise, if the output is not at the input's scale, its
    size in input pixels (unit "pixel") so that viewers can still scale it onto the input; else none.

    Returns
    -------
    dict
        ``{"pixel_size": (y, x) or None, "pixel_unit": "µm" | "pixel"}`` (RasterWriter's arguments).

    Examples
    --------
    >>> img = Image(np.zeros((1, 100, 60)))
    >>> output_pixel_size(img, img.downsampled(4))
    {'pixel_size': (4.0, 4.0), 'pixel_unit': 'pixel'}
    """
    if work.pixel_size is not None:
        return {"pixel_size": tuple(work.pixel_size), "pixel_unit": "µm"}
    fy, fx = img.shape[1] / work.shape[1], img.shape[2] / work.shape[2]
    if abs(fy - 1) < 1e-9 and abs(fx - 1) < 1e-9:
        return {"pixel_size": None, "pixel_unit": "µm"}
    return {"pixel_size": (round(fy, 6), round(fx, 6)), "pixel_unit": "pixel"}


class _Resampled:
    """A lazily resampled (C, Y, X) array: what ``dask.array.from_array`` reads chunk by chunk.

    Separable bilinear interpolation on pixel centres (``src = (dst + 0.5) * step - 0.5``, edges
    clamped), computed per output chunk from the source window it needs, so the result does not
    depend on the chunking (tiles agree at their seams).
    """

    def __init__(self, source, out_yx, step_yx):
        self.source = source
        self.shape = (int(source.shape[0]), int(out_yx[0]), int(out_yx[1]))
        self.dtype = np.dtype(source.dtype)
        self.ndim = 3
        self.step = (float(step_yx[0]), float(step_yx[1]))

    def _axis(self, o0, o1, step, n):
        s = (np.arange(o0, o1) + 0.5) * step - 0.5
        lo = np.clip(np.floor(s).astype(np.int64), 0, n - 1)
        hi = np.clip(lo + 1, 0, n - 1)
        w = np.clip(s - np.floor(s), 0, 1).astype(np.float32)
        w[s < 0] = 0  # before the first centre: the edge value
        a = int(lo.min()) if lo.size else 0
        b = int(hi.max()) + 1 if hi.size else 0
        return lo - a, hi - a, w, a, b

    def __getitem__(self, key):
        cs, ys, xs = (key + (slice(None),) * 3)[:3]
        c0, c1, _ = cs.indices(self.shape[0])
        y0, y1, _ = ys.indices(self.shape[1])
        x0, x1, _ = xs.indices(self.shape[2])
        _, ny, nx = self.source.shape
        ly, hy, wy, ya, yb = self._axis(y0, y1, self.step[0], ny)
        lx, hx, wx, xa, xb = self._axis(x0, x1, self.step[1], nx)
        win = self.source[c0:c1, ya:yb, xa:xb]
        win = np.asarray(win.compute() if hasattr(win, "compute") else win, dtype=np.float32)
        rows = win[:, ly] * (1 - wy)[None, :, None] + win[:, hy] * wy[None, :, None]
        out = rows[:, :, lx] * (1 - wx) + rows[:, :, hx] * wx
        if np.issubdtype(self.dtype, np.integer):
            info = np.iinfo(self.dtype)
            out = np.clip(np.rint(out), info.min, info.max)
        return out.astype(self.dtype)


def resample(img: Image, pixel_size, chunk: int = 1024) -> Image:
    """``img`` resampled lazily (bilinear) to ``pixel_size`` µm/px; reads only what is asked of it.

    Parameters
    ----------
    img : Image
        Must have a pixel size.
    pixel_size : (float, float)
        Target µm per pixel ``(y, x)``.
    chunk : int
        Output chunk side (each chunk reads its source window once).
    """
    if img.pixel_size is None:
        raise ValueError(f"image '{img.name}' has no pixel size to resample from; open it with pixel_size=...")
    step = (pixel_size[0] / img.pixel_size[0], pixel_size[1] / img.pixel_size[1])
    out = (max(1, round(img.shape[1] / step[0])), max(1, round(img.shape[2] / step[1])))
    arr = da.from_array(_Resampled(img.data, out, step), chunks=(1, chunk, chunk), asarray=True,
                        name=False, meta=np.empty((0, 0, 0), img.dtype))
    return Image(arr, img.channel_names, tuple(pixel_size), None, img.path, img.name, _store=img._store)


def _level_for(img: Image, f: float):
    """(image reduced by n, n): the largest whole n <= f (within the tolerance); a stored pyramid level
    when one matches, else block means of the coarsest level whose factor divides n."""
    n = max(1, int(math.floor(f * (1 + TOLERANCE))))
    return (img.downsampled(n) if n > 1 else img), n


def working_image(img: Image, model=None, *, pixel_size=None, downsample=1.0):
    """``img`` at the model's network pixel size; returns ``(image, factor)``.

    Parameters
    ----------
    img : Image
    model : pixlab.Model, optional
        Gives the target (``metadata["pixel_size_um"] x config.downsample``) and the fallback
        ``config.downsample``.
    pixel_size : (float, float), optional
        Target pixel size when no model is given.
    downsample : float
        Fallback factor when no model is given.

    Returns
    -------
    (Image, float)
        The working image (its ``pixel_size`` is the true one) and level-0 pixels per working pixel
        (the mean of Y and X).
    """
    if model is not None:
        pixel_size = network_pixel_size(model)
        downsample = float(model.config.downsample)
    target = None if pixel_size is None else (float(pixel_size[0]), float(pixel_size[1]))
    if target is None or img.pixel_size is None:
        if target is not None:
            warnings.warn(
                f"image '{img.name}' has no pixel size but the model was trained at {_fmt(target)} µm/px; "
                f"predicting as if the image had the training images' resolution (downsample "
                f"{downsample:g}). If it does not, open it with pixlab.open_image(path, pixel_size=...) "
                f"and predict that image", stacklevel=3)
        ds = float(downsample)
        return (img.downsampled(ds) if ds > 1 else img), ds
    f = (target[0] / img.pixel_size[0], target[1] / img.pixel_size[1])
    fm = (f[0] + f[1]) / 2
    usual = float(downsample)
    if abs(fm - usual) <= TOLERANCE * usual and float(usual).is_integer():
        return (img.downsampled(int(usual)) if usual > 1 else img), usual  # same resolution as training
    if abs(fm - 1) <= TOLERANCE:  # already at the model's pixel size (e.g. a level or crop of a slide)
        return img, 1.0
    base, n = _level_for(img, fm)
    rest = fm / n
    if n == 1:
        how = ""
    elif any(base.data is lv for lv in img.levels):
        how = f"pyramid level {next(i for i, lv in enumerate(img.levels) if lv is base.data)} ({n}x)"
    else:
        how = f"{n}x{n} block means"
    if abs(rest - 1) > TOLERANCE:
        base = resample(base, target)
        how = (how + " then " if how else "") + f"bilinear resampling by {1 / rest:.3g}"
    warnings.warn(
        f"image '{img.name}' is at {_fmt(img.pixel_size)} µm/px and the model at {_fmt(target)} µm/px: "
        f"predicting on {how or 'the image as is'} ({base.shape[1]} x {base.shape[2]} px); outputs are "
        f"written at {_fmt(base.pixel_size)} µm/px", stacklevel=3)
    return base, float(img.shape[1] / base.shape[1] + img.shape[2] / base.shape[2]) / 2
