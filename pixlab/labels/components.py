"""Strokes of a chunked label store: 8-connected components of one class, found chunk by chunk.

A stroke that crosses a chunk border is one stroke: components are labelled inside each painted
chunk and joined across borders (and corners) with a union-find over the chunks' edge pixels, so
nothing image-sized is ever built. :func:`store_stats` counts pixels and strokes per class (the same
numbers as :func:`pixlab.labels.masks.label_stats` on the dense array); :func:`split_store_strokes`
holds out whole strokes for validation.
"""

from __future__ import annotations

import numpy as np

__all__ = ["StoreComponents", "store_components", "store_stats", "split_store_strokes"]


def _label_chunk(arr: np.ndarray):
    """8-connected components of equal value in a chunk: (map int32, n)."""
    from skimage.measure import label

    cc, n = label(arr, background=0, connectivity=2, return_num=True)
    return cc.astype(np.int32, copy=False), int(n)


class _UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, a: int) -> int:
        p = self.parent
        root = a
        while p[root] != root:
            root = p[root]
        while p[a] != root:  # path compression
            p[a], a = root, p[a]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


class StoreComponents:
    """The strokes of a store: for each painted chunk, its local component ids mapped to strokes.

    Attributes
    ----------
    offsets : dict (cy, cx) -> int
        Global id of the chunk's local component 1 is ``offsets[key] + 1``.
    root : numpy.ndarray
        Stroke (root global id) of every global component id (index 0 unused).
    klass : numpy.ndarray
        Class of every global component id.
    """

    def __init__(self, store, offsets, root, klass):
        self.store, self.offsets, self.root, self.klass = store, offsets, root, klass

    def strokes(self) -> dict[int, list[int]]:
        """``{class: [stroke ids, in order of first appearance]}``."""
        out: dict[int, list[int]] = {}
        seen = set()
        for g in range(1, len(self.root)):
            r = int(self.root[g])
            if r not in seen:
                seen.add(r)
                out.setdefault(int(self.klass[r]), []).append(r)
        return out

    def chunk_strokes(self, key):
        """``(chunk labels, component map, local->stroke lookup)`` of one painted chunk."""
        arr = self.store._get(key)
        cc, n = _label_chunk(arr)
        off = self.offsets[key]
        lut = np.zeros(n + 1, np.int64)
        lut[1:] = self.root[off + 1: off + n + 1]
        return arr, cc, lut


def store_components(store) -> StoreComponents:
    """Label the strokes of a :class:`~pixlab.labels.store.LabelStore` chunk by chunk (see the module doc)."""
    keys = store.painted_keys()
    offsets, edges, klass = {}, {}, [np.zeros(1, np.int64)]
    total = 0
    for key in keys:
        arr = store._get(key)
        cc, n = _label_chunk(arr)
        offsets[key] = total
        glob = np.where(cc > 0, cc.astype(np.int64) + total, 0)
        # Keep only the four edges (labels and values) to join with the neighbours.
        # Copies: views would keep every chunk's whole int64 map alive (2 MB per 512 px chunk).
        edges[key] = {"top": (glob[0].copy(), arr[0].copy()), "bottom": (glob[-1].copy(), arr[-1].copy()),
                      "left": (glob[:, 0].copy(), arr[:, 0].copy()), "right": (glob[:, -1].copy(), arr[:, -1].copy())}
        cls = np.zeros(n, np.int64)
        flat_cc, flat_v = cc.ravel(), arr.ravel()
        nz = flat_cc > 0
        cls[flat_cc[nz] - 1] = flat_v[nz]
        klass.append(cls)
        total += n
    uf = _UnionFind(total + 1)

    def join(ga, va, gb, vb):
        # Pixel i of edge a touches pixels i-1, i, i+1 of the facing edge b (8-connectivity).
        for shift in (-1, 0, 1):
            if shift < 0:
                a, b, xa, xb = ga[1:], gb[:-1], va[1:], vb[:-1]
            elif shift > 0:
                a, b, xa, xb = ga[:-1], gb[1:], va[:-1], vb[1:]
            else:
                a, b, xa, xb = ga, gb, va, vb
            m = (a > 0) & (b > 0) & (xa == xb)
            for p, q in set(zip(a[m].tolist(), b[m].tolist())):
                uf.union(p, q)

    for (cy, cx) in keys:
        e = edges[(cy, cx)]
        right = edges.get((cy, cx + 1))
        if right is not None:
            join(*e["right"], *right["left"])
        down = edges.get((cy + 1, cx))
        if down is not None:
            join(*e["bottom"], *down["top"])
        for dx, mine, theirs in ((1, -1, 0), (-1, 0, -1)):  # diagonal neighbours touch at one corner
            diag = edges.get((cy + 1, cx + dx))
            if diag is not None:
                ga, va = e["bottom"][0][mine], e["bottom"][1][mine]
                gb, vb = diag["top"][0][theirs], diag["top"][1][theirs]
                if ga > 0 and gb > 0 and va == vb:
                    uf.union(int(ga), int(gb))
    root = np.array([uf.find(g) for g in range(total + 1)], np.int64)
    return StoreComponents(store, offsets, root, np.concatenate(klass))


