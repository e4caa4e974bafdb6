"""Benchmark cases: seeded images of different character, each with a dense truth mask.

Every case is a function ``(seed) -> (Image, truth, class_names)`` with ``truth`` a ``(Y, X)`` uint8
mask holding classes ``1..K`` (1 = background) everywhere. Synthetic images are 512 x 512 so runs
compare with docs/quality.md; the IHC sample keeps its own size. The generators are made hard on
purpose (uneven illumination, blur, noise, dim or weak signal, colour drift, texture-only contrast,
strokes far from boundaries) so that the random-forest baseline scores about 0.6-0.85, as on real
images: a case on which the forest is nearly perfect cannot tell a good training recipe from a bad
one (docs/quality.md).

``CASES`` maps a case name to a :class:`Case` (generator, Otsu rule, stroke placement).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import ndimage as ndi
from skimage import draw, filters

from pixlab.image.image import Image

SIZE = 512


def _smooth_noise(rng, shape, sigma) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation."""
    field_ = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return (field_ - field_.mean()) / (field_.std() + 1e-8)


def _illumination(rng, shape, low, high) -> np.ndarray:
    """Smooth multiplicative illumination in [low, high]: a tilted ramp plus a broad bump."""
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * yy / ny + np.sin(angle) * xx / nx)
    bump = np.exp(-(((yy - ny * rng.random()) ** 2 + (xx - nx * rng.random()) ** 2) / (0.15 * ny * nx)))
    f = ramp + bump + 0.5 * _smooth_noise(rng, shape, 60)
    f = (f - f.min()) / (np.ptp(f) + 1e-8)
    return low + (high - low) * f


def _place_ellipses(rng, shape, n, r_range, touching=0.0, aspect=(0.6, 1.0)):
    """Label image of ``n`` elliptical objects; a fraction ``touching`` is placed against a previous one."""
    ny, nx = shape
    lab = np.zeros(shape, np.int32)
    centres = []
    k = 0
    for _ in range(int(n)):
        r = rng.uniform(*r_range)
        if centres and rng.random() < touching:
            py, px, pr = centres[int(rng.integers(len(centres)))]
            a = rng.uniform(0, 2 * np.pi)
            cy, cx = py + (pr + r) * 0.85 * np.sin(a), px + (pr + r) * 0.85 * np.cos(a)
        else:
            cy, cx = rng.uniform(0, ny), rng.uniform(0, nx)
        rr, cc = draw.ellipse(cy, cx, r, r * rng.uniform(*aspect), shape=shape, rotation=rng.uniform(0, np.pi))
        free = lab[rr, cc] == 0  # earlier objects stay on top: touching, not merged into one label
        if free.sum() < 10:
            continue
        k += 1
        lab[rr[free], cc[free]] = k
        centres.append((cy, cx, r))
    return lab


def _counts(expected, rng, read_noise, dtype=np.uint16) -> np.ndarray:
    """Poisson shot noise plus Gaussian read noise, clipped to the dtype."""
    counts = rng.poisson(np.clip(expected, 0, None)).astype(np.float32)
    counts += rng.normal(0, read_noise, counts.shape).astype(np.float32)
    info = np.iinfo(dtype)
    return np.clip(np.round(counts), info.min, info.max).astype(dtype)


# ------------------------------------------------------------------------------------------------
# (a) fluorescence nuclei
# ------------------------------------------------------------------------------------------------

