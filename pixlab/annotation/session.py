"""The brush annotator's model: labels per image, classes, strokes with undo, autosave and instant preview.

Core module (no Jupyter imports). :class:`pixlab.widgets.BrushAnnotator` only turns mouse and key
events into calls of :class:`AnnotationSession`, so everything here is usable (and tested) from plain
Python.

Design notes
------------
- Labels of each image are a sparse, chunked :class:`pixlab.labels.store.LabelStore` (only painted
  512-px chunks exist), loaded lazily, so a 100,000-px slide costs what was painted. A mouse move
  paints one *segment* (a capsule between two points), touching only the chunks under it.
- Undo stores per stroke the pixels that changed and their previous values (:mod:`.history`).
- Autosave (:mod:`.autosave`): a debounce thread writes the labels a moment after the last stroke,
  atomically: a PNG (TIFF beyond 255 classes) for images up to 16 Mpx, else a chunked
  ``.labels.zarr`` where only the chunks changed since the last save are written (:mod:`.files`).
- Preview (:mod:`.preview`): a random forest refitted in a background thread; latest request wins.
- The concerns live in their own modules; this class ties them together: images and names
  (:mod:`.sources`), classes (:mod:`.classes`), edits and undo (:mod:`.editing`), saving
  (:mod:`.saving`).
"""

from __future__ import annotations

import atexit
import threading
import weakref
from pathlib import Path
from typing import Callable

import numpy as np

import pixlab.annotation.files as files
from pixlab.annotation.autosave import Autosaver
from pixlab.annotation.classes import ClassesMixin, resolve_classes
from pixlab.annotation.editing import EditingMixin
from pixlab.annotation.history import History
from pixlab.annotation.counts import CountsMixin
from pixlab.annotation.preview import PreviewMixin, Previewer
from pixlab.annotation.regions import RegionsMixin
from pixlab.annotation.saving import SavingMixin
from pixlab.annotation.sources import collect_sources, unique_names
from pixlab.labels.store import LabelStore

__all__ = ["AnnotationSession"]


def _flush_if_alive(ref) -> None:
    session = ref()
    if session is not None:
        try:
            session.flush()
        except Exception:  # interpreter shutdown: never raise from atexit
            pass