def store_stats(store, class_names) -> list[dict]:
    """Pixels and strokes per class of a store, like :func:`pixlab.labels.masks.label_stats` of its array."""
    names = list(class_names)
    counts = store.bincount(len(names) + 1)
    top = int(np.flatnonzero(counts)[-1]) if counts[1:].any() else 0
    if top > len(names):
        raise ValueError(f"labels contain class id {top} but only {len(names)} class names were given "
                         f"({', '.join(map(repr, names))}); add the class name or relabel")
    strokes = {k: len(v) for k, v in store_components(store).strokes().items()}
    return [{"class": n, "id": k, "pixels": int(counts[k]), "strokes": int(strokes.get(k, 0))}
            for k, n in enumerate(names, start=1)]


def split_store_strokes(stores, n_classes: int, fraction: float, seed: int):
    """Hold out a fraction of each class's strokes for validation, over several stores.

    Same rule as :func:`pixlab.training.samples.split_strokes` (at least one stroke held out per class
    with 2+ strokes, never all of them), applied to whole strokes across chunk borders.

    Returns
    -------
    train, val : lists of LabelStore
    info : dict
        ``train_strokes`` and ``val_strokes`` per class.
    """
    rng = np.random.default_rng(seed)
    comps = [store_components(s) for s in stores]
    per_class = [c.strokes() for c in comps]
    held = [set() for _ in stores]
    info = {"train_strokes": [], "val_strokes": []}
    for k in range(1, n_classes + 1):
        all_k = [(i, r) for i, pc in enumerate(per_class) for r in pc.get(k, [])]
        n = len(all_k)
        n_val = int(round(fraction * n)) if n >= 2 else 0
        n_val = min(max(n_val, 1 if fraction > 0 and n >= 2 else 0), n - 1) if n else 0
        for j in (rng.choice(n, size=n_val, replace=False) if n_val else []):
            i, r = all_k[j]
            held[i].add(r)
        info["train_strokes"].append(n - n_val)
        info["val_strokes"].append(n_val)
    train, val = [], []
    for store, comp, h in zip(stores, comps, held):
        t, v = store.empty_like(), store.empty_like()
        hold = np.array(sorted(h), np.int64)
        for key in store.painted_keys():
            arr, cc, lut = comp.chunk_strokes(key)
            in_val = np.isin(lut, hold)
            in_val[0] = False
            m = in_val[cc]
            region = store.chunk_region(key)
            if m.any():
                v.write(region, np.where(m, arr, 0))
            if not m.all():
                t.write(region, np.where(m, 0, arr))
        t.mark_clean()
        v.mark_clean()
        train.append(t)
        val.append(v)
    return train, val, info
