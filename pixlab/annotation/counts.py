"""Counts of an annotation session: pixels and strokes per class and image, and the guide's warnings."""

from __future__ import annotations

from pixlab.labels.masks import annotation_warnings

__all__ = ["CountsMixin"]


class CountsMixin:
    """Statistics for :class:`~pixlab.annotation.AnnotationSession`, cached per labels version."""

    def stats(self, image=None) -> list[dict]:
        """Per-class ``{"class", "id", "pixels", "strokes"}`` of one image (see :func:`pixlab.labels.masks.label_stats`)."""
        from pixlab.labels.components import store_stats

        i = self.index_of(image)
        with self.lock:
            if i not in self._stores and self._labels_file(i) is None:
                # Never opened and nothing saved: no need to open the image and allocate its labels.
                return [{"class": n, "id": k, "pixels": 0, "strokes": 0}
                        for k, n in enumerate(self.class_names, start=1)]
            store = self.label_store(i)
            key = (id(store), store.version, tuple(self.class_names))
            cached = self._stats_cache.get(i)
            if cached is not None and cached[0] == key:
                return [dict(s) for s in cached[1]]
            stats = store_stats(store, self.class_names)
            self._stats_cache[i] = (key, stats)
            return [dict(s) for s in stats]

    def label_problems(self) -> dict[str, str]:
        """Images whose saved labels cannot be used (e.g. a file of another shape): ``{name: message}``."""
        problems = {}
        for i in range(self.n_images):
            try:
                self.stats(i)
            except ValueError as e:
                problems[self.names[i]] = str(e)
        return problems

    def total_stats(self) -> list[dict]:
        """Per-class counts summed over all images (images with unusable label files are skipped;
        see :meth:`label_problems`)."""
        total = [{"class": n, "id": k, "pixels": 0, "strokes": 0} for k, n in enumerate(self.class_names, start=1)]
        for i in range(self.n_images):
            try:
                per_image = self.stats(i)
            except ValueError:
                continue
            for t, s in zip(total, per_image):
                t["pixels"] += s["pixels"]
                t["strokes"] += s["strokes"]
        return total

    def image_summary(self) -> list[dict]:
        """One row per image: ``{"image", "index", "pixels", "strokes", "classes": {name: (pixels, strokes)}}``."""
        rows = []
        for i in range(self.n_images):
            st = self.stats(i)
            rows.append({"image": self.names[i], "index": i, "pixels": sum(s["pixels"] for s in st),
                         "strokes": sum(s["strokes"] for s in st),
                         "classes": {s["class"]: (s["pixels"], s["strokes"]) for s in st}})
        return rows

    def warnings(self) -> list[str]:
        """The annotation guide's warnings (too few strokes per class, imbalance) over all images, and
        one line per image whose saved labels cannot be used."""
        return annotation_warnings(self.total_stats()) + list(self.label_problems().values())
