"""Training tiles: where they are cut (around strokes or at random) and a background batch producer."""

from __future__ import annotations

import queue
import threading
import warnings
from typing import Callable

import numpy as np

from pixlab.image.padding import pad_to
from pixlab.training.samples import Sample
from pixlab.training.strokes import read_labels

__all__ = ["TileSampler", "Prefetcher", "MAX_EPOCH_BATCHES"]


# An epoch is the interval between validations; by default it covers the labelled tiles once, but
# never more than this many batches: strokes spread over a slide would otherwise make one epoch of
# tens of thousands of tiles, and a time-limited run would stop before its first validation (a
# 60 s run then kept an almost untrained network). Strokes an epoch misses come in the next ones
# (every stroke piece is drawn in turn, see TileSampler.draw).
MAX_EPOCH_BATCHES = 64

# Validation tiles are held in memory (image float32 + two int64 label maps per pixel).
VALIDATION_BYTES = 256 * 2**20


class TileSampler:
    """Draws training tiles: centred on labelled pixels (class-balanced) or at random.

    A stroke-centred tile picks a class uniformly, then either the next stroke piece of that class
    in a shuffled cycle (so every stroke, however small, is seen in turn) or a labelled pixel of it
    uniformly (so long strokes get tiles along their length), half and half. Untargeted tiles fall
    anywhere on an in-memory image, but only in the blocks around the strokes of a lazy one (a slide
    is never read away from its labels). Labels are located per block (:class:`StrokeIndex`), not
    as an index of every labelled pixel.
    """

    def __init__(self, samples: list[Sample], stats: dict, tile: int, n_classes: int, stroke_focus: float,
                 seed):
        from pixlab.training.strokes import StrokeIndex, context_blocks
        self.samples, self.stats, self.tile, self.n_classes = samples, stats, tile, n_classes
        self.stroke_focus = stroke_focus
        self.rng = np.random.default_rng(seed)
        self.index = StrokeIndex([s.train_labels for s in samples], n_classes, tile)
        areas = []
        for s in samples:
            if s.cache is None and s.context is None:
                s.context = context_blocks(s.train_labels, tile)
            if s.context is None:
                areas.append(float(s.labels.size))
            else:
                w = np.array([(y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in s.context], float)
                s._context_p = w / w.sum() if w.size else None
                areas.append(float(w.sum()))
        areas = np.array(areas, dtype=float)
        self.image_p = areas / areas.sum() if areas.sum() else np.full(len(samples), 1 / len(samples))

    def patches_per_epoch(self, requested: int | None, batch_size: int) -> int:
        """Tiles per epoch: ``requested``, else enough to cover the labelled tiles once (at least 4
        batches, at most :data:`MAX_EPOCH_BATCHES`)."""
        if requested:
            return int(requested)
        return int(min(max(4 * batch_size, self.index.n_cells), MAX_EPOCH_BATCHES * batch_size))

    def describe(self) -> dict:
        """What the sampler draws from (for the model's metadata)."""
        ix = self.index
        return {"labelled_blocks": len(ix.blocks), "stroke_pieces": [ix.n_pieces(k) for k in range(1, self.n_classes + 1)],
                "labelled_tiles": ix.n_cells,
                "context_blocks": [None if s.context is None else len(s.context) for s in self.samples]}

    def _window(self, sample: Sample, cy: int, cx: int):
        H, W = sample.labels.shape
        t = self.tile
        y0 = int(np.clip(cy - t // 2, 0, max(H - t, 0)))
        x0 = int(np.clip(cx - t // 2, 0, max(W - t, 0)))
        return y0, min(y0 + t, H), x0, min(x0 + t, W)

    def draw(self):
        """One tile: (image (C,t,t) float32, target (t,t) int64 with -1 unlabelled, pseudo (t,t) int64)."""
        rng, t = self.rng, self.tile
        classes = self.index.classes
        if classes and rng.random() < self.stroke_focus:
            k = classes[rng.integers(len(classes))]
            if rng.random() < 0.5:
                i, cy, cx = self.index.next_piece(k, rng)
            else:
                i, cy, cx = self.index.pixel(k, rng)
            s = self.samples[i]
            # Jitter so the labelled pixel is not always at the tile centre.
            cy += int(rng.integers(-t // 4, t // 4 + 1))
            cx += int(rng.integers(-t // 4, t // 4 + 1))
        else:
            i = int(rng.choice(len(self.samples), p=self.image_p))
            s = self.samples[i]
            if s.context is None:
                cy = int(rng.integers(0, s.labels.shape[0]))
                cx = int(rng.integers(0, s.labels.shape[1]))
            else:
                y0, y1, x0, x1 = s.context[int(rng.choice(len(s.context), p=s._context_p))]
                cy, cx = int(rng.integers(y0, y1)), int(rng.integers(x0, x1))
        y0, y1, x0, x1 = self._window(s, cy, cx)
        return self._crop(s, y0, y1, x0, x1, s.train_labels)

    def _crop(self, s: Sample, y0, y1, x0, x1, labels):
        t = self.tile
        img = s.read(y0, y1, x0, x1, self.stats)
        lab = read_labels(labels, y0, y1, x0, x1).astype(np.int64) - 1
        pse = (read_labels(s.pseudo, y0, y1, x0, x1).astype(np.int64) - 1) if s.pseudo is not None \
            else np.full(lab.shape, -1)
        h, w = lab.shape
        if h < t or w < t:  # image smaller than a tile: pad, padded pixels are unlabelled
            img = pad_to(img, t, t)
            lab = np.pad(lab, ((0, t - h), (0, t - w)), constant_values=-1)
            pse = np.pad(pse, ((0, t - h), (0, t - w)), constant_values=-1)
        return np.ascontiguousarray(img, dtype=np.float32), lab, pse

    def validation_tiles(self, max_bytes: int = VALIDATION_BYTES):
        """Fixed tiles centred on the held-out stroke pieces (deterministic), within ``max_bytes``.

        Pieces come class by class in turn, and a piece whose centre an earlier tile already covers
        gets no tile of its own. What is used is in :attr:`validation_info` (and a warning says when
        the memory budget left held-out strokes out).
        """
        from pixlab.training.strokes import StrokeIndex
        t = self.tile
        C = self.samples[0].image.n_channels if self.samples else 1
        cap = max(8, int(max_bytes // (t * t * (4 * C + 16))))
        vix = StrokeIndex([s.val_labels for s in self.samples], self.n_classes, t)
        tiles, boxes, covered = [], [], 0
        order = vix.pieces_in_turn()
        for p in order:
            b, _, k, npx, cy, cx = (int(v) for v in vix.pieces[p])
            i = vix.blocks[b][0]
            if any(j == i and y0 <= cy < y1 and x0 <= cx < x1 for j, y0, y1, x0, x1 in boxes):
                covered += 1
                continue
            if len(tiles) >= cap:
                continue
            s = self.samples[i]
            box = self._window(s, cy, cx)
            tiles.append(self._crop(s, *box, s.val_labels))
            boxes.append((i, *box))
            covered += 1
        total_px = int(sum(vix.pixels(k) for k in range(1, self.n_classes + 1)))
        in_tiles = int(sum(int((tl[1] >= 0).sum()) for tl in tiles))
        self.validation_info = {
            "tiles": len(tiles), "tile_size": t, "held_out_pieces": int(len(order)), "pieces_covered": covered,
            "held_out_pixels": total_px, "pixels_in_tiles": min(in_tiles, total_px)}
        if covered < len(order):
            warnings.warn(f"validation uses {len(tiles)} tiles of {t} px (a {max_bytes / 2**20:.0f} MB budget): "
                          f"{covered} of {len(order)} held-out stroke pieces, "
                          f"{100 * min(in_tiles, total_px) / max(total_px, 1):.0f} % of the held-out pixels", stacklevel=2)
        return tiles


class Prefetcher:
    """Produces batches in a background thread (numpy/torch release the GIL for the heavy parts)."""

    def __init__(self, make_batch: Callable[[int], tuple], n: int, depth: int = 2):
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, args=(make_batch, n), daemon=True, name="pixlab-batches")
        self.t.start()

    def _run(self, make_batch, n):
        try:
            for b in range(n):
                if self.stop.is_set():
                    return
                self.q.put(make_batch(b))
        except BaseException as e:  # surface errors in the consumer
            self.q.put(e)
        self.q.put(None)

    def __iter__(self):
        while True:
            item = self.q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self):
        self.stop.set()
        while True:  # drain so the producer can finish
            try:
                self.q.get_nowait()
            except queue.Empty:
                break
        self.t.join(timeout=5)


_Prefetcher = Prefetcher