def fluorescence_nuclei(seed: int = 0, classes: int = 2):
    """(1, 512, 512) uint16 nuclei: uneven illumination, blur, shot+read noise, dim and touching nuclei.

    A third of the nuclei are dim (12-35 % of the bright ones), a third touch a neighbour, and
    out-of-focus haze (blurred copies of the nuclei) plus autofluorescent background structure
    surround them. ``classes=3`` splits the nuclei into bright (2) and dim (3).
    """
    rng = np.random.default_rng(seed)
    shape = (SIZE, SIZE)
    lab = _place_ellipses(rng, shape, 110, (7, 14), touching=0.35)
    nuclei = lab > 0
    bright = np.zeros(shape, np.float32)
    dim = np.zeros(shape, bool)
    for k in range(1, lab.max() + 1):
        is_dim = rng.random() < 0.3
        bright[lab == k] = rng.uniform(0.25, 0.45) if is_dim else rng.uniform(0.6, 1.0)
        dim[lab == k] = is_dim
    # Chromatin texture inside nuclei, haze around them, structured autofluorescence in background.
    bright *= 1 + 0.25 * _smooth_noise(rng, shape, 1.5)
    haze = 0.25 * ndi.gaussian_filter(bright, 8)
    auto = 0.06 * np.clip(_smooth_noise(rng, shape, 4), 0, None)
    signal = ndi.gaussian_filter(bright, 2.0) + haze + auto
    illum = _illumination(rng, shape, 0.5, 1.2)
    peak, offset = 900.0, 120.0
    data = _counts((signal * peak + offset) * illum + 100.0, rng, read_noise=18.0)
    truth = np.where(nuclei, 2, 1).astype(np.uint8)
    names = ["background", "nuclei"]
    if classes == 3:
        truth[dim] = 3
        names = ["background", "bright_nuclei", "dim_nuclei"]
    return Image(data[None], ["DAPI"], name="fluorescence_nuclei"), truth, names


# ------------------------------------------------------------------------------------------------
# (b) H&E-like brightfield, 3 classes
# ------------------------------------------------------------------------------------------------

# Stain optical-density vectors (Ruifrok & Johnston, as in skimage.color.rgb2hed).
_H = np.array([0.65, 0.70, 0.29], np.float32)
_E = np.array([0.07, 0.99, 0.11], np.float32)


def he_brightfield(seed: int = 0):
    """(3, 512, 512) uint8 H&E-like RGB: background / stroma / nuclei, stain strength drifting across the image.

    Tissue is a large smooth shape with holes; stroma is eosin with fibre texture and a little
    haematoxylin; nuclei are haematoxylin blobs of varying darkness (some pale). Stain amounts are
    multiplied by smooth fields (one per stain), so the same class changes colour across the image.
    """
    rng = np.random.default_rng(seed)
    shape = (SIZE, SIZE)
    tissue = _smooth_noise(rng, shape, 30) > -0.3
    tissue = ndi.binary_opening(tissue, iterations=3)
    lab = _place_ellipses(rng, shape, 260, (4, 9), touching=0.3)
    nuc = np.zeros(shape, np.float32)
    for k in range(1, lab.max() + 1):
        nuc[lab == k] = rng.uniform(0.35, 1.0)
    nuc *= tissue
    nuclei = nuc > 0
    fibres = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), (1.0, 6.0))
    fibres = (fibres - fibres.mean()) / fibres.std()
    e_amount = tissue * (0.35 + 0.12 * fibres + 0.08 * _smooth_noise(rng, shape, 3)).clip(0.05, None)
    h_amount = tissue * 0.10 + nuc * 1.0 * (1 + 0.2 * _smooth_noise(rng, shape, 1.2))
    # Background is not clean white: debris and faint eosin.
    e_amount += 0.10 * (~tissue) * np.clip(_smooth_noise(rng, shape, 3), 0, None)
    h_field = _illumination(rng, shape, 0.45, 1.3)
    e_field = _illumination(rng, shape, 0.45, 1.3)
    od = (ndi.gaussian_filter(h_amount * h_field, 1.2)[..., None] * _H
          + ndi.gaussian_filter(e_amount * e_field, 1.2)[..., None] * _E)
    rgb = 245.0 * np.exp(-od)
    rgb += rng.normal(0, 9.0, rgb.shape)
    data = np.clip(np.round(rgb), 0, 255).astype(np.uint8).transpose(2, 0, 1)
    truth = np.ones(shape, np.uint8)
    truth[tissue] = 2
    truth[nuclei] = 3
    return Image(data, ["Red", "Green", "Blue"], name="he_brightfield"), truth, ["background", "stroma", "nuclei"]


# ------------------------------------------------------------------------------------------------
# (c) multiplex immunofluorescence
# ------------------------------------------------------------------------------------------------

MULTIPLEX_CHANNELS = ["DAPI", "CD3", "CD20", "PanCK", "Ki67"]