class AnnotationSession(ClassesMixin, EditingMixin, RegionsMixin, CountsMixin, PreviewMixin, SavingMixin):
    """Brush annotation of one or several images (any size: whole slides too).

    Parameters
    ----------
    images : path, Image, array, or list of them
        A single image, a list of images, or a folder (every image file in it, sorted by name,
        except ``*.labels.*`` files).
    class_names : list of str, optional
        Classes ``1..K``. Default: the classes saved with existing labels, else
        ``["background", "foreground"]``.
    colours : list of colours, optional
        One per class; default the saved ones, else :func:`pixlab.labels.masks.default_colours`.
    labels_dir : path, optional
        Where labels are autosaved. Default: a ``labels`` folder next to the (first) image file; for
        in-memory images without a path, autosave is off unless this is given.
    autosave : bool
        Write labels to disk a moment after each stroke. Without it, :meth:`flush` (also called by
        :meth:`training_samples` and :meth:`close`) writes the edits.
    autosave_delay : float
        Seconds of quiet after the last edit before writing (debounce).
    channels : list of int or str, optional
        Channels used by the preview and by :meth:`training_samples` (default all).
    per_channel : bool
        Normalize each channel on its own for the preview (as ``TrainConfig.per_channel``).
    classifier : pixlab.training.forest.FeatureClassifier, optional
        The preview classifier (default: 32 trees of depth 10, sigmas 1-16).
    max_undo : int
        Strokes kept for undo per image.

    Attributes
    ----------
    lock : threading.RLock
        Held while labels change; hold it to read several things consistently.

    Examples
    --------
    >>> import numpy as np
    >>> s = AnnotationSession(np.zeros((32, 32), np.uint8), ["bg", "cells"], autosave=False)
    >>> s.paint([(5, 5), (5, 20)], class_id=2, radius=1).n_changed  # 16 x 3 pixels + 2 round ends
    50
    >>> _ = s.undo(); int(s.labels.sum())
    0
    """

    def __init__(self, images, class_names=None, colours=None, labels_dir=None, *, autosave: bool = True,
                 autosave_delay: float = 0.5, channels=None, per_channel: bool = True, classifier=None,
                 max_undo: int = 200):
        self.lock = threading.RLock()
        self._sources = collect_sources(images)
        self.names = unique_names(self._sources)
        self._images: dict[int, object] = {}
        self._stores: dict[int, LabelStore] = {}
        self._stats_cache: dict[int, tuple] = {}
        self._history = History(max_undo)
        self._stroke = None
        self._listeners: list[Callable] = []
        self.index = 0

        first_path = next((p for p in self._sources if isinstance(p, Path)), None)
        if labels_dir is None and first_path is not None:
            labels_dir = first_path.parent / "labels"
        self.labels_dir = None if labels_dir is None else Path(labels_dir)
        self.autosave = bool(autosave) and self.labels_dir is not None
        self.class_names, self.colours = resolve_classes(self.names, self.labels_dir, class_names, colours)
        self._channels = None
        self._per_channel = bool(per_channel)

        self._dirty: set[int] = set()
        self._closed = False
        self.last_error: str | None = None
        self._autosaver = Autosaver(self.flush, self._autosave_failed, autosave_delay)
        self._previewer = Previewer(self, classifier, on_error=self._note_error)
        atexit.register(_flush_if_alive, weakref.ref(self))
        if channels is not None:
            self.channels = channels
        self.label_store(0)  # fail early on a mismatched labels file of the first image

    # ------------------------------------------------------------------------------------------
    # Images
    # ------------------------------------------------------------------------------------------
    @property
    def n_images(self) -> int:
        """Number of images in the session."""
        return len(self._sources)

    @property
    def max_undo(self) -> int:
        """Strokes kept for undo per image."""
        return self._history.max_undo

    @property
    def history(self) -> History:
        """The undo/redo stacks (read-only use: inspect, never edit)."""
        return self._history

    def index_of(self, image=None) -> int:
        """Index of an image given by index or name (default: the current image)."""
        if image is None:
            return self.index
        if isinstance(image, str):
            if image not in self.names:
                raise ValueError(f"image {image!r} is not in this session; images: {self.names}")
            return self.names.index(image)
        if isinstance(image, bool) or not isinstance(image, (int, np.integer)) or not 0 <= image < self.n_images:
            raise ValueError(f"image={image!r} is not valid; use 0..{self.n_images - 1} or a name from {self.names}")
        return int(image)

    _index = index_of  # the name the widgets and tests used before the split

    def image_of(self, image=None):
        """The :class:`pixlab.image.io.Image` of image ``image`` (index or name; default current), all channels."""
        from pixlab.image.io import open_image

        i = self.index_of(image)
        if i not in self._images:
            img = open_image(self._sources[i])
            if not isinstance(self._sources[i], Path) and img.name in ("image",):
                img.name = self.names[i]
            self._images[i] = img
        return self._images[i]

    @property
    def image(self):
        """The current image (all channels)."""
        return self.image_of(self.index)

    def select(self, image) -> int:
        """Make ``image`` (index or name) the current one; loads its labels. Returns its index."""
        i = self.index_of(image)
        self.label_store(i)
        self.index = i
        self._emit("image", image=i)
        return i

    @property
    def channels(self):
        """Channels (indices or names) used by the preview and training; None = all."""
        return self._channels

    @channels.setter
    def channels(self, value) -> None:
        if value is not None:
            value = list(value) if not isinstance(value, (str, int)) else [value]
            self.image.select_channels(value)  # lazy; raises a clear ValueError for unknown channels
        self._channels = value
        self._previewer.normalization_changed()

    @property
    def per_channel(self) -> bool:
        """Normalize each channel on its own (True) or all channels jointly, for the preview."""
        return self._per_channel

    @per_channel.setter
    def per_channel(self, value) -> None:
        self._per_channel = bool(value)
        self._previewer.normalization_changed()

    def image_for_training(self, image=None):
        """The image with the session's channel selection applied."""
        img = self.image_of(image)
        return img if self._channels is None else img.select_channels(self._channels)

    # ------------------------------------------------------------------------------------------
    # Labels
    # ------------------------------------------------------------------------------------------
    def label_store(self, image=None) -> LabelStore:
        """The live :class:`~pixlab.labels.store.LabelStore` of an image (loaded on first use).

        Edit labels only through the session (paint, set_labels...), so undo, autosave and caches follow.

        Raises
        ------
        ValueError
            The saved labels file has another shape than the image's level 0, or unknown class ids.
        """
        i = self.index_of(image)
        with self.lock:
            store = self._stores.get(i)
            if store is None:
                shape = self.image_of(i).shape[1:]
                path = self._labels_file(i)
                if path is not None:
                    store = files.load_store(path, shape, self.class_names, self.names[i])
                else:
                    store = LabelStore(shape, np.uint8 if self.n_classes <= 255 else np.uint16)
                self._stores[i] = store
            return store

    def labels_of(self, image=None) -> np.ndarray:
        """The ``(Y, X)`` label array of an image (index or name; default current).

        Images up to :data:`pixlab.labels.store.DENSE_PIXELS` (16 Mpx): the live array (edit it only
        through this session). Larger ones: a copy, refused for whole slides, whose labels are too
        large for one array - use :meth:`label_store` or :meth:`read_labels` there.
        """
        with self.lock:
            store = self.label_store(image)
            live = store.live_array()
            return live if live is not None else store.to_array()

    @property
    def labels(self) -> np.ndarray:
        """The current image's labels as an array (see :meth:`labels_of`)."""
        return self.labels_of(self.index)

    def read_labels(self, region=None, image=None) -> np.ndarray:
        """A copy of labels in full-res ``region`` ``(y0, y1, x0, x1)`` of an image."""
        with self.lock:
            return self.label_store(image).read(region)

    def labels_version(self, image=None) -> int:
        """A number that changes whenever the labels of an image change (for caches)."""
        with self.lock:
            return self.label_store(image).version

    def labels_versions(self) -> tuple:
        """:meth:`labels_version` of every image that has been loaded (0 for the others), in order."""
        with self.lock:
            return tuple(self._stores[i].version if i in self._stores else 0 for i in range(self.n_images))

    def labels_snapshot(self, region=None, image=None) -> tuple[int, np.ndarray]:
        """``(version, labels of region)`` read together, consistent with each other."""
        with self.lock:
            store = self.label_store(image)
            return store.version, store.read(region)

    def _touch(self, i: int) -> None:
        self._mark_dirty(i)

    # ------------------------------------------------------------------------------------------
    # Listeners
    # ------------------------------------------------------------------------------------------
    def subscribe(self, callback: Callable) -> None:
        """Call ``callback(event, **info)`` on events: "image" (switched), "classes" (edited), "labels"
        (replaced with :meth:`set_labels`; strokes do not announce themselves), "saved", "error"."""
        self._listeners.append(callback)

    def _emit(self, event: str, **info) -> None:
        for cb in list(self._listeners):
            try:
                cb(event, **info)
            except Exception as e:  # a broken view must not break annotation
                self.last_error = f"listener {cb!r} failed on {event!r}: {e}"

    def _note_error(self, message: str) -> None:
        self.last_error = message

    # ------------------------------------------------------------------------------------------
    # Lifecycle (saving itself: :mod:`.saving`)
    # ------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Save pending edits and stop the background threads."""
        self.flush()
        self._closed = True
        self._autosaver.close()
        self._previewer.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------------------------------
    # Training data
    # ------------------------------------------------------------------------------------------
    def training_samples(self) -> list[tuple]:
        """``[(Image, labels)]`` of every image with labels, channels selected, for :func:`pixlab.train`.

        ``labels`` is an array copy for images up to :data:`pixlab.training.samples.IN_MEMORY_PIXELS`
        (what training holds in memory), else a copy of the image's
        :class:`~pixlab.labels.store.LabelStore` (training reads it chunk by chunk).
        Pending edits are saved first, so what is trained is also on disk.

        Raises
        ------
        OSError
            When the pending edits cannot be saved: a model trained now would rest on labels that
            exist nowhere but in this session's memory.
        """
        from pixlab.training.samples import IN_MEMORY_PIXELS

        try:
            self.flush()
        except OSError as e:
            self.last_error = str(e)
            raise OSError(f"cannot save the labels before training ({e}); a model trained now would use labels "
                          f"that are not on disk. Free space or fix the permissions of '{self.labels_dir}', "
                          f"then train again") from e
        samples = []
        with self.lock:
            for i in range(self.n_images):
                store = self.label_store(i)
                if store.any():
                    labels = store.to_array() if store.size <= IN_MEMORY_PIXELS else store.copy()  # a copy either way
                    samples.append((self.image_for_training(i), labels))
        if not samples:
            raise ValueError("no image has labels yet; brush at least one stroke of each class before training")
        return samples
