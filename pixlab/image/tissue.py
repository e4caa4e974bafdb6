"""Where the tissue is: a cheap foreground mask from a low-resolution pyramid level.

Whole slides are mostly glass. :func:`tissue_mask` finds the tissue on a small level (never level 0
of a pyramid), so that inference and previews can skip empty tiles:

- brightfield (RGB: H&E, IHC): Otsu's threshold on the saturation, ``(max - min) / max`` of R, G, B
  (glass is white or grey: unsaturated; stained tissue is coloured; black scanner padding has
  saturation 0 too);
- fluorescence (anything else): Otsu's threshold on the brightest channel, each channel scaled by its
  99.5th percentile (tissue is bright in at least one channel, background is dark in all);
- then small specks are removed, small holes filled, and the mask grown by ``dilate_px`` so that tiles
  at the tissue's edge keep their context.

Every step can be overridden: ``method="threshold"`` with your ``threshold``, or ``mask=`` your own
array/file. When the level shows no contrast (all tissue or all glass) the mask is all True and a
warning says so: skipping nothing is the safe failure.

Examples
--------
>>> import numpy as np, pixlab
>>> rgb = np.full((512, 512, 3), 240, np.uint8); rgb[100:300, 200:400] = (150, 60, 140)
>>> tm = tissue_mask(pixlab.open_image(rgb), dilate_px=0)
>>> tm.covers(150, 200, 250, 300), tm.covers(400, 500, 0, 100)
(True, False)
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["TissueMask", "tissue_mask", "METHODS", "MASK_MAX_PIXELS"]

METHODS = ("otsu", "threshold")

#: tissue_mask works on the finest level with at most this many pixels (about 2048 x 2048): enough
#: detail for 256 px tiles of a 100,000 px slide, and read in well under a second.
MASK_MAX_PIXELS = 2048 * 2048

# Below this spread between the Otsu classes' means (in the feature's 0..1 units) the level has no
# foreground/background contrast and Otsu would split noise.
_MIN_CONTRAST = 0.05


@dataclass
class TissueMask:
    """A boolean tissue mask at a low resolution, and how it maps onto level 0.

    Attributes
    ----------
    mask : numpy.ndarray
        ``(y, x)`` bool, True where there is tissue (after removing specks and dilating).
    downsample : float
        Level-0 pixels per mask pixel (the mean of the Y and X factors).
    shape : (int, int)
        Level-0 ``(Y, X)`` of the image the mask belongs to.
    threshold : float or None
        The threshold used on the feature (saturation or scaled intensity, 0..1); None for a given mask.
    method : str
        "otsu", "threshold" or "mask".
    """

    mask: np.ndarray
    downsample: float
    shape: tuple
    threshold: float | None = None
    method: str = "mask"

    @classmethod
    def from_array(cls, mask, shape) -> "TissueMask":
        """Wrap a boolean ``(y, x)`` mask of an image whose level 0 is ``shape`` ``(Y, X)``.

        The mask may have any resolution with the image's aspect ratio (e.g. a QuPath export at 1/32).
        """
        mask = np.asarray(mask)
        if mask.ndim == 3 and mask.shape[0] == 1:
            mask = mask[0]
        if mask.ndim != 2 or 0 in mask.shape:
            raise ValueError(f"a tissue mask must be a 2-D (y, x) array, got shape {mask.shape}")
        ny, nx = (int(v) for v in shape[-2:])
        fy, fx = ny / mask.shape[0], nx / mask.shape[1]
        if abs(fy - fx) > 0.02 * max(fy, fx) + max(fy, fx) / min(mask.shape):
            raise ValueError(
                f"tissue mask of shape {mask.shape} does not have the aspect ratio of the image "
                f"(Y={ny}, X={nx}); give a mask of the whole image at any scale, e.g. shape "
                f"({max(1, round(ny / fx))}, {mask.shape[1]})")
        return cls(mask.astype(bool), float((fy + fx) / 2), (ny, nx), None, "mask")

    @property
    def fraction(self) -> float:
        """Fraction of the image that the mask marks as tissue (0..1)."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def for_shape(self, shape) -> "TissueMask":
        """The same mask with coordinates of an image of size ``shape`` ``(Y, X)`` covering the same
        area, e.g. the working image of a prediction at the model's downsample:
        ``tm.for_shape(work.shape[1:]).covers(...)`` takes that image's pixel coordinates."""
        ny, nx = (int(v) for v in shape[-2:])
        ds = (ny / self.mask.shape[0] + nx / self.mask.shape[1]) / 2
        return TissueMask(self.mask, ds, (ny, nx), self.threshold, self.method)

    def _box(self, y0, y1, x0, x1):
        my, mx = self.mask.shape
        sy, sx = self.shape[0] / my, self.shape[1] / mx
        return (max(0, int(math.floor(y0 / sy))), min(my, int(math.ceil(y1 / sy))),
                max(0, int(math.floor(x0 / sx))), min(mx, int(math.ceil(x1 / sx))))

    def covers(self, y0, y1, x0, x1) -> bool:
        """True if the level-0 box ``[y0, y1) x [x0, x1)`` holds any tissue (dilation margin included)."""
        a, b, c, d = self._box(y0, y1, x0, x1)
        return bool(b > a and d > c and self.mask[a:b, c:d].any())

    def region(self, y0, y1, x0, x1, out_shape=None) -> np.ndarray:
        """The mask over a level-0 box, nearest-neighbour resized to ``out_shape`` (default: box size).

        For previews that blank the background pixels of what they show.
        """
        y0, y1, x0, x1 = (int(v) for v in (y0, y1, x0, x1))
        h, w = out_shape if out_shape is not None else (y1 - y0, x1 - x0)
        my, mx = self.mask.shape
        ys = np.clip(((y0 + (np.arange(h) + 0.5) * (y1 - y0) / h) * my / self.shape[0]).astype(int), 0, my - 1)
        xs = np.clip(((x0 + (np.arange(w) + 0.5) * (x1 - x0) / w) * mx / self.shape[1]).astype(int), 0, mx - 1)
        return self.mask[np.ix_(ys, xs)]

    def __repr__(self) -> str:
        return (f"TissueMask(method={self.method!r}, mask={self.mask.shape}, downsample={self.downsample:.3g}, "
                f"fraction={self.fraction:.3f}, threshold={self.threshold})")