def multiplex_if(seed: int = 0, classes: int = 2):
    """(5, 512, 512) uint16 multiplex IF of crowded tissue; target = CD3+ Ki67+ cells (Ki67 is the weak marker).

    Channels: DAPI (every nucleus), CD3 and CD20 (membrane rings, mutually exclusive), PanCK
    (cytoplasm of tumour cells), Ki67 (nuclear, weak: about the noise level). Only nuclei that are
    CD3+ *and* Ki67+ are foreground, so no single channel separates the classes. ``classes=3`` adds
    "other nuclei" (3) for every other nucleus.
    """
    rng = np.random.default_rng(seed)
    shape = (SIZE, SIZE)
    lab = _place_ellipses(rng, shape, 380, (8, 11), touching=0.3)
    n = lab.max()
    kind = rng.choice(3, size=n + 1, p=[0.6, 0.15, 0.25])  # 0 CD3 T cell, 1 CD20 B cell, 2 tumour
    ki67 = rng.random(n + 1) < 0.6
    kind[0], ki67[0] = -1, False
    per_px_kind = kind[lab]
    nuclei = lab > 0
    dapi = np.zeros(shape, np.float32)
    for k in range(1, n + 1):
        dapi[lab == k] = rng.uniform(0.4, 1.0)
    grown = ndi.grey_dilation(lab, size=(7, 7))
    grown[nuclei] = lab[nuclei]
    ring = (grown > 0) & ~nuclei
    ring_kind = kind[grown]
    cd3 = (ring & (ring_kind == 0)).astype(np.float32) * rng.uniform(0.5, 1.0, shape)
    cd20 = (ring & (ring_kind == 1)).astype(np.float32) * rng.uniform(0.5, 1.0, shape)
    panck = ((grown > 0) & (ring_kind == 2)).astype(np.float32) * 0.7
    ki = (nuclei & ki67[lab]).astype(np.float32)
    ki *= (0.8 + 0.2 * _smooth_noise(rng, shape, 2)).clip(0, None)
    illum = _illumination(rng, shape, 0.5, 1.2)
    chans = []
    for sig, peak, sigma in ((dapi, 800, 1.5), (cd3, 500, 1.5), (cd20, 500, 1.5), (panck, 400, 2.0), (ki, 400, 1.5)):
        expected = (ndi.gaussian_filter(sig, sigma) * peak + 60.0) * illum
        expected += 20.0 * np.clip(_smooth_noise(rng, shape, 5), 0, None)  # autofluorescence
        chans.append(_counts(expected, rng, read_noise=15.0))
    data = np.stack(chans)
    target = (grown > 0) & (ring_kind == 0) & ki67[grown]  # the whole cell: nucleus + CD3 membrane
    truth = np.where(target, 2, 1).astype(np.uint8)
    names = ["background", "cd3_ki67_cells"]
    if classes == 3:
        truth[(grown > 0) & ~target] = 3
        names.append("other_cells")
    return Image(data, list(MULTIPLEX_CHANNELS), name="multiplex_if"), truth, names


# ------------------------------------------------------------------------------------------------
# (d) large textured regions
# ------------------------------------------------------------------------------------------------

def textured_regions(seed: int = 0):
    """(1, 512, 512) uint16 tissue regions told apart by texture, not intensity.

    Two region types share mean and standard deviation: one is fine isotropic grain, the other
    oriented fibres (anisotropic correlation) of similar scale. Regions are large smooth shapes; a
    global intensity drift and noise are added on top.
    """
    rng = np.random.default_rng(seed)
    shape = (SIZE, SIZE)
    region = _smooth_noise(rng, shape, 40) > 0.1
    white = rng.standard_normal(shape).astype(np.float32)
    grain = ndi.gaussian_filter(white, 1.0)
    # Fibres: elongated correlation whose direction turns slowly across the image.
    fib_a = ndi.gaussian_filter(white, (1.3, 4.0))
    fib_b = ndi.gaussian_filter(white, (4.0, 1.3))
    mix = 0.5 + 0.5 * np.tanh(1.5 * _smooth_noise(rng, shape, 50))
    fibre = mix * fib_a + (1 - mix) * fib_b

    def unit(x):
        return (x - x.mean()) / (x.std() + 1e-8)

    tex = np.where(region, unit(fibre), unit(grain))
    drift = _illumination(rng, shape, 0.6, 1.3)
    signal = (1.0 + 0.1 * region + 0.3 * tex) * drift
    data = _counts(signal * 400.0 + 50.0, rng, read_noise=25.0)
    truth = np.where(region, 2, 1).astype(np.uint8)
    return Image(data[None], ["Channel 1"], name="textured_regions"), truth, ["background", "fibrous"]


