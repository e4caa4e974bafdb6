"""Small sample data for tutorials, tests and benchmarks.

- :func:`sample_ihc`: a real brightfield IHC photograph (bundled with scikit-image) with sparse
  brush-stroke labels shipped in ``pixlab/data/ihc_strokes.png``.
- :func:`synthetic_fluorescence`: fast, seeded fluorescence-like images with a known truth mask.
- :func:`strokes_from_mask`: turn a dense mask into sparse strokes, the way a person annotates.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
from scipy import ndimage as ndi
from skimage import color, draw, filters, morphology

from pixlab.image.io import Image, open_image

__all__ = [
    "IHC_CLASSES",
    "sample_ihc",
    "sample_ihc_reference",
    "synthetic_fluorescence",
    "strokes_from_mask",
]

IHC_CLASSES = ["background", "hematoxylin", "dab"]
_IHC_STROKES = "ihc_strokes.png"


def _ihc_rgb() -> np.ndarray:
    from skimage import data

    return data.immunohistochemistry()  # (512, 512, 3) uint8, shipped inside scikit-image


def _ihc_reference(rgb: np.ndarray) -> np.ndarray:
    """Dense (Y, X) uint8 mask, 1=background, 2=hematoxylin, 3=DAB, from colour deconvolution."""
    hed = color.rgb2hed(rgb)
    # Smoothing before Otsu: DAB fills whole cell sheets (blur more), nuclei are small (blur less).
    h = filters.gaussian(hed[..., 0], sigma=1.5)
    d = filters.gaussian(hed[..., 2], sigma=3)
    # area_opening/closing on 0/1 images = drop specks / fill holes below the area (pixels); stable API
    # across scikit-image versions, unlike remove_small_objects' min_size -> max_size rename.
    nuclei = morphology.area_opening((h > filters.threshold_otsu(h)).astype(np.uint8), 31) > 0
    dab = morphology.area_closing((d > filters.threshold_otsu(d)).astype(np.uint8), 65) > 0
    ref = np.ones(rgb.shape[:2], np.uint8)
    ref[nuclei] = 2
    ref[dab] = 3  # DAB wins: brown tissue with counterstained nuclei is still "DAB tissue"
    return ref


def sample_ihc() -> tuple[Image, np.ndarray, list[str]]:
    """Brightfield IHC sample (512 x 512 RGB) with sparse brush-stroke labels.

    Returns
    -------
    image : Image
        ``(3, 512, 512)`` uint8, channels "Red", "Green", "Blue".
    labels : numpy.ndarray
        ``(512, 512)`` uint8; 0 = unlabelled, 1..3 = ``class_names``.
    class_names : list of str
        ``["background", "hematoxylin", "dab"]``.

    Notes
    -----
    The strokes were drawn by ``scripts/make_sample_labels.py`` inside :func:`sample_ihc_reference`.
    """
    from PIL import Image as PILImage

    image = open_image(_ihc_rgb())
    image.name = "ihc"
    with (resources.files("pixlab") / "data" / _IHC_STROKES).open("rb") as f:
        labels = np.asarray(PILImage.open(f)).astype(np.uint8)
    return image, labels, list(IHC_CLASSES)


def sample_ihc_reference() -> np.ndarray:
    """Dense reference mask for :func:`sample_ihc` (for benchmarks and diagnostics, not ground truth).

    Computed by colour deconvolution (``skimage.color.rgb2hed``), Gaussian smoothing and Otsu thresholds.

    Returns
    -------
    numpy.ndarray
        ``(512, 512)`` uint8 with 1=background, 2=hematoxylin, 3=dab.
    """
    return _ihc_reference(_ihc_rgb())


def synthetic_fluorescence(shape=(256, 256), n_channels=2, n_nuclei=30, seed=0, dtype=np.uint16):
    """Seeded fluorescence-like image with nuclei and a truth mask.

    Parameters
    ----------
    shape : (int, int)
        ``(Y, X)``.
    n_channels : int
        Channel 0 "DAPI" (bright nuclei), 1 "Membrane" (rings around nuclei), then "Marker k"
        (random subsets of nuclei, dimmer, plus noise).
    n_nuclei : int
        Number of elliptical nuclei.
    seed : int
        Same seed, same arrays.
    dtype : numpy dtype
        uint8, uint16 or a float type (photon counts as floats).

    Returns
    -------
    image : Image
        ``(n_channels, Y, X)``.
    truth : numpy.ndarray
        ``(Y, X)`` uint8, 1 = background, 2 = nuclei.
    """
    ny, nx = (int(s) for s in shape)
    if ny < 16 or nx < 16:
        raise ValueError(f"shape must be at least (16, 16), got {shape!r}; e.g. (256, 256)")
    if int(n_channels) < 1:
        raise ValueError(f"n_channels must be >= 1, got {n_channels!r}")
    dtype = np.dtype(dtype)
    if not (dtype in (np.uint8, np.uint16) or np.issubdtype(dtype, np.floating)):
        raise ValueError(f"dtype must be uint8, uint16 or float, got {dtype}")
    rng = np.random.default_rng(seed)

    nuclei = np.zeros((ny, nx), bool)
    marker_nuclei = [np.zeros((ny, nx), bool) for _ in range(max(0, n_channels - 2))]
    brightness = np.zeros((ny, nx), np.float32)
    r_max = max(3.0, min(ny, nx) / 25)
    for _ in range(int(n_nuclei)):
        cy, cx = rng.uniform(0, ny), rng.uniform(0, nx)
        r_major = rng.uniform(0.7, 1.0) * r_max
        r_minor = r_major * rng.uniform(0.6, 1.0)
        rr, cc = draw.ellipse(cy, cx, r_major, r_minor, shape=(ny, nx), rotation=rng.uniform(0, np.pi))
        nuclei[rr, cc] = True
        brightness[rr, cc] = rng.uniform(0.6, 1.0)  # nuclei differ in DNA content
        for m in marker_nuclei:
            if rng.random() < 0.4:
                m[rr, cc] = True

    # Uneven illumination: a smooth ramp plus a broad bump, so normalisation has work to do.
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    illum = 0.7 + 0.3 * (yy / ny) * (xx / nx) + 0.2 * np.exp(-(((yy - ny * rng.random()) ** 2 +
                                                                (xx - nx * rng.random()) ** 2) / (0.3 * ny * nx)))
    ring = ndi.binary_dilation(nuclei, morphology.disk(2)) & ~nuclei

    peak = 200.0 if dtype == np.uint8 else 3000.0  # photon counts at the brightest pixel
    background = 0.08 * peak
    channels = [filters.gaussian(brightness, sigma=1.2, preserve_range=True)]
    if n_channels >= 2:
        channels.append(0.6 * filters.gaussian(ring.astype(np.float32), sigma=1.0, preserve_range=True))
    for m in marker_nuclei:
        channels.append(0.4 * filters.gaussian(m.astype(np.float32), sigma=1.5, preserve_range=True))
    expected = np.stack(channels) * (peak - background) * illum + background * illum
    counts = rng.poisson(expected).astype(np.float32)  # shot noise
    if dtype.kind == "u":
        counts = np.clip(counts, 0, np.iinfo(dtype).max)
    data = counts.astype(dtype)

    names = ["DAPI", "Membrane"][:n_channels] + [f"Marker {k}" for k in range(1, n_channels - 1)]
    truth = np.where(nuclei, 2, 1).astype(np.uint8)
    return Image(data, names, name="synthetic_fluorescence"), truth


def _draw_strokes(region: np.ndarray, n: int, length, rng, tries: int = 20) -> np.ndarray:
    """Centre lines of ``n`` straight strokes that stay inside ``region`` (bool); returns a bool mask."""
    ys, xs = np.nonzero(region)
    ny, nx = region.shape
    out = np.zeros_like(region)
    if ys.size == 0:
        return out
    for _ in range(n):
        best = None
        for _ in range(tries):
            i = rng.integers(ys.size)
            angle = rng.uniform(0, 2 * np.pi)
            target = rng.uniform(length[0], length[1])
            y1 = int(round(ys[i] + target * np.sin(angle)))
            x1 = int(round(xs[i] + target * np.cos(angle)))
            rr, cc = draw.line(int(ys[i]), int(xs[i]), y1, x1)
            ok = (rr >= 0) & (rr < ny) & (cc >= 0) & (cc < nx)
            ok[ok] = region[rr[ok], cc[ok]]
            # Stop at the first pixel that leaves the region, so each stroke is one piece.
            stop = int(np.argmin(ok)) if not ok.all() else ok.size
            if best is None or stop > best[2]:
                best = (rr[:stop], cc[:stop], stop)
            if stop >= length[0]:
                break
        out[best[0], best[1]] = True
    return out


def strokes_from_mask(truth, strokes_per_class=12, radius=2, length=(10, 20), seed=0) -> np.ndarray:
    """Draw short random brush strokes inside each class of a dense mask.

    Mimics sparse annotation: each stroke is a straight line of random direction, thickened to
    ``radius``, whose centre line stays inside the class eroded by ``radius`` (so it never crosses
    into another class).

    Parameters
    ----------
    truth : numpy.ndarray
        ``(Y, X)`` integer mask; 0 is ignored, classes are 1..K.
    strokes_per_class : int
        Strokes per class (fewer pixels if a class is too small for long strokes).
    radius : int
        Brush radius in pixels (0 = one-pixel lines).
    length : (float, float)
        Min and max stroke length in pixels.
    seed : int
        Same seed, same strokes.

    Returns
    -------
    numpy.ndarray
        ``(Y, X)`` uint8 (uint16 for more than 255 classes), 0 = unlabelled.

    Examples
    --------
    >>> truth = np.ones((64, 64), np.uint8); truth[20:50, 20:50] = 2
    >>> labels = strokes_from_mask(truth, strokes_per_class=3)
    >>> bool(np.all((labels == 0) | (labels == truth)))
    True
    """
    truth = np.asarray(truth)
    if truth.ndim != 2 or not np.issubdtype(truth.dtype, np.integer):
        raise ValueError(
            f"truth must be a (Y, X) integer mask, got shape {truth.shape} dtype {truth.dtype}"
        )
    if len(length) != 2 or not 0 < length[0] <= length[1]:
        raise ValueError(f"length must be (min, max) with 0 < min <= max, got {length!r}; e.g. (10, 20)")
    radius = int(radius)
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    rng = np.random.default_rng(seed)
    disk = morphology.disk(radius)
    labels = np.zeros(truth.shape, np.uint8 if truth.max() < 256 else np.uint16)
    for k in np.unique(truth):
        if k <= 0:
            continue
        region = truth == k
        inner = ndi.binary_erosion(region, disk) if radius else region
        if not inner.any():
            inner = region  # class thinner than the brush: still label it, clipped to the class below
        lines = _draw_strokes(inner, int(strokes_per_class), length, rng)
        stroke = ndi.binary_dilation(lines, disk) if radius else lines
        labels[stroke & region] = k
    return labels