def _pick_level(img, level, max_pixels):
    n = len(img.levels)
    if level is not None:
        if not 0 <= int(level) < n:
            raise ValueError(f"level={level} does not exist; image '{img.name}' has levels 0..{n - 1}")
        return int(level), 1
    for i in range(n):  # the finest level that fits the budget
        ly, lx = img.levels[i].shape[1:]
        if ly * lx <= max_pixels:
            return i, 1
    # No level is small enough (a big image without a pyramid): average blocks of the smallest one.
    last = n - 1
    ly, lx = img.levels[last].shape[1:]
    f = math.ceil(math.sqrt(ly * lx / max_pixels))
    warnings.warn(
        f"image '{img.name}' has no pyramid level of at most {max_pixels} pixels: the tissue mask reads its "
        f"{ly} x {lx} level once, in chunks; write the image with a pyramid "
        f"(pixlab.image.io.write_ome_tiff) to make this instant", stacklevel=3)
    return last, f


def _read_small(img, level, f):
    from pixlab.image.image import block_mean

    arr = img.levels[level]
    if f > 1:
        import dask.array as da

        arr = block_mean(arr if isinstance(arr, da.Array) else da.from_array(arr, chunks=(1, 2048, 2048)), f)
    return np.asarray(arr.compute() if hasattr(arr, "compute") else arr)


def _is_brightfield(img) -> bool:
    names = [c.lower() for c in img.channel_names]
    return img.n_channels == 3 and (img.is_rgb or names == ["red", "green", "blue"])


def _feature(small: np.ndarray, brightfield: bool) -> np.ndarray:
    x = small.astype(np.float32)
    if brightfield:
        mx, mn = x.max(axis=0), x.min(axis=0)
        return np.divide(mx - mn, mx, out=np.zeros_like(mx), where=mx > 0)
    flat = x.reshape(x.shape[0], -1)
    lo = np.percentile(flat, 0.5, axis=1)[:, None, None]
    hi = np.percentile(flat, 99.5, axis=1)[:, None, None]
    scaled = np.clip((x - lo) / np.maximum(hi - lo, 1e-12), 0, 1)
    return scaled.max(axis=0)


