"""A synthetic pyramidal whole slide, written fast, with its exact truth: shared by the slide benches.

The slide is RGB, mostly background, with five elliptic tissue pieces (:data:`BLOBS`); with
``cores=True`` each piece has a second tissue kind in its core (a darker "tumour" inside the
"stroma" ring). Levels with more than :data:`PRE_ENCODED_PIXELS` pixels are written from
pre-encoded 512 px tiles (one per kind, reused), so a 100,000 x 80,000 slide costs seconds: such a
level is constant per tile (the kind at the tile's centre). Smaller levels are rendered pixel by
pixel, so they have real edges. :func:`level_kind` gives what was written at any level: the truth
the benches measure against.

Used by ``bench/whole_slide_formats.py`` (tissue mask, resolution) and ``bench/whole_slide.py``
(annotate, train, predict end to end).
"""

from __future__ import annotations

import time
import zlib

import numpy as np

__all__ = ["TILE", "BG", "TISSUE", "TUMOUR", "BLOBS", "CORE", "PRE_ENCODED_PIXELS", "tissue_at", "kind_at",
           "level_shapes", "level_kind", "render", "write_slide", "Timer"]

TILE = 512
BG = (238, 236, 240)
TISSUE = (190, 95, 170)   # "stroma": the whole piece, or its ring around the core
TUMOUR = (110, 50, 140)   # the core of each piece with cores=True
COLOURS = (BG, TISSUE, TUMOUR)
# Five tissue pieces (centre y, centre x, radius y, radius x), in units of the slide's height/width.
BLOBS = [(0.25, 0.2, 0.18, 0.14), (0.7, 0.3, 0.2, 0.12), (0.4, 0.6, 0.25, 0.16), (0.75, 0.78, 0.15, 0.12),
         (0.2, 0.85, 0.1, 0.08)]
CORE = 0.5  # the core's radii, as a fraction of its piece's
# Levels larger than this are written from pre-encoded tiles (constant per tile).
PRE_ENCODED_PIXELS = 4096 * 4096


def tissue_at(yy, xx):
    """True where normalised coordinates (0..1) fall inside a blob."""
    return kind_at(yy, xx) > 0


def kind_at(yy, xx, cores: bool = False):
    """0 background, 1 tissue (stroma), 2 core (tumour, with ``cores``) at normalised coordinates."""
    out = np.zeros(np.broadcast(yy, xx).shape, np.uint8)
    for cy, cx, ry, rx in BLOBS:
        d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        out[d < 1] = 1
        if cores:
            out[d < CORE ** 2] = 2
    return out


def level_shapes(ny: int, nx: int) -> list[tuple[int, int]]:
    """(Y, X) of every level: halved until the longest side is at most 1024."""
    shapes = [(ny, nx)]
    while max(shapes[-1]) > 1024:
        shapes.append((shapes[-1][0] // 2, shapes[-1][1] // 2))
    return shapes


def level_kind(level_shape, yy, xx, cores: bool = False):
    """The kind written at integer pixels ``(yy, xx)`` of a level of shape ``level_shape``."""
    ly, lx = level_shape
    yy, xx = np.asarray(yy), np.asarray(xx)
    if ly * lx > PRE_ENCODED_PIXELS:  # constant per tile: the kind at the tile's centre
        return kind_at((yy // TILE * TILE + TILE / 2) / ly, (xx // TILE * TILE + TILE / 2) / lx, cores)
    return kind_at((yy + 0.5) / ly, (xx + 0.5) / lx, cores)


def render(ny, nx, rng, cores: bool = False):
    """A small level rendered pixel by pixel (centres of its pixels)."""
    yy = (np.arange(ny)[:, None] + 0.5) / ny
    xx = (np.arange(nx)[None, :] + 0.5) / nx
    kind = kind_at(yy, xx, cores)
    img = np.empty((ny, nx, 3), np.uint8)
    img[:] = BG
    for k in (1, 2):
        img[kind == k] = COLOURS[k]
    noise = rng.integers(-6, 7, (ny, nx, 1), dtype=np.int16)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def write_slide(path, ny, nx, rng, cores: bool = False, pixel_size: float = 0.3):
    """Write the slide as a pyramidal OME-TIFF (SubIFDs, 512 px zlib tiles); returns the level shapes.

    Level 0 carries ``PhysicalSizeX/Y = pixel_size`` µm. Levels beyond :data:`PRE_ENCODED_PIXELS`
    are streamed from pre-encoded tiles (no level is ever held in memory), the others rendered.
    """
    import tifffile

    shapes = level_shapes(ny, nx)
    tile_px = []
    for colour in COLOURS:
        block = np.empty((TILE, TILE, 3), np.uint8)
        block[:] = colour
        # A periodic 32 px noise pattern: textured, yet a few KB per tile once compressed.
        noise = np.tile(rng.integers(-6, 7, (32, 32, 1), dtype=np.int16), (TILE // 32, TILE // 32, 1))
        block = np.clip(block.astype(np.int16) + noise, 0, 255)
        raw = zlib.compress(block.astype(np.uint8).tobytes(), 6)
        tile_px.append((raw, len(raw)))

    def encoded_tiles(ly, lx):
        cols = np.arange(-(-lx // TILE)) * TILE
        for ty in range(-(-ly // TILE)):
            for k in level_kind((ly, lx), ty * TILE, cols, cores):
                yield tile_px[int(k)]

    opts = dict(tile=(TILE, TILE), photometric="rgb", compression="zlib")
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        for i, (ly, lx) in enumerate(shapes):
            extra = dict(subifds=len(shapes) - 1, metadata={"axes": "YXS", "PhysicalSizeX": pixel_size,
                                                             "PhysicalSizeY": pixel_size}) if i == 0 else dict(
                subfiletype=1, metadata=None)
            if ly * lx > PRE_ENCODED_PIXELS:
                tw.write(encoded_tiles(ly, lx), shape=(ly, lx, 3), dtype=np.uint8, **opts, **extra)
            else:
                tw.write(render(ly, lx, rng, cores), **opts, **extra)
    return shapes


class Timer:
    """Wall and CPU seconds of a block (the machine is shared: CPU time is the steadier figure)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def __str__(self):
        return f"{self.wall:.3f} s ({self.cpu:.3f} CPU)"