# ------------------------------------------------------------------------------------------------
# (e) the bundled IHC sample
# ------------------------------------------------------------------------------------------------

def ihc_sample(seed: int = 0):
    """The bundled IHC photograph (3, 512, 512) uint8 against its colour-deconvolution reference.

    ``seed`` is ignored (one real image); the reference is ``pixlab.datasets.sample_ihc_reference``
    (rgb2hed + smoothing + Otsu), 1 = background, 2 = hematoxylin, 3 = DAB.
    """
    from pixlab import datasets

    img, _, classes = datasets.sample_ihc()
    return img, datasets.sample_ihc_reference(), classes


# ------------------------------------------------------------------------------------------------
# (f) cells with clear edges, strokes only deep inside
# ------------------------------------------------------------------------------------------------

def cells_inside(seed: int = 0):
    """(1, 512, 512) uint16 large cells outlined by a bright membrane; interior barely brighter than outside.

    Meant for strokes placed only deep inside cells and far out in the background (see
    :data:`CASES`): the classifier must find the boundary, which no stroke touches.
    """
    rng = np.random.default_rng(seed)
    shape = (SIZE, SIZE)
    lab = _place_ellipses(rng, shape, 34, (22, 40), touching=0.3, aspect=(0.55, 1.0))
    cells = lab > 0
    inner_edge = cells & ~ndi.binary_erosion(cells, iterations=2)
    boundaries = (ndi.grey_dilation(lab, size=(3, 3)) != ndi.grey_erosion(lab, size=(3, 3))) & cells
    membrane = (inner_edge | boundaries).astype(np.float32) * rng.uniform(0.5, 1.0, shape)
    interior = cells * (0.35 + 0.10 * _smooth_noise(rng, shape, 3))
    outside = (~cells) * (0.10 + 0.10 * _smooth_noise(rng, shape, 3)).clip(0, None)
    signal = ndi.gaussian_filter(membrane, 1.2) + interior + outside
    illum = _illumination(rng, shape, 0.5, 1.3)
    data = _counts((signal * 600.0 + 80.0) * illum, rng, read_noise=25.0)
    truth = np.where(cells, 2, 1).astype(np.uint8)
    return Image(data[None], ["Membrane"], name="cells_inside"), truth, ["background", "cell"]


# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """A benchmark case.

    Attributes
    ----------
    make : callable
        ``seed -> (Image, truth, class_names)``.
    otsu_channel : int or None
        Channel for the Otsu baseline (None: no meaningful single-channel threshold).
    otsu_dark : bool
        The foreground is darker than the background (brightfield).
    split3 : callable or None
        ``(image, truth, seed) -> (truth, class_names)`` with 3 classes for the ``classes3`` setting
        (None: the case has no meaningful 3-class split).
    deep : dict
        Stroke margins per class id (pixels from the class boundary) when strokes must stay far from
        boundaries; empty = the docs/quality.md 3 px everywhere.
    note : str
        One line for the report.
    """

    make: Callable
    otsu_channel: int | None = 0
    otsu_dark: bool = False
    split3: Callable | None = None
    deep: dict = field(default_factory=dict)
    note: str = ""


CASES: dict[str, Case] = {
    "fluo_nuclei": Case(fluorescence_nuclei, 0, split3=lambda img, t, seed: fluorescence_nuclei(seed, 3)[1:],
                        note="uint16 nuclei, uneven light, blur, noise, dim + touching"),
    "he_3class": Case(he_brightfield, None, note="H&E-like RGB: background/stroma/nuclei, stain drift"),
    "multiplex_if": Case(multiplex_if, None, split3=lambda img, t, seed: multiplex_if(seed, 3)[1:],
                         note="5-channel IF, target CD3+ Ki67+ (Ki67 weak)"),
    "texture": Case(textured_regions, None, note="large regions by texture only (fibres vs grain)"),
    "ihc": Case(ihc_sample, None, note="bundled IHC vs rgb2hed reference, 3 classes"),
    "cells_inside": Case(cells_inside, 0, deep={1: 12, 2: 10},
                         note="membrane-outlined cells, strokes only deep inside / far outside"),
}