def _load_user_mask(mask, shape):
    if isinstance(mask, TissueMask):
        return mask
    if isinstance(mask, (str, os.PathLike)):
        from pixlab.image.open import open_image

        m = open_image(mask)
        lv = m.levels[-1] if m.shape[1] * m.shape[2] > MASK_MAX_PIXELS else m.data
        mask = np.asarray(lv.compute() if hasattr(lv, "compute") else lv).max(axis=0) > 0
    return TissueMask.from_array(np.asarray(mask) > 0 if np.asarray(mask).dtype != bool else mask, shape)


def tissue_mask(img, *, method="otsu", level=None, min_area_px=4096, dilate_px=64, threshold=None,
                mask=None, brightfield=None, max_pixels=MASK_MAX_PIXELS) -> TissueMask:
    """Find the tissue on a low-resolution level of ``img``.

    Parameters
    ----------
    img : Image or anything :func:`pixlab.open_image` accepts
    method : {"otsu", "threshold"}
        Otsu's automatic threshold, or ``threshold`` given by you.
    level : int, optional
        Pyramid level to use; default: the finest with at most ``max_pixels`` pixels.
    min_area_px : float
        Tissue pieces and holes smaller than this many level-0 pixels are removed / filled (dust,
        pen specks; lumens stay tissue context).
    dilate_px : float
        Grow the mask by this many level-0 pixels so tiles at the tissue's edge are kept.
    threshold : float, optional
        For ``method="threshold"``: tissue where the feature (saturation for brightfield, scaled
        intensity for fluorescence, both 0..1) is above it.
    mask : array, path or TissueMask, optional
        Your own mask (any scale with the image's aspect ratio; non-zero = tissue); the other
        settings are then ignored.
    brightfield : bool, optional
        Use saturation (True) or intensity (False); default: True for RGB images.
    max_pixels : int
        Pixel budget of the level used.

    Returns
    -------
    TissueMask
    """
    from pixlab.image.open import open_image

    img = open_image(img)
    shape = tuple(int(v) for v in img.shape[1:])
    if mask is not None:
        return _load_user_mask(mask, shape)
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if method == "threshold":
        if threshold is None or not (0 <= float(threshold) <= 1):
            raise ValueError(f"method='threshold' needs threshold= between 0 and 1 (the feature's range), "
                             f"got {threshold!r}; e.g. threshold=0.1")
    lv, f = _pick_level(img, level, int(max_pixels))
    small = _read_small(img, lv, f)
    bf = _is_brightfield(img) if brightfield is None else bool(brightfield)
    feat = _feature(small, bf)
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    feat = ndimage.uniform_filter(feat, size=3)  # 3 px smoothing: Otsu then splits regions, not noise
    ds_y, ds_x = shape[0] / feat.shape[0], shape[1] / feat.shape[1]
    ds = (ds_y + ds_x) / 2
    if method == "otsu":
        t = float(threshold_otsu(feat)) if np.ptp(feat) > 0 else float(feat.flat[0])
        below, above = feat[feat <= t], feat[feat > t]
        if not above.size or not below.size or above.mean() - below.mean() < _MIN_CONTRAST:
            warnings.warn(
                f"image '{img.name}' shows no tissue/background contrast at level {lv}: the tissue mask "
                f"keeps everything; give method='threshold', threshold=... or mask=... to skip background",
                stacklevel=2)
            return TissueMask(np.ones(feat.shape, bool), ds, shape, t, method)
    else:
        t = float(threshold)
    tissue = feat > t
    from skimage.morphology import remove_small_holes, remove_small_objects

    area = max(0, int(min_area_px / (ds_y * ds_x)))
    if area >= 1:
        tissue = remove_small_objects(tissue, max_size=area)
        tissue = remove_small_holes(tissue, max_size=area)
    r = dilate_px / ds
    if r > 0 and tissue.any():
        # Distance transform instead of a disk structuring element: linear time for any radius.
        tissue = ndimage.distance_transform_edt(~tissue) <= r
    return TissueMask(tissue, ds, shape, t, method)
