"""Training from a whole slide: lazy tiles around the strokes, labels in a chunked store.

The slide is a 20,000 x 20,000 RGB lazy image whose blocks are generated on demand and counted, so
the tests see exactly which pixels training reads; its labels are a LabelStore, which refuses to
become a dense array (8 bytes x 4e8 px would not fit the memory goal).
"""

from __future__ import annotations

import threading
import tracemalloc

import dask.array as da
import numpy as np
import pytest

import pixlab
from pixlab.image.image import Image
from pixlab.labels.store import LabelStore

SIDE = 20_000
CHUNK = 512
TISSUE = (190, 95, 170)
BACKGROUND = (238, 236, 240)
# (centre y, centre x) of the places where strokes are painted, far apart.
PLACES = [(2_000, 2_500), (10_000, 16_000), (17_000, 4_000)]


def _tissue(yy, xx):
    """Tissue left of a wavy vertical line through every place (x < cx + 300 near each place)."""
    out = np.zeros(np.broadcast(yy, xx).shape, bool)
    for cy, cx in PLACES:
        out |= (np.abs(yy - cy) < 1500) & (xx < cx) & (xx > cx - 1500)
    return out


class CountingSlide:
    """A lazy RGB slide; ``blocks`` records every (y0, x0) block of level 0 that was computed."""

    def __init__(self):
        self.blocks: list[tuple[int, int]] = []
        self.lock = threading.Lock()

    def _block(self, block, block_info=None):
        (y0, y1), (x0, x1) = block_info[None]["array-location"][1:]
        with self.lock:
            self.blocks.append((y0, x0))
        return self.render(y0, y1, x0, x1)

    @staticmethod
    def render(y0, y1, x0, x1):
        yy, xx = np.mgrid[y0:y1, x0:x1]
        t = _tissue(yy, xx)
        rgb = np.where(t[None], np.array(TISSUE, np.int16)[:, None, None], np.array(BACKGROUND, np.int16)[:, None, None])
        noise = ((yy * 7 + xx * 13) % 11 - 5).astype(np.int16)
        return np.clip(rgb + noise[None], 0, 255).astype(np.uint8)

    def image(self) -> Image:
        base = da.zeros((3, SIDE, SIDE), np.uint8, chunks=(3, CHUNK, CHUNK))
        level0 = base.map_blocks(self._block, dtype=np.uint8)
        f = 32  # a small level for normalization statistics (rendered at its pixel centres)
        n = SIDE // f
        yy, xx = np.mgrid[0:n, 0:n] * f + f // 2
        t = _tissue(yy, xx)
        small = np.where(t[None], np.array(TISSUE, np.uint8)[:, None, None], np.array(BACKGROUND, np.uint8)[:, None, None])
        return Image(level0, ["R", "G", "B"], (0.5, 0.5), [level0, small], name="slide")


def _strokes() -> LabelStore:
    """Two classes (1 background, 2 tissue), two strokes of each at each place."""
    store = LabelStore((SIDE, SIDE))
    for cy, cx in PLACES:
        for dy in (-600, 600):
            y = cy + dy
            store.write((y, y + 6, cx - 900, cx - 300), np.full((6, 600), 2, np.uint8))   # tissue
            store.write((y, y + 6, cx + 300, cx + 900), np.full((6, 600), 1, np.uint8))   # background
    return store


@pytest.fixture
def slide_cfg():
    return pixlab.TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=64, epochs=3, batch_size=4,
                              recipe="standard", device="cpu", early_stopping=False, loss="ce",
                              scheduler="none", learning_rate=3e-3)


def _near_strokes(y0, x0, labels: LabelStore, margin: int) -> bool:
    for cy0, cy1, cx0, cx1 in labels.painted_chunks():
        if cy0 - margin <= y0 < cy1 + margin and cx0 - margin <= x0 < cx1 + margin:
            return True
    return False


