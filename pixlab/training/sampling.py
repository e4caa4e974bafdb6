"""Training tiles: where they are cut (around strokes or at random) and a background batch producer."""

from __future__ import annotations

import queue
import threading
from typing import Callable

import numpy as np

from pixlab.image.padding import pad_to
from pixlab.training.samples import Sample

__all__ = ["TileSampler", "Prefetcher"]


class TileSampler:
    """Draws training tiles: centred on labelled pixels (class-balanced) or uniformly at random."""

    def __init__(self, samples: list[Sample], stats: dict, tile: int, n_classes: int, stroke_focus: float,
                 seed):
        self.samples, self.stats, self.tile, self.n_classes = samples, stats, tile, n_classes
        self.stroke_focus = stroke_focus
        self.rng = np.random.default_rng(seed)
        # Coordinates of labelled training pixels per class, across images.
        self.coords = []
        for k in range(1, n_classes + 1):
            per = [(i, np.flatnonzero(s.train_labels.ravel() == k)) for i, s in enumerate(samples)]
            self.coords.append([(i, c) for i, c in per if c.size])
        areas = np.array([s.labels.size for s in samples], dtype=float)
        self.image_p = areas / areas.sum()

    def _window(self, sample: Sample, cy: int, cx: int):
        H, W = sample.labels.shape
        t = self.tile
        y0 = int(np.clip(cy - t // 2, 0, max(H - t, 0)))
        x0 = int(np.clip(cx - t // 2, 0, max(W - t, 0)))
        return y0, min(y0 + t, H), x0, min(x0 + t, W)

    def draw(self):
        """One tile: (image (C,t,t) float32, target (t,t) int64 with -1 unlabelled, pseudo (t,t) int64)."""
        rng, t = self.rng, self.tile
        classes = [k for k in range(self.n_classes) if self.coords[k]]
        if classes and rng.random() < self.stroke_focus:
            k = classes[rng.integers(len(classes))]
            i, flat = self.coords[k][rng.integers(len(self.coords[k]))]
            s = self.samples[i]
            p = flat[rng.integers(flat.size)]
            cy, cx = divmod(int(p), s.labels.shape[1])
            # Jitter so the labelled pixel is not always at the tile centre.
            cy += int(rng.integers(-t // 4, t // 4 + 1))
            cx += int(rng.integers(-t // 4, t // 4 + 1))
        else:
            i = int(rng.choice(len(self.samples), p=self.image_p))
            s = self.samples[i]
            cy = int(rng.integers(0, s.labels.shape[0]))
            cx = int(rng.integers(0, s.labels.shape[1]))
        y0, y1, x0, x1 = self._window(s, cy, cx)
        return self._crop(s, y0, y1, x0, x1, s.train_labels)

    def _crop(self, s: Sample, y0, y1, x0, x1, labels):
        t = self.tile
        img = s.read(y0, y1, x0, x1, self.stats)
        lab = labels[y0:y1, x0:x1].astype(np.int64) - 1
        pse = (s.pseudo[y0:y1, x0:x1].astype(np.int64) - 1) if s.pseudo is not None else np.full(lab.shape, -1)
        h, w = lab.shape
        if h < t or w < t:  # image smaller than a tile: pad, padded pixels are unlabelled
            img = pad_to(img, t, t)
            lab = np.pad(lab, ((0, t - h), (0, t - w)), constant_values=-1)
            pse = np.pad(pse, ((0, t - h), (0, t - w)), constant_values=-1)
        return np.ascontiguousarray(img, dtype=np.float32), lab, pse

    def validation_tiles(self, max_tiles: int = 32):
        """Fixed tiles that cover the validation strokes (deterministic)."""
        from skimage.measure import regionprops, label as cc_label
        tiles = []
        for s in self.samples:
            if not s.val_labels.any():
                continue
            for r in regionprops(cc_label(s.val_labels > 0, connectivity=2)):
                cy, cx = (int(v) for v in r.centroid)
                tiles.append(self._crop(s, *self._window(s, cy, cx), s.val_labels))
        if len(tiles) > max_tiles:
            idx = np.linspace(0, len(tiles) - 1, max_tiles).round().astype(int)
            tiles = [tiles[i] for i in idx]
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
