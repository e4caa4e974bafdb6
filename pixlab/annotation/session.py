"""The brush annotator's model: labels per image, classes, strokes with undo, autosave and instant preview.

Core module (no Jupyter imports). :class:`pixlab.widgets.BrushAnnotator` only turns mouse and key
events into calls of :class:`AnnotationSession`, so everything here is usable (and tested) from plain
Python.

Design notes
------------
- Labels are full-resolution ``(Y, X)`` arrays (0 = unlabelled, ``k`` = class ``k``), one per image,
  loaded lazily. A mouse move paints one *segment* (a capsule between two points), touching only the
  pixels inside its bounding box, so the cost per event does not grow with the image.
- Undo stores, per stroke, the flat indices of the pixels that changed and their previous values:
  a stroke of 2 000 pixels costs ~10 kB, not a copy of the image.
- Autosave: a debounce thread writes ``<labels_dir>/<image stem>.labels.png`` (atomically, via
  :func:`pixlab.labels.masks.save_labels`) plus a JSON sidecar with class names and colours, a moment after
  the last stroke. Reopening a session on the same image reloads them.
- Preview: a :class:`pixlab.training.forest.FeatureClassifier` fitted in a background thread; requests are
  "latest wins" (a request made while a fit runs replaces any older pending one, and its waiters get
  the newer answer). After deep-learning training, :meth:`AnnotationSession.set_model` makes the
  preview come from the network instead.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pixlab._atomic import atomic_write
from pixlab.labels.masks import (
    annotation_warnings,
    default_colours,
    label_stats,
    load_labels,
    parse_colour,
    save_labels,
)

__all__ = ["AnnotationSession", "AnnotationGuide", "GUIDE_OVERLAYS", "Change", "PreviewResult", "labels_path_for",
           "MIN_RADIUS"]

#: Brushes thinner than this radius (pixels) paint one-pixel lines: their points snap to the nearest
#: pixel centre and the line keeps the pixels within half a pixel of it. From this radius up (a hair
#: more than half a pixel's diagonal) a click always covers the pixel under it wherever it falls.
MIN_RADIUS = 0.71

_SIDE_FORMAT = "pixlab-labels"
_IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".btf")

# Preview features cost 4 bytes x (4 filters x n_sigmas) x channels per pixel; beyond this budget the
# preview is computed on a downsampled level instead (a 1024^2 RGB image fits at full resolution).
_PREVIEW_FEATURE_BYTES = 256 * 2**20
# A deep-learning preview larger than this (pixels) asks the user to zoom in instead of waiting minutes.
_MODEL_PREVIEW_PIXELS = 4_000_000
# The guide keeps whole-image probabilities and maps in memory (~(K + 6) x 4 bytes per pixel, ~0.3 GB
# at 8 Mpx and 3 classes); larger images are analysed in the visible region instead.
_GUIDE_PIXELS = 8_000_000

#: Overlays offered by :meth:`AnnotationGuide.overlay` (and the annotator's "Overlay" menu).
GUIDE_OVERLAYS = ("none", "prediction", "confidence", "entropy", "disagreement", "loss")


def labels_path_for(labels_dir, image_name: str, n_classes: int = 1) -> Path:
    """Where the autosaved labels of an image live: ``<labels_dir>/<image name>.labels.png`` (``.tif`` > 255 classes)."""
    suffix = ".png" if n_classes <= 255 else ".tif"
    return Path(labels_dir) / f"{image_name}.labels{suffix}"


@dataclass
class Change:
    """What an edit did, for redrawing: the image, the full-res bounding box and the pixel count.

    Attributes
    ----------
    image : int
        Index of the edited image.
    region : (y0, y1, x0, x1) or None
        Bounding box of changed pixels (None when nothing changed).
    n_changed : int
        Number of pixels whose label changed.
    message : str or None
        Why nothing happened (e.g. a stroke entirely outside the image).
    """

    image: int
    region: tuple | None = None
    n_changed: int = 0
    message: str | None = None


@dataclass
class PreviewResult:
    """Class probabilities for (part of) an image, with where they lie.

    Attributes
    ----------
    probs : numpy.ndarray or None
        ``(K, h, w)`` float32; ``probs[k - 1]`` is class ``k``. None when no preview could be made
        (see ``message``).
    origin : (int, int)
        Full-resolution ``(y, x)`` of ``probs[:, 0, 0]``.
    factor : int
        Full-resolution pixels per ``probs`` pixel (1 unless the view was too large for the budget).
    region : (y0, y1, x0, x1)
        The full-resolution region that was asked for.
    source : {"features", "model"}
        Random forest on features, or the deep-learning model set with ``set_model``.
    image : int
        Image index.
    message : str or None
        Why ``probs`` is None.
    elapsed_s : float
        Time to compute it.
    """

    probs: np.ndarray | None
    origin: tuple = (0, 0)
    factor: int = 1
    region: tuple = (0, 0, 0, 0)
    source: str = "features"
    image: int = 0
    message: str | None = None
    elapsed_s: float = 0.0

    def full_resolution(self) -> np.ndarray | None:
        """``probs`` for exactly ``region`` at full resolution (nearest-neighbour upsampling)."""
        if self.probs is None:
            return None
        f = int(self.factor)
        up = self.probs if f == 1 else np.repeat(np.repeat(self.probs, f, axis=1), f, axis=2)
        y0, y1, x0, x1 = self.region
        oy, ox = self.origin
        return up[:, y0 - oy:y1 - oy, x0 - ox:x1 - ox]


@dataclass
class _Stroke:
    image: int
    chunks: list = field(default_factory=list)  # (flat indices, old values, new value)
    bbox: list = field(default_factory=lambda: [math.inf, -math.inf, math.inf, -math.inf])

    def add(self, idx, old, value, box) -> None:
        self.chunks.append((idx, old, value))
        b = self.bbox
        self.bbox = [min(b[0], box[0]), max(b[1], box[1]), min(b[2], box[2]), max(b[3], box[3])]

    @property
    def region(self):
        return None if not self.chunks else tuple(int(v) for v in self.bbox)


def _image_stem(path) -> str:
    """File name without its image suffix (``a.ome.tif`` -> ``a``), the key of its labels file."""
    from pixlab.image.io import PIL_SUFFIXES, TIFF_SUFFIXES

    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.btf") + TIFF_SUFFIXES + PIL_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def _is_label_file(name: str) -> bool:
    lower = name.lower()
    return ".labels." in lower or lower.endswith(".labels")


def _list_folder(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in _IMAGE_SUFFIXES
                   and not _is_label_file(p.name))
    if not files:
        raise FileNotFoundError(
            f"folder '{folder}' holds no images (.tif/.png/.jpg); check the path or pass a list of files"
        )
    return files


def _check_points(points) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 2:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(
            f"points must be a list of (y, x) pairs in image pixels, got an array of shape {arr.shape}; "
            "e.g. [(10, 12), (11, 15)]"
        )
    if not np.isfinite(arr).all():
        raise ValueError("points contain NaN or infinite coordinates; pass finite (y, x) image coordinates")
    return arr


def _segment_mask(a, b, radius, y0, y1, x0, x1) -> np.ndarray:
    """Pixels of box [y0:y1, x0:x1] whose centre is within ``radius`` of segment a-b (a capsule)."""
    yy = np.arange(y0, y1, dtype=np.float64)[:, None]
    xx = np.arange(x0, x1, dtype=np.float64)[None, :]
    dy, dx = b[0] - a[0], b[1] - a[1]
    length2 = dy * dy + dx * dx
    if length2 == 0:
        d2 = (yy - a[0]) ** 2 + (xx - a[1]) ** 2
    else:
        t = np.clip(((yy - a[0]) * dy + (xx - a[1]) * dx) / length2, 0.0, 1.0)
        d2 = (yy - (a[0] + t * dy)) ** 2 + (xx - (a[1] + t * dx)) ** 2
    return d2 <= radius * radius


def _flush_if_alive(ref) -> None:
    session = ref()
    if session is not None:
        try:
            session.flush()
        except Exception:  # interpreter shutdown: never raise from atexit
            pass


def _check_model(model) -> None:
    """One error for anything that is not a model (None is allowed: no model)."""
    if model is not None and not hasattr(model, "predict"):
        raise ValueError(f"model must be a pixlab Model with a predict() method, got {type(model).__name__}")


class AnnotationSession:
    """Brush annotation of one or several images.

    Parameters
    ----------
    images : path, Image, array, or list of them
        A single image, a list of images, or a folder (every .tif/.png/.jpg in it, sorted by name,
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
        self._lock = threading.RLock()
        self._sources = self._collect_sources(images)
        self._images: dict[int, object] = {}
        self._labels: dict[int, np.ndarray] = {}
        self._versions: dict[int, int] = {}
        self._stats_cache: dict[int, tuple] = {}
        self._undo: dict[int, list] = {}
        self._redo: dict[int, list] = {}
        self._stroke: _Stroke | None = None
        self.max_undo = int(max_undo)
        self._listeners: list[Callable] = []
        self.names = self._unique_names()
        self.index = 0

        first_path = next((p for p in self._sources if isinstance(p, Path)), None)
        if labels_dir is None and first_path is not None:
            labels_dir = first_path.parent / "labels"
        self.labels_dir = None if labels_dir is None else Path(labels_dir)
        self.autosave = bool(autosave) and self.labels_dir is not None
        self.autosave_delay = float(autosave_delay)

        self.class_names, self.colours = self._resolve_classes(class_names, colours)
        self._channels = None
        self._per_channel = bool(per_channel)
        self._stats_norm: dict = {}
        if channels is not None:
            self.channels = channels

        # Autosave machinery: a debounce thread started on the first edit.
        self._dirty: set[int] = set()
        self._deadline = None
        self._save_cond = threading.Condition(self._lock)
        self._saver = None
        self._closed = False
        self.last_error: str | None = None
        atexit.register(_flush_if_alive, weakref.ref(self))

        # Preview machinery.
        self._classifier = classifier
        self._model = None
        self._model_cache: dict = {}
        self._preview_cond = threading.Condition()
        self._preview_request = None
        self._preview_generation = 0
        self._preview_waiters: list = []
        self._preview_thread = None
        self._preview_busy = False
        self.last_preview: PreviewResult | None = None

        self._load_labels(0)  # fail early on a mismatched labels file of the first image

    # ------------------------------------------------------------------------------------------
    # Construction helpers
    # ------------------------------------------------------------------------------------------

    @staticmethod
    def _collect_sources(images) -> list:
        from pixlab.image.io import Image

        if isinstance(images, (str, os.PathLike)):
            path = Path(images)
            if path.is_dir():
                return list(_list_folder(path))
            if not path.exists():
                raise FileNotFoundError(f"image '{path}' does not exist; check the path or pass a folder of images")
            return [path]
        if isinstance(images, (np.ndarray, Image)) or hasattr(images, "dask"):
            return [images]
        try:
            items = list(images)
        except TypeError:
            raise ValueError(
                f"images must be a path, a folder, an Image, an array or a list of them, got {type(images).__name__}"
            ) from None
        if not items:
            raise ValueError("images is empty; pass at least one image, a list of images or a folder")
        out = []
        for item in items:
            if isinstance(item, (str, os.PathLike)):
                item = Path(item)
                if not item.is_file():
                    raise FileNotFoundError(f"image '{item}' does not exist; check the path")
            out.append(item)
        return out

    def _unique_names(self) -> list[str]:
        from pixlab.image.io import Image

        names = []
        for i, src in enumerate(self._sources):
            if isinstance(src, Path):
                names.append(_image_stem(src))
            elif isinstance(src, Image):
                names.append(src.name if src.path is None else _image_stem(src.path))
            else:
                names.append("image")
        seen: dict[str, int] = {}
        for n in names:
            seen[n] = seen.get(n, 0) + 1
        dupes = {n for n, c in seen.items() if c > 1}
        file_dupes = [n for i, n in enumerate(names) if n in dupes and isinstance(self._sources[i], Path)]
        if file_dupes:
            raise ValueError(
                f"several images are named '{file_dupes[0]}'; their label files would overwrite each other - "
                "rename the files or annotate them in separate sessions"
            )
        counter: dict[str, int] = {}
        out = []
        for n in names:
            if n in dupes:
                counter[n] = counter.get(n, 0) + 1
                n = f"{n}_{counter[n]}"
            out.append(n)
        return out

    def _sidecar_path(self, i: int) -> Path | None:
        return None if self.labels_dir is None else self.labels_dir / f"{self.names[i]}.labels.json"

    def _read_sidecar(self, i: int):
        path = self._sidecar_path(i)
        if path is None or not path.is_file():
            return None
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"labels sidecar '{path}' is not readable JSON ({e}); delete or fix it") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("class_names"), list):
            raise ValueError(f"labels sidecar '{path}' has no class_names list; delete or fix it")
        return meta

    def _resolve_classes(self, class_names, colours):
        saved = [(i, m) for i in range(len(self._sources)) if (m := self._read_sidecar(i)) is not None]
        if class_names is None:
            longest = max((m for _, m in saved), key=lambda m: len(m["class_names"]), default=None)
            names = list(longest["class_names"]) if longest else ["background", "foreground"]
            if colours is None and longest and longest.get("colours"):
                colours = longest["colours"]
        else:
            if isinstance(class_names, str):
                raise ValueError(f"class_names must be a list of names, got the string {class_names!r}")
            names = [str(n) for n in class_names]
        if not names or any(not n.strip() for n in names) or len(set(names)) != len(names):
            raise ValueError(f"class_names={names!r} must be non-empty, unique names; e.g. ['background', 'cells']")
        for i, meta in saved:
            old = [str(n) for n in meta["class_names"]]
            if names[:len(old)] != old:
                raise ValueError(
                    f"labels of image '{self.names[i]}' in '{self.labels_dir}' were drawn with classes {old} "
                    f"but this session has {names}; pass class_names={old} (new classes may follow them) "
                    "or use another labels_dir"
                )
        if colours is None:
            colours = default_colours(len(names))
        colours = [parse_colour(c) for c in colours]
        if len(colours) < len(names):
            colours = colours + default_colours(len(names))[len(colours):]
        return names, colours[:len(names)]

    # ------------------------------------------------------------------------------------------
    # Images and labels
    # ------------------------------------------------------------------------------------------

    @property
    def n_images(self) -> int:
        """Number of images in the session."""
        return len(self._sources)

    @property
    def n_classes(self) -> int:
        """Number of classes ``K``."""
        return len(self.class_names)

    def _index(self, image) -> int:
        if image is None:
            return self.index
        if isinstance(image, str):
            if image not in self.names:
                raise ValueError(f"image {image!r} is not in this session; images: {self.names}")
            return self.names.index(image)
        if isinstance(image, bool) or not isinstance(image, (int, np.integer)) or not 0 <= image < self.n_images:
            raise ValueError(f"image={image!r} is not valid; use 0..{self.n_images - 1} or a name from {self.names}")
        return int(image)

    def image_of(self, image=None):
        """The :class:`pixlab.image.io.Image` of image ``image`` (index or name; default current), all channels."""
        from pixlab.image.io import open_image

        i = self._index(image)
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
        i = self._index(image)
        self._load_labels(i)
        self.index = i
        self._emit("image", image=i)
        return i

    def _load_labels(self, i: int) -> np.ndarray:
        with self._lock:
            if i in self._labels:
                return self._labels[i]
            img = self.image_of(i)
            shape = img.shape[1:]
            dtype = np.uint8 if self.n_classes <= 255 else np.uint16
            array = None
            if self.labels_dir is not None:
                for suffix in (".png", ".tif"):
                    path = self.labels_dir / f"{self.names[i]}.labels{suffix}"
                    if path.is_file():
                        try:
                            array = load_labels(path)
                        except ValueError as e:
                            raise ValueError(f"cannot reload labels of image '{self.names[i]}': {e}") from None
                        if array.shape != tuple(shape):
                            raise ValueError(
                                f"labels file '{path}' has shape {array.shape} but image '{self.names[i]}' is "
                                f"{tuple(shape)} (Y, X); it belongs to another image - move or delete it, "
                                "or pass another labels_dir"
                            )
                        top = int(array.max()) if array.size else 0
                        if top > self.n_classes:
                            raise ValueError(
                                f"labels file '{path}' contains class id {top} but the session has "
                                f"{self.n_classes} classes {self.class_names}; pass the class_names it was drawn with"
                            )
                        break
            self._labels[i] = np.zeros(shape, dtype) if array is None else array.astype(dtype)
            self._versions[i] = 0
            return self._labels[i]

    def labels_of(self, image=None) -> np.ndarray:
        """The live ``(Y, X)`` label array of an image (index or name; default current). Edit it only through this session."""
        return self._load_labels(self._index(image))

    @property
    def labels(self) -> np.ndarray:
        """The live label array of the current image."""
        return self.labels_of(self.index)

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
        self._stats_norm.clear()

    @property
    def per_channel(self) -> bool:
        """Normalize each channel on its own (True) or all channels jointly, for the preview."""
        return self._per_channel

    @per_channel.setter
    def per_channel(self, value) -> None:
        self._per_channel = bool(value)
        self._stats_norm.clear()

    def image_for_training(self, image=None):
        """The image with the session's channel selection applied."""
        img = self.image_of(image)
        return img if self._channels is None else img.select_channels(self._channels)

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

    # ------------------------------------------------------------------------------------------
    # Classes
    # ------------------------------------------------------------------------------------------

    def class_id(self, cls) -> int:
        """Class id ``1..K`` from an id or a name."""
        if isinstance(cls, str):
            if cls not in self.class_names:
                raise ValueError(f"class {cls!r} does not exist; classes: {self.class_names}")
            return self.class_names.index(cls) + 1
        if isinstance(cls, bool) or not isinstance(cls, (int, np.integer)) or not 1 <= cls <= self.n_classes:
            raise ValueError(
                f"class_id={cls!r} is not valid; use 1..{self.n_classes} or a name from {self.class_names}"
            )
        return int(cls)

    def _check_new_name(self, name) -> str:
        name = str(name).strip()
        if not name:
            raise ValueError("class name is empty; type a name such as 'nuclei'")
        if name in self.class_names:
            raise ValueError(f"class {name!r} already exists; choose another name")
        return name

    def add_class(self, name: str, colour=None) -> int:
        """Add a class; returns its id."""
        with self._lock:
            name = self._check_new_name(name)
            colour = parse_colour(colour) if colour is not None else default_colours(self.n_classes + 1)[-1]
            self.class_names.append(name)
            self.colours.append(colour)
            if self.n_classes == 256:  # labels no longer fit uint8 (and PNG): widen every array
                for i in self._labels:
                    self._labels[i] = self._labels[i].astype(np.uint16)
            self._classes_changed()
            return self.n_classes

    def rename_class(self, cls, new_name: str) -> None:
        """Rename a class (id or name)."""
        with self._lock:
            k = self.class_id(cls)
            if str(new_name).strip() == self.class_names[k - 1]:
                return
            self.class_names[k - 1] = self._check_new_name(new_name)
            self._classes_changed()

    def recolour_class(self, cls, colour) -> None:
        """Change a class's display colour (``"#rrggbb"`` or ``[r, g, b]``)."""
        with self._lock:
            self.colours[self.class_id(cls) - 1] = parse_colour(colour)
            self._classes_changed()

    def delete_class(self, cls, migrate_to=None, drop: bool = False) -> None:
        """Delete a class; higher class ids move down by one.

        Parameters
        ----------
        cls : int or str
            The class to delete.
        migrate_to : int or str, optional
            Relabel its pixels as this class.
        drop : bool
            Erase its pixels.

        Raises
        ------
        ValueError
            If the class has labelled pixels and neither ``migrate_to`` nor ``drop=True`` says what to do
            with them (pixels are never dropped silently), or if it is the last class.

        Notes
        -----
        Class ids shift, so the undo history of every image is cleared.
        """
        with self._lock:
            k = self.class_id(cls)
            if self.n_classes == 1:
                raise ValueError(f"class {self.class_names[0]!r} is the only class; add another class before deleting it")
            if migrate_to is not None and drop:
                raise ValueError("give either migrate_to= or drop=True, not both")
            target = None
            if migrate_to is not None:
                target = self.class_id(migrate_to)
                if target == k:
                    raise ValueError(f"migrate_to={migrate_to!r} is the class being deleted; choose another class")
            counts = {i: int(np.count_nonzero(self._load_labels(i) == k)) for i in range(self.n_images)}
            total = sum(counts.values())
            if total and target is None and not drop:
                n_img = sum(1 for c in counts.values() if c)
                raise ValueError(
                    f"class '{self.class_names[k - 1]}' has {total} labelled pixels in {n_img} image(s); "
                    f"pass migrate_to='<another class>' to relabel them or drop=True to erase them"
                )
            for i in range(self.n_images):
                lab = self._labels[i]
                if counts[i]:
                    lab[lab == k] = 0 if target is None else target
                above = lab > k
                lab[above] -= 1
                self._undo[i], self._redo[i] = [], []
                self._touch(i)
            del self.class_names[k - 1]
            del self.colours[k - 1]
            self._classes_changed()

    def _classes_changed(self) -> None:
        # Every saved file's sidecar lists the classes, so all images with labels are rewritten.
        for i in list(self._labels):
            path = self._existing_labels_file(i)
            if path is not None or self._labels[i].any():
                self._mark_dirty(i)
        self._emit("classes")

    # ------------------------------------------------------------------------------------------
    # Painting
    # ------------------------------------------------------------------------------------------

    def begin_stroke(self, image=None) -> None:
        """Start a stroke: the segments painted until :meth:`end_stroke` are undone together."""
        with self._lock:
            if self._stroke is not None:
                self.end_stroke()
            self._stroke = _Stroke(self._index(image))

    def end_stroke(self) -> Change | None:
        """Finish the current stroke and make it one undo step. Returns its :class:`Change` (or None)."""
        with self._lock:
            stroke, self._stroke = self._stroke, None
            if stroke is None:
                return None
            if stroke.chunks:
                self._push_undo(stroke)
            n = sum(len(c[0]) for c in stroke.chunks)
            return Change(stroke.image, stroke.region, n)

    def _push_undo(self, stroke: _Stroke) -> None:
        stack = self._undo.setdefault(stroke.image, [])
        stack.append(stroke)
        del stack[:-self.max_undo]
        self._redo[stroke.image] = []

    def _apply(self, i: int, idx: np.ndarray, value: int, box) -> None:
        """Set flat pixels ``idx`` of image ``i`` to ``value`` as one undoable stroke."""
        flat = self._labels[i].reshape(-1)
        stroke = _Stroke(i)
        stroke.add(idx, flat[idx].copy(), value, box)
        flat[idx] = value
        self._push_undo(stroke)
        self._touch(i)

    def _paint(self, points, value: int, radius: float, image, only=None) -> Change:
        pts = _check_points(points)
        try:
            r = float(radius)
        except (TypeError, ValueError):
            raise ValueError(f"radius must be a number of pixels, got {radius!r}; e.g. 3") from None
        if not math.isfinite(r):
            raise ValueError(f"radius must be finite, got {radius!r}; e.g. 3")
        if r < MIN_RADIUS:
            pts, r = np.floor(pts + 0.5), 0.5
        with self._lock:
            stroke = self._stroke
            if stroke is not None and image is not None and self._index(image) != stroke.image:
                self.begin_stroke(image)  # a stroke never spans two images
                stroke = self._stroke
            i = stroke.image if stroke is not None else self._index(image)
            own = stroke is None  # a call outside begin/end_stroke is a stroke of its own
            if own:
                stroke = _Stroke(i)
            lab = self._load_labels(i)
            ny, nx = lab.shape
            segments = [(pts[0], pts[0])] if len(pts) == 1 else list(zip(pts[:-1], pts[1:]))
            touched, n = False, 0
            box = [math.inf, -math.inf, math.inf, -math.inf]
            for a, b in segments:
                y0 = max(0, int(math.floor(min(a[0], b[0]) - r)))
                y1 = min(ny, int(math.ceil(max(a[0], b[0]) + r)) + 1)
                x0 = max(0, int(math.floor(min(a[1], b[1]) - r)))
                x1 = min(nx, int(math.ceil(max(a[1], b[1]) + r)) + 1)
                if y1 <= y0 or x1 <= x0:
                    continue
                mask = _segment_mask(a, b, r, y0, y1, x0, x1)
                if not mask.any():
                    continue
                touched = True
                sub = lab[y0:y1, x0:x1]
                change = mask & (sub != value)
                if only is not None:
                    change &= sub == only
                ys, xs = np.nonzero(change)
                if ys.size == 0:
                    continue
                idx = (ys + y0).astype(np.int64) * nx + (xs + x0)
                seg_box = (y0 + int(ys.min()), y0 + int(ys.max()) + 1, x0 + int(xs.min()), x0 + int(xs.max()) + 1)
                # Only pixels that change are recorded, so a pixel swept twice in one stroke is stored once.
                stroke.add(idx, sub[ys, xs].copy(), value, seg_box)
                sub[ys, xs] = value
                n += int(idx.size)
                box = [min(box[0], seg_box[0]), max(box[1], seg_box[1]),
                       min(box[2], seg_box[2]), max(box[3], seg_box[3])]
            if not touched:
                return Change(i, None, 0, f"stroke at {pts.round(1).tolist()[:3]} is outside image "
                                          f"'{self.names[i]}' of size (Y={ny}, X={nx}); ignored")
            if n == 0:
                return Change(i, None, 0)
            if own:
                self._push_undo(stroke)
            self._touch(i)
            return Change(i, tuple(box), n)

    def paint(self, points, class_id, radius: float = 3.0, image=None) -> Change:
        """Paint a stroke segment: a disk brush swept along the line through ``points``.

        Parameters
        ----------
        points : sequence of (y, x)
            Full-resolution image coordinates (pixel ``(r, c)`` has its centre at ``(r, c)``); one point
            paints a disk, several paint the segments between consecutive points. Parts outside the
            image are clipped.
        class_id : int or str
            Class to paint (``1..K`` or name).
        radius : float
            Brush radius in image pixels. Below :data:`MIN_RADIUS` the stroke is a one-pixel line
            through the pixels under the points.
        image : int or str, optional
            Image to paint (default: the current one, or the open stroke's).

        Returns
        -------
        Change
            Bounding box and count of changed pixels; ``message`` says why a stroke entirely outside
            the image was ignored.
        """
        return self._paint(points, self.class_id(class_id), radius, image)

    def erase(self, points, radius: float = 3.0, image=None, class_id=None) -> Change:
        """Erase (set to 0) along a stroke, like :meth:`paint`; with ``class_id`` only that class is erased."""
        only = None if class_id is None else self.class_id(class_id)
        return self._paint(points, 0, radius, image, only=only)

    def fill_polygon(self, vertices, class_id, image=None) -> Change:
        """Fill a polygon (full-res ``(y, x)`` vertices) with a class, as one undoable stroke."""
        from skimage.draw import polygon

        pts = _check_points(vertices)
        if len(pts) < 3:
            raise ValueError(f"a polygon needs at least 3 vertices, got {len(pts)}")
        k = self.class_id(class_id)
        with self._lock:
            i = self._index(image)
            lab = self._load_labels(i)
            rr, cc = polygon(pts[:, 0], pts[:, 1], shape=lab.shape)
            if rr.size == 0:
                return Change(i, None, 0, f"polygon is outside image '{self.names[i]}'; ignored")
            keep = lab[rr, cc] != k
            rr, cc = rr[keep], cc[keep]
            if rr.size == 0:
                return Change(i, None, 0)
            idx = (rr.astype(np.int64) * lab.shape[1] + cc)
            box = (int(rr.min()), int(rr.max()) + 1, int(cc.min()), int(cc.max()) + 1)
            self._apply(i, idx, k, box)
            return Change(i, box, int(idx.size))

    def set_labels(self, labels, image=None) -> Change:
        """Replace an image's labels (e.g. imported from QuPath GeoJSON) as one undoable step.

        Parameters
        ----------
        labels : array_like, shape (Y, X)
            Class ids ``0..K`` for the image.
        image : int or str, optional
            Default the current image.
        """
        from pixlab.labels.masks import validate_labels

        with self._lock:
            i = self._index(image)
            lab = self._load_labels(i)
            new = validate_labels(labels, lab.shape, self.class_names).astype(lab.dtype)
            flat_new = new.reshape(-1)
            idx = np.flatnonzero(lab.reshape(-1) != flat_new)
            if idx.size == 0:
                return Change(i, None, 0)
            stroke = _Stroke(i)
            flat = lab.reshape(-1)
            # Several values may be written at once: one chunk per new value keeps redo exact.
            for value in np.unique(flat_new[idx]):
                part = idx[flat_new[idx] == value]
                ys, xs = np.divmod(part, lab.shape[1])
                stroke.add(part, flat[part].copy(), int(value),
                           (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1))
                flat[part] = value
            self._push_undo(stroke)
            self._touch(i)
            change = Change(i, stroke.region, int(idx.size))
        self._emit("labels", image=i, region=change.region)
        return change

    def clear_class(self, cls, image=None) -> Change:
        """Erase every pixel of a class in one image (undoable)."""
        k = self.class_id(cls)
        with self._lock:
            i = self._index(image)
            lab = self._load_labels(i)
            idx = np.flatnonzero(lab == k)
            if idx.size == 0:
                return Change(i, None, 0, f"class '{self.class_names[k - 1]}' has no pixels in '{self.names[i]}'")
            ys, xs = np.divmod(idx, lab.shape[1])
            box = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
            self._apply(i, idx, 0, box)
            return Change(i, box, int(idx.size))

    def _revert(self, stroke: _Stroke, undo: bool) -> None:
        flat = self._labels[stroke.image].reshape(-1)
        if undo:
            for idx, old, _ in reversed(stroke.chunks):
                flat[idx] = old
        else:
            for idx, _, value in stroke.chunks:
                flat[idx] = value
        self._touch(stroke.image)

    def undo(self, image=None) -> Change:
        """Undo the last stroke of an image (default current)."""
        with self._lock:
            if self._stroke is not None:
                self.end_stroke()
            i = self._index(image)
            stack = self._undo.get(i, [])
            if not stack:
                return Change(i, None, 0, "nothing to undo")
            stroke = stack.pop()
            self._revert(stroke, undo=True)
            self._redo.setdefault(i, []).append(stroke)
            return Change(i, stroke.region, sum(len(c[0]) for c in stroke.chunks))

    def redo(self, image=None) -> Change:
        """Redo the last undone stroke of an image (default current)."""
        with self._lock:
            i = self._index(image)
            stack = self._redo.get(i, [])
            if not stack:
                return Change(i, None, 0, "nothing to redo")
            stroke = stack.pop()
            self._revert(stroke, undo=False)
            self._undo.setdefault(i, []).append(stroke)
            return Change(i, stroke.region, sum(len(c[0]) for c in stroke.chunks))

    @property
    def can_undo(self) -> bool:
        """Whether the current image has a stroke to undo."""
        return bool(self._undo.get(self.index))

    @property
    def can_redo(self) -> bool:
        """Whether the current image has an undone stroke to redo."""
        return bool(self._redo.get(self.index))

    def _touch(self, i: int) -> None:
        self._versions[i] = self._versions.get(i, 0) + 1
        self._mark_dirty(i)

    # ------------------------------------------------------------------------------------------
    # Counts and warnings
    # ------------------------------------------------------------------------------------------

    def stats(self, image=None) -> list[dict]:
        """Per-class ``{"class", "id", "pixels", "strokes"}`` of one image (see :func:`pixlab.labels.masks.label_stats`)."""
        i = self._index(image)
        with self._lock:
            if i not in self._labels and self._existing_labels_file(i) is None:
                # Never opened and nothing saved: no need to open the image and allocate its labels.
                return [{"class": n, "id": k, "pixels": 0, "strokes": 0}
                        for k, n in enumerate(self.class_names, start=1)]
            lab = self._load_labels(i)
            key = (self._versions.get(i, 0), tuple(self.class_names))
            cached = self._stats_cache.get(i)
            if cached is not None and cached[0] == key:
                return [dict(s) for s in cached[1]]
            stats = label_stats(lab, self.class_names)
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

    # ------------------------------------------------------------------------------------------
    # Autosave
    # ------------------------------------------------------------------------------------------

    def _existing_labels_file(self, i: int) -> Path | None:
        if self.labels_dir is None:
            return None
        for suffix in (".png", ".tif"):
            p = self.labels_dir / f"{self.names[i]}.labels{suffix}"
            if p.is_file():
                return p
        return None

    def labels_path(self, image=None) -> Path | None:
        """The file the labels of an image are (auto)saved to, or None without a labels_dir."""
        if self.labels_dir is None:
            return None
        return labels_path_for(self.labels_dir, self.names[self._index(image)], self.n_classes)

    def _mark_dirty(self, i: int) -> None:
        # Edits are tracked whenever there is a folder (flush() writes them); the timer only with autosave.
        if self.labels_dir is None or self._closed:
            return
        with self._save_cond:
            self._dirty.add(i)
            if not self.autosave:
                return
            self._deadline = time.monotonic() + self.autosave_delay
            if self._saver is None or not self._saver.is_alive():
                self._saver = threading.Thread(target=self._save_loop, name="pixlab-autosave", daemon=True)
                self._saver.start()
            self._save_cond.notify_all()

    def _save_loop(self) -> None:
        while True:
            with self._save_cond:
                while not self._closed and (not self._dirty or time.monotonic() < self._deadline):
                    timeout = None if not self._dirty else max(0.0, self._deadline - time.monotonic())
                    self._save_cond.wait(timeout)
                if self._closed:
                    return
            try:
                self.flush()
            except Exception as e:  # keep the thread alive; the view shows the message
                self.last_error = str(e)
                self._emit("error", message=str(e))

    def save(self, image=None) -> Path:
        """Write one image's labels and sidecar now (atomically); returns the labels file."""
        if self.labels_dir is None:
            raise ValueError("this session has no labels_dir (in-memory images); pass labels_dir= to save labels")
        i = self._index(image)
        with self._lock:
            labels = self._load_labels(i).copy()
            meta = {"format": _SIDE_FORMAT, "version": 1, "image": self.names[i],
                    "image_path": str(self._sources[i]) if isinstance(self._sources[i], Path) else None,
                    "shape": list(labels.shape), "class_names": list(self.class_names),
                    "colours": [list(c) for c in self.colours]}
            path = labels_path_for(self.labels_dir, self.names[i], self.n_classes)
            self._dirty.discard(i)
        self.labels_dir.mkdir(parents=True, exist_ok=True)
        # Sidecar first: a labels file is never on disk without the class names that give it meaning.
        with atomic_write(self._sidecar_path(i), "w") as f:
            json.dump(meta, f, indent=1)
        save_labels(path, labels)
        other = path.with_suffix(".tif" if path.suffix == ".png" else ".png")
        if other.is_file():  # switched between PNG and TIFF (crossed 255 classes): drop the stale one
            other.unlink()
        self._emit("saved", image=i, path=str(path))
        return path

    def flush(self) -> list[Path]:
        """Write every image edited since the last save, now. Returns the files written."""
        if self.labels_dir is None:
            return []
        with self._lock:
            dirty = sorted(self._dirty)
        return [self.save(i) for i in dirty]

    def close(self) -> None:
        """Save pending edits and stop the background threads."""
        self.flush()
        with self._save_cond:
            self._closed = True
            self._save_cond.notify_all()
        with self._preview_cond:
            self._preview_request = ("stop",)
            self._preview_cond.notify_all()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------------------------------
    # Training data
    # ------------------------------------------------------------------------------------------

    def training_samples(self) -> list[tuple]:
        """``[(Image, labels)]`` of every image with labels, channels selected, for :func:`pixlab.train`.

        Pending edits are saved first, so what is trained is also on disk.
        """
        try:
            self.flush()
        except OSError as e:
            self.last_error = str(e)
        samples = []
        with self._lock:
            for i in range(self.n_images):
                lab = self._load_labels(i)
                if lab.any():
                    samples.append((self.image_for_training(i), lab.copy()))
        if not samples:
            raise ValueError("no image has labels yet; brush at least one stroke of each class before training")
        return samples

    # ------------------------------------------------------------------------------------------
    # Preview
    # ------------------------------------------------------------------------------------------

    @property
    def model(self):
        """The deep-learning model used for the preview (None: the feature classifier is used)."""
        return self._model

    def set_model(self, model) -> None:
        """Use a trained :class:`pixlab.Model` for the preview (None goes back to the feature classifier)."""
        _check_model(model)
        self._model = model
        self._model_cache.clear()

    @property
    def classifier(self):
        """The preview's :class:`pixlab.training.forest.FeatureClassifier` (created on first use)."""
        if self._classifier is None:
            from pixlab.training.forest import FeatureClassifier

            # 32 trees instead of the 50 used for pseudo-labels: the refit + predict after each stroke
            # must stay under a second on 2 cores, and a preview does not need the last bit of quality.
            self._classifier = FeatureClassifier(n_estimators=32, max_depth=10, n_jobs=-1, seed=0)
        return self._classifier

    def preview_async(self, region=None, callback: Callable | None = None, image=None, _warm: bool = False) -> Future:
        """Request a preview in the background; latest request wins.

        Parameters
        ----------
        region : (y0, y1, x0, x1), optional
            Full-resolution region to predict (default the whole image), e.g. the visible view.
        callback : callable, optional
            Called with the :class:`PreviewResult` in the worker thread when it is ready.
        image : int or str, optional
            Default the current image.

        Returns
        -------
        concurrent.futures.Future
            Resolves to a :class:`PreviewResult`. A request superseded by a newer one before it ran
            resolves to the newer one's result.
        """
        fut: Future = Future()
        i = self._index(image)
        with self._preview_cond:
            if _warm and (self._preview_busy or self._preview_request is not None):
                fut.set_result(None)  # a real preview is on its way; warming up must not replace it
                return fut
            self._preview_generation += 1
            self._preview_request = (self._preview_generation, i, region, _warm)
            self._preview_waiters.append((fut, callback))
            if self._preview_thread is None or not self._preview_thread.is_alive():
                self._preview_thread = threading.Thread(target=self._preview_loop, name="pixlab-preview",
                                                        daemon=True)
                self._preview_thread.start()
            self._preview_cond.notify_all()
        return fut

    def preview(self, region=None, image=None, timeout: float | None = None) -> PreviewResult:
        """Compute the preview for ``region`` of an image and wait for it (see :meth:`preview_async`).

        Returns
        -------
        PreviewResult
            ``probs`` (K, h, w) float32 for the region (``factor`` > 1 only for regions beyond the
            feature memory budget), or ``probs=None`` with a ``message`` (e.g. fewer than two
            classes painted).
        """
        return self.preview_async(region, image=image).result(timeout)

    def _preview_loop(self) -> None:
        while True:
            with self._preview_cond:
                while self._preview_request is None:
                    self._preview_cond.wait()
                request, self._preview_request = self._preview_request, None
                if request[0] == "stop":
                    return
                self._preview_busy = True
            generation, i, region, warm = request
            try:
                result = self._compute_preview(i, region, warm)
            except Exception as e:  # reported through the result, never raised in the worker
                result = PreviewResult(None, image=i, message=f"preview failed: {e}")
            with self._preview_cond:
                self._preview_busy = False
                if self._preview_request is not None:
                    continue  # superseded while computing: the waiters get the newer result
                waiters, self._preview_waiters = self._preview_waiters, []
            if not warm:
                self.last_preview = result
            for fut, cb in waiters:
                if cb is not None:
                    try:
                        cb(result)
                    except Exception as e:
                        self.last_error = f"preview callback failed: {e}"
                if not fut.done():
                    fut.set_result(result)

    def _norm_stats(self, i: int, img):
        from pixlab.image.normalize import compute_stats

        key = (i, tuple(self._channels) if self._channels is not None else None, self.per_channel)
        if key not in self._stats_norm:
            self._stats_norm[key] = compute_stats(img, per_channel=self.per_channel)
        return self._stats_norm[key]

    def _preview_input(self, i: int, img, region, labels):
        """Choose the level and crop the preview works on; returns (factor, level shape, crop, normalized crop).

        The whole image is used when its features fit the memory budget (they then stay cached across
        strokes and views); otherwise the crop covering the view and the labelled pixels, at the
        smallest power-of-two downsample that fits.
        """
        from pixlab.training.forest import feature_margin
        from pixlab.image.normalize import apply

        clf = self.classifier
        ny, nx = img.shape[1:]
        n_sigmas = int(math.floor(math.log2(clf.sigma_max / clf.sigma_min))) + 1
        bytes_per_px = 4 * 4 * n_sigmas * img.n_channels
        ry0, ry1, rx0, rx1 = region
        union = region
        if labels is not None and labels.any():
            rows = np.flatnonzero(labels.any(axis=1))
            cols = np.flatnonzero(labels.any(axis=0))
            union = (min(ry0, rows[0]), max(ry1, rows[-1] + 1), min(rx0, cols[0]), max(rx1, cols[-1] + 1))
        f = 1
        while ((ny // f) * (nx // f) * bytes_per_px > _PREVIEW_FEATURE_BYTES
               and (union[1] - union[0]) * (union[3] - union[2]) / f**2 * bytes_per_px > _PREVIEW_FEATURE_BYTES):
            f *= 2
        level = img.downsampled(f) if f > 1 else img
        ly, lx = level.shape[1:]
        if ly * lx * bytes_per_px <= _PREVIEW_FEATURE_BYTES:
            crop = (0, ly, 0, lx)
        else:
            m = feature_margin(clf.sigma_max)
            crop = (max(0, union[0] // f - m), min(ly, -(-union[1] // f) + m),
                    max(0, union[2] // f - m), min(lx, -(-union[3] // f) + m))
        norm = apply(level.read(crop), self._norm_stats(i, img))
        return f, (ly, lx), crop, norm

    def warm_preview(self, image=None) -> Future:
        """Compute the preview features of an image in the background (e.g. when it is shown), so the
        first preview after a stroke only fits the forest. Any real request supersedes it."""
        return self.preview_async(None, image=image, _warm=True)

    def _compute_preview(self, i: int, region, warm: bool = False) -> PreviewResult:
        t0 = time.perf_counter()
        img = self.image_for_training(i)
        ny, nx = img.shape[1:]
        if region is None:
            region = (0, ny, 0, nx)
        ry0, ry1, rx0, rx1 = (int(v) for v in region)
        ry0, ry1, rx0, rx1 = max(0, ry0), min(ny, ry1), max(0, rx0), min(nx, rx1)
        if ry1 <= ry0 or rx1 <= rx0:
            return PreviewResult(None, region=tuple(region), image=i,
                                 message=f"region {tuple(region)} is outside image '{self.names[i]}'")
        region = (ry0, ry1, rx0, rx1)
        if self._model is not None and not warm:
            return self._model_preview(i, img, region, t0)
        with self._lock:
            labels = self._load_labels(i).copy()
            k = self.n_classes
        if warm:
            f, _, _, norm = self._preview_input(i, img, region, None)
            self.classifier.features(norm)
            return PreviewResult(None, region=region, image=i, message="features ready",
                                 elapsed_s=time.perf_counter() - t0)
        present = np.unique(labels[labels > 0]) if labels.any() else np.array([], int)
        if present.size < 2:
            return PreviewResult(None, region=region, image=i,
                                 message="paint at least two classes to see the preview")
        f, (ly, lx), crop, norm = self._preview_input(i, img, region, labels)
        from pixlab.training.samples import downsample_labels  # the trainer's rule, so preview = training
        lab = downsample_labels(labels, f)[:ly, :lx] if f > 1 else labels
        lab = lab[crop[0]:crop[1], crop[2]:crop[3]]
        if len(np.unique(lab[lab > 0])) < 2:
            return PreviewResult(None, region=region, image=i,
                                 message="paint at least two classes to see the preview")
        clf = self.classifier
        clf.fit(norm, lab, n_classes=k)
        ly0, ly1 = ry0 // f, min(ly, -(-ry1 // f))
        lx0, lx1 = rx0 // f, min(lx, -(-rx1 // f))
        probs = clf.predict_proba(norm, region=(ly0 - crop[0], ly1 - crop[0], lx0 - crop[2], lx1 - crop[2]))
        return PreviewResult(probs, (ly0 * f, lx0 * f), f, region, "features", i, None, time.perf_counter() - t0)

    def _model_preview(self, i: int, img, region, t0) -> PreviewResult:
        from pixlab.image.io import Image

        ry0, ry1, rx0, rx1 = region
        if (ry1 - ry0) * (rx1 - rx0) > _MODEL_PREVIEW_PIXELS:
            return PreviewResult(None, region=region, image=i, source="model",
                                 message="the view is too large for the model preview; zoom in")
        key = (i, region, id(self._model))
        probs = self._model_cache.get(key)
        if probs is None:
            crop = Image(img.read(region), img.channel_names, img.pixel_size, name=img.name)
            probs = self._model.predict(crop)
            self._model_cache.clear()  # keep one: the view changes, the old one is not needed
            self._model_cache[key] = probs
        return PreviewResult(probs, (ry0, rx0), 1, region, "model", i, None, time.perf_counter() - t0)


class AnnotationGuide:
    """Guided annotation over a session and a trained model: where to brush next, and what to check.

    The core of the brush annotator's "Guided annotation" panel (plain Python, usable without it).
    It wraps :func:`pixlab.analysis.active.suggest_regions`, :func:`pixlab.analysis.diagnostics.pixel_maps` /
    :func:`~pixlab.analysis.diagnostics.map_overlay`, :func:`pixlab.analysis.active.label_refinements` and
    :func:`pixlab.analysis.diagnostics.evaluate` for the session's images and labels, and caches what they
    cost: the model's probabilities once per (model, image, region); maps and overlays once per
    labels version (a stroke, undo or new model invalidates them; redraws never recompute them).

    Parameters
    ----------
    session : AnnotationSession
    model : pixlab.Model, optional
        Set later with :meth:`set_model`; every analysis needs one.
    max_pixels : int
        Largest region (pixels) analysed at once; a larger image is analysed in a region (e.g. the
        visible one, see :meth:`analysis_region`).

    Notes
    -----
    Coordinates are full-resolution image pixels everywhere (tables have ``y0, y1, x0, x1``), also
    when only a region was analysed, so the annotator can pan to them at any zoom.
    """

    def __init__(self, session: AnnotationSession, model=None, *, max_pixels: int = _GUIDE_PIXELS):
        self.session = session
        self.max_pixels = int(max_pixels)
        self._lock = threading.RLock()
        self._model = None
        self._probs = None     # (image, region, model, probs)
        self._maps = None      # (image, region, model, labels version, maps)
        self._overlay = None   # (maps key, name, opacity, rgba)
        self._report = None    # (model, label versions, report, session image index per sample)
        if model is not None:
            self.set_model(model)

    # ------------------------------------------------------------------------------------------
    @property
    def model(self):
        """The model analysed (None until :meth:`set_model`)."""
        return self._model

    def set_model(self, model) -> None:
        """Analyse with ``model`` (a :class:`pixlab.Model`; None switches the guide off); drops every cache."""
        _check_model(model)
        with self._lock:
            self._model = model
            self._probs = self._maps = self._overlay = self._report = None

    def _require_model(self):
        if self._model is None:
            raise ValueError("no model to guide annotation yet; train one or call set_model(model) first")
        return self._model

    def _region(self, i: int, region) -> tuple:
        ny, nx = self.session.image_of(i).shape[1:]
        if region is None:
            region = (0, ny, 0, nx)
        try:
            y0, y1, x0, x1 = (int(v) for v in region)
        except (TypeError, ValueError):
            raise ValueError(f"region must be (y0, y1, x0, x1) in image pixels, got {region!r}") from None
        y0, y1, x0, x1 = max(0, y0), min(ny, y1), max(0, x0), min(nx, x1)
        if y1 <= y0 or x1 <= x0:
            raise ValueError(f"region {tuple(region)} is outside image '{self.session.names[i]}' of size "
                             f"(Y={ny}, X={nx})")
        if (y1 - y0) * (x1 - x0) > self.max_pixels:
            raise ValueError(
                f"region of {y1 - y0} x {x1 - x0} px of image '{self.session.names[i]}' is more than the "
                f"{self.max_pixels:,} px the guide analyses at once; zoom in (or pass a smaller region) and refresh")
        return y0, y1, x0, x1

    def analysis_region(self, view_region=None, image=None):
        """What to analyse: None (the whole image) when it fits ``max_pixels``, else ``view_region``.

        Raises
        ------
        ValueError
            The image is too large and ``view_region`` is missing or too large too (the message says
            to zoom in).
        """
        i = self.session._index(image)
        ny, nx = self.session.image_of(i).shape[1:]
        if ny * nx <= self.max_pixels:
            return None
        if view_region is None:
            raise ValueError(f"image '{self.session.names[i]}' has {ny} x {nx} px, more than the "
                             f"{self.max_pixels:,} px the guide analyses at once; give a region (zoom in)")
        return self._region(i, view_region)

    def probabilities(self, image=None, region=None) -> np.ndarray:
        """The model's ``(K, h, w)`` probabilities of ``region`` (default the whole image), cached per model."""
        from pixlab.image.io import Image

        model = self._require_model()
        i = self.session._index(image)
        reg = self._region(i, region)
        with self._lock:
            c = self._probs
            if c is not None and c[0] == i and c[1] == reg and c[2] is model:
                return c[3]
            img = self.session.image_of(i)
            if reg != (0, img.shape[1], 0, img.shape[2]):
                img = Image(img.read(reg), img.channel_names, img.pixel_size, name=img.name)
            probs = model.predict(img)  # all channels: predict() picks the model's by name
            self._probs = (i, reg, model, probs)
            return probs

    def _labels_crop(self, i: int, reg) -> tuple[int, np.ndarray]:
        s = self.session
        with s._lock:
            lab = s._load_labels(i)
            return s._versions.get(i, 0), lab[reg[0]:reg[1], reg[2]:reg[3]].copy()

    def maps(self, image=None, region=None) -> dict:
        """:func:`pixlab.analysis.diagnostics.pixel_maps` of ``region`` with the current labels, cached per labels version.

        Returns
        -------
        dict of str -> ndarray (h, w)
            ``prediction``, ``confidence``, ``entropy``, ``margin``, ``loss``, ``disagreement``; the
            arrays start at full-res pixel ``(region y0, region x0)``.
        """
        from pixlab.analysis.diagnostics import pixel_maps

        model = self._require_model()
        i = self.session._index(image)
        reg = self._region(i, region)
        with self._lock:
            probs = self.probabilities(i, reg)
            version, lab = self._labels_crop(i, reg)
            c = self._maps
            if c is not None and c[0] == i and c[1] == reg and c[2] is model and c[3] == version:
                return c[4]
            maps = pixel_maps(None, None, lab, probs=probs)
            self._maps = (i, reg, model, version, maps)
            return maps

    def overlay(self, name: str, opacity: float = 0.6, image=None, region=None):
        """RGBA ``(h, w, 4)`` uint8 of one map for the annotator's overlay layer (None for ``"none"``).

        Parameters
        ----------
        name : {"none", "prediction", "confidence", "entropy", "disagreement", "loss"}
            ``prediction`` uses the model's class colours (:func:`pixlab.image.display.label_overlay`); the
            others :func:`pixlab.analysis.diagnostics.map_overlay` with the colour maps and ranges of notebook 03's
            figures (loss up to its 99th percentile). Unlabelled pixels are transparent in loss and
            disagreement.
        opacity : float
            Alpha of the coloured pixels, 0-1.
        """
        from pixlab.analysis.diagnostics import MAP_STYLES, map_overlay
        from pixlab.image.display import label_overlay

        if name not in GUIDE_OVERLAYS:
            raise ValueError(f"overlay {name!r} is not known; choose one of {', '.join(GUIDE_OVERLAYS)}")
        if name == "none":
            return None
        with self._lock:
            maps = self.maps(image, region)
            c = self._overlay
            if c is not None and c[0] is maps and c[1] == name and c[2] == opacity:
                return c[3]
            if name == "prediction":
                colours = getattr(self._model, "colours", None)
                colours = self.session.colours if colours is None or not len(colours) else colours
                rgba = label_overlay(maps["prediction"], colours, opacity)
            else:
                cmap, lo, hi = MAP_STYLES[name]
                v = maps[name]
                if hi is None:  # as plot_maps: a few confident mistakes (loss ~16) must not wash out the rest
                    hi = max(float(np.nanpercentile(v, 99)), 1e-6) if np.isfinite(v).any() else 1.0
                rgba = map_overlay(v, cmap, lo, hi, opacity)
            self._overlay = (maps, name, opacity, rgba)
            return rgba

    def suggestions(self, n: int = 5, box=64, measure: str = "entropy", image=None, region=None):
        """"Annotate here next": :func:`pixlab.analysis.active.suggest_regions` with the current labels.

        Returns
        -------
        pandas.DataFrame
            ``rank, y0, y1, x0, x1, score, uncertainty, labelled``, best first, in full-res pixels.
        """
        from pixlab.analysis.active import suggest_regions

        self._require_model()
        i = self.session._index(image)
        reg = self._region(i, region)
        probs = self.probabilities(i, reg)
        _, lab = self._labels_crop(i, reg)
        df = suggest_regions(None, None, lab, box=box, n=n, measure=measure, probs=probs)
        return _shift(df, reg)

    def refinements(self, min_confidence: float = 0.9, min_pixels: int = 5, image=None, region=None):
        """Possible label mistakes: :func:`pixlab.analysis.active.label_refinements` with the current labels.

        Returns
        -------
        pandas.DataFrame
            ``class, predicted, confidence, pixels, stroke_fraction, y0, y1, x0, x1`` (full-res), most
            suspicious first.
        """
        from pixlab.analysis.active import label_refinements

        model = self._require_model()
        i = self.session._index(image)
        reg = self._region(i, region)
        probs = self.probabilities(i, reg)
        _, lab = self._labels_crop(i, reg)
        names = list(getattr(model, "class_names", None) or self.session.class_names)
        df = label_refinements(None, None, lab, probs=probs, min_confidence=min_confidence,
                               min_pixels=min_pixels, class_names=names)
        return _shift(df, reg)

    def report(self):
        """:func:`pixlab.analysis.diagnostics.evaluate` of the model on every labelled image of the session (cached).

        Returns
        -------
        pixlab.analysis.diagnostics.Report
            Its ``tiles["image"]`` indexes the labelled images in session order; :meth:`confused_tiles`
            adds the session's image index.
        """
        from pixlab.analysis.diagnostics import evaluate

        model = self._require_model()
        s = self.session
        with s._lock:
            versions = tuple(s._versions.get(i, 0) for i in range(s.n_images))
        c = self._report
        if c is not None and c[0] is model and c[1] == versions:
            return c[2]
        samples, index = [], []
        for i in range(s.n_images):
            try:
                lab = s.labels_of(i)
            except ValueError:  # an unusable labels file: label_problems() reports it
                continue
            if lab.any():
                samples.append((s.image_of(i), lab.copy()))
                index.append(i)
        if not samples:
            raise ValueError("no image has labels yet; brush strokes before reviewing the model")
        report = evaluate(model, samples)
        with self._lock:
            self._report = (model, versions, report, index)
        return report

    def confusions(self, n: int = 5):
        """The largest confusion-matrix cells (``Report.top_confusions`` of all labels)."""
        return self.report().top_confusions("all", n=n)

    def confused_tiles(self, true_class, predicted_class, split: str | None = None):
        """Review tiles behind one confusion cell (``Report.tiles_with_confusion``), plus ``session_image``.

        Returns
        -------
        pandas.DataFrame
            The report's tile rows (full-res ``y0, y1, x0, x1``), most such pixels first, with
            ``session_image`` = the image's index in the session.
        """
        report = self.report()
        index = self._report[3]
        df = report.tiles_with_confusion(true_class, predicted_class, split=split)
        return df.assign(session_image=[index[int(k)] for k in df["image"]])


def _shift(df, region):
    """Table coordinates of a crop starting at region's corner -> full-res image coordinates."""
    if len(df) and (region[0] or region[2]):
        df = df.copy()
        df[["y0", "y1"]] += region[0]
        df[["x0", "x1"]] += region[2]
    return df