@pytest.mark.parametrize("pseudo", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_training_on_a_slide_reads_only_blocks_around_the_strokes(slide_cfg, pseudo):
    slide = CountingSlide()
    labels = _strokes()
    cfg = slide_cfg.replace(pseudo_labels=pseudo, time_limit_s=600)
    import pixlab.training.trainer, sklearn.ensemble, skimage.measure, torch  # noqa: F401  (imports are not training's memory)
    tracemalloc.start()
    model = pixlab.train([(slide.image(), labels)], cfg, class_names=["background", "tissue"], progress=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    read = set(slide.blocks)
    total = (SIDE // CHUNK + 1) ** 2
    assert read, "training read no pixel"
    # Only blocks that hold strokes or touch them (tiles reach half a tile past a block, pseudo-labels
    # a feature margin more) are ever decoded: a few dozen of the slide's ~1,600.
    far = [b for b in read if not _near_strokes(*b, labels, margin=CHUNK)]
    assert not far, f"training read blocks far from every stroke: {sorted(far)[:5]}"
    assert len(read) <= 8 * len(labels.painted_chunks()), (len(read), len(labels.painted_chunks()), total)
    # A dense copy of the labels alone would be 400 MB, the level-0 image 1.2 GB (4.8 GB normalized);
    # what training holds is the blocks it read (cache <= 64 MiB, in the file dtype), tiles, pseudo-label features and
    # modules imported lazily during the run (a dense label copy is refused by the store itself).
    assert peak < 600 * 2**20, f"peak traced memory {peak / 2**20:.0f} MB"
    meta = model.metadata
    assert meta["patches_per_epoch"] <= 64 * cfg.batch_size
    assert meta["validation"]["tiles"] >= 1
    assert meta["validation"]["pieces_covered"] == meta["validation"]["held_out_pieces"]
    # It learned the colours, also away from the strokes (a 64 px patch is a whole image to predict).
    cy, cx = PLACES[1]
    for (y0, x0), want in (((cy - 1000, cx - 1000), 2), ((cy + 1000, cx + 1000), 1)):
        patch = CountingSlide.render(y0, y0 + 96, x0, x0 + 96)
        labels_pred = model.predict_labels(Image(patch, ["R", "G", "B"]))
        assert (labels_pred == want).mean() > 0.9, (y0, x0, want, np.bincount(labels_pred.ravel()))


def test_every_stroke_piece_is_drawn_in_turn():
    from pixlab.training.strokes import StrokeIndex
    labels = _strokes()
    ix = StrokeIndex([labels], 2, 64)
    # 12 strokes; one crossing a 512 px chunk border has a piece on each side.
    assert ix.n_pieces() >= 12 and ix.n_pieces(1) >= 6 and ix.n_pieces(2) >= 6
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(ix.n_pieces(2)):
        i, y, x = ix.next_piece(2, rng)
        assert labels.read((y, y + 1, x, x + 1))[0, 0] == 2
        seen.add((y // 100, x // 3000))  # one key per stroke (row band, place)
    assert len(seen) == 6, "one cycle of class 2 pieces visits all six of its strokes"
    # Pixel-weighted draws land on labelled pixels of the class, without an index of every pixel.
    for _ in range(20):
        i, y, x = ix.pixel(1, rng)
        assert labels.read((y, y + 1, x, x + 1))[0, 0] == 1


def test_default_epoch_is_bounded_for_strokes_spread_over_a_slide():
    from pixlab.training.samples import Sample
    from pixlab.training.sampling import MAX_EPOCH_BATCHES, TileSampler
    labels = LabelStore((SIDE, SIDE))
    # A stroke along the diagonal of the slide: its bounding box is the whole slide.
    for k in range(0, SIDE - 64, 64):
        labels.write((k, k + 64, k, k + 64), np.eye(64, dtype=np.uint8) + 1)
    img = CountingSlide().image()
    s = Sample(img, labels, labels, labels.empty_like(), stats=None)
    sampler = TileSampler([s], {"offset": [0] * 3, "scale": [1] * 3, "clip": None, "method": "min_max",
                                "per_channel": True}, 128, 2, 0.5, 0)
    # ~160 tiles hold labels: that many (not the 24,000 tiles of the bounding box), capped at 64 batches.
    assert 150 <= sampler.index.n_cells <= 320
    assert sampler.patches_per_epoch(None, 8) == sampler.index.n_cells
    assert sampler.patches_per_epoch(None, 2) == MAX_EPOCH_BATCHES * 2
    assert sampler.patches_per_epoch(1000, 8) == 1000


def test_labels_of_another_shape_than_the_slide_are_refused(slide_cfg):
    labels = LabelStore((SIDE, SIDE - 1))
    labels.write((0, 1, 0, 2), np.array([[1, 2]], np.uint8))
    with pytest.raises(ValueError, match="level 0"):
        pixlab.train([(CountingSlide().image(), labels)], slide_cfg, class_names=["a", "b"], progress=False)


def test_pseudo_labels_of_an_image_too_large_for_its_features_are_computed_block_by_block(slide_cfg):
    # 1600 x 1600 x 2 channels in memory, no time limit: the forest's features of the whole image
    # would be 410 MB (x2 while scikit-image stacks them). Windows around the strokes instead, their
    # features one block at a time.
    from pixlab.image.normalize import compute_stats
    from pixlab.training.samples import add_pseudo_labels, build_samples
    from pixlab.training.strokes import read_labels
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 0.05, (2, 1600, 1600)).astype(np.float32)
    img[1, :, 800:] += 1
    labels = np.zeros((1600, 1600), np.uint8)
    labels[700:703, 600:760] = 1
    labels[700:703, 840:1000] = 2
    image = pixlab.open_image(img)
    stats = compute_stats([image])
    s, = build_samples([image], [labels], [labels], [np.zeros_like(labels)], stats)
    cfg = slide_cfg.replace(pseudo_labels=True).resolved()
    assert cfg.time_limit_s is None
    tracemalloc.start()
    add_pseudo_labels([s], 2, cfg)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 300 * 2**20, f"peak traced memory {peak / 2**20:.0f} MB"
    pseudo = read_labels(s.pseudo, 0, 1600, 0, 1600)
    # Confident labels around the strokes, right on both sides of the edge; none far away.
    assert (pseudo[680:720, 620:740] == 1).mean() > 0.9 and (pseudo[680:720, 860:980] == 2).mean() > 0.9
    assert not pseudo[1300:, :].any()


def test_nan_pixels_of_a_slide_are_named_where_training_reads_them():
    # Blocks of a lazy image are cached in the file's dtype and normalised per tile: the NaN check
    # runs on each block as it is read (the image is beyond IN_MEMORY_PIXELS, so nothing is cached whole).
    side = 9000

    def block(b, block_info=None):
        (y0, y1), (x0, x1) = block_info[None]["array-location"][1:]
        out = np.full(b.shape, 0.5, np.float32)
        if y0 <= 4000 < y1 and x0 <= 4000 < x1:
            out[:, 4000 - y0, 4000 - x0] = np.nan
        return out
    data = da.zeros((1, side, side), np.float32, chunks=(1, 512, 512)).map_blocks(block, dtype=np.float32)
    img = Image(data, ["DAPI"], (0.5, 0.5), [data, np.full((1, side // 32, side // 32), 0.5, np.float32)])
    labels = LabelStore((side, side))
    labels.write((3990, 3996, 3900, 4100), np.full((6, 200), 1, np.uint8))
    labels.write((4010, 4016, 3900, 4100), np.full((6, 200), 2, np.uint8))
    cfg = pixlab.TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=64, epochs=1, batch_size=2,
                             patches_per_epoch=4, recipe="standard", device="cpu", pseudo_labels=False)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="NaN or infinite values near y=3584, x=3584"):
        pixlab.train([(img, labels)], cfg, class_names=["a", "b"], progress=False)
