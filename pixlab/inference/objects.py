"""Connected objects of a prediction, traced band by band, with per-object measurements.

:class:`ObjectTracer` is fed the label map (and probabilities, and the image) one row band at a time,
as :func:`pixlab.predict_file` finishes them. Each band is split into 4-connected components of one
class (``skimage.measure.label``) and each component is outlined on its pixel edges
(``rasterio.features.shapes``). A component that touches the band's last row stays *open*; the next
band's components that touch it through its first row (same class, same column) are merged with
it (a small union-find over the pairs at the border), so an object crossing any number of band
borders comes out as one object whose outline is the union of its pieces, exactly as if the whole
label map had been traced at once. An object that no longer reaches the current last row is
finished: holes are filled, small objects dropped, the outline smoothed, it is measured and handed
to ``on_object``. Memory holds only the objects open on the current border, not the image.

:func:`trace_objects` runs the same tracer over an in-memory prediction in one band.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["OBJECT_TYPES", "ObjectTracer", "object_columns", "object_options", "trace_objects"]

#: QuPath object types a traced object can be written as (``"none"``: no objects).
OBJECT_TYPES = ("detection", "annotation")


def object_columns(channel_names) -> list[str]:
    """Column names of the objects table, for an image with these channels.

    Areas are in full-resolution pixels of the input image (``_px``) and µm² (``_um2``, NaN without a
    pixel size); centroids in full-resolution pixel coordinates (QuPath's) and µm.
    """
    return (["object_id", "class", "class_id", "pixels", "area_px", "area_um2", "perimeter_px", "perimeter_um",
             "centroid_x_px", "centroid_y_px", "centroid_x_um", "centroid_y_um", "mean_probability"]
            + [f"mean_{name}" for name in channel_names])


def object_options(objects, class_names, *, classes=None, wanted=False, **tracer) -> dict | None:
    """Check :func:`pixlab.predict_file`'s object options up front; None for ``objects="none"``.

    Returns ``{"object_type": ..., "tracer": {ObjectTracer options}}`` with ``classes`` as ids.
    """
    if objects in (None, False, "none"):
        if wanted:
            raise ValueError("an objects table was asked for with objects='none'; pass objects='detection' "
                             "or 'annotation' (--objects), or drop objects_csv")
        return None
    if objects not in OBJECT_TYPES:
        raise ValueError(f"objects must be one of {list(OBJECT_TYPES) + ['none']}, got {objects!r}")
    names = list(class_names)
    ids = None
    if classes is not None:
        ids = []
        for c in [classes] if isinstance(classes, (str, int)) else classes:
            if isinstance(c, str):
                if c not in names:
                    raise ValueError(f"object class {c!r} is not a class of this model; choose from {names}")
                ids.append(names.index(c) + 1)
            else:
                ids.append(int(c))
    for name in ("min_area", "fill_holes", "smooth", "simplify"):
        value = tracer.get(name, 0.0)
        if not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    # Building one checks the class ids too, before any work is done.
    ObjectTracer(names, 1, classes=ids, **tracer)
    return {"object_type": objects, "tracer": dict(tracer, classes=ids)}


class _Piece:
    """Running sums and outline pieces of one object (possibly spread over several bands)."""

    __slots__ = ("cls", "pixels", "psum", "isum", "pieces")

    def __init__(self, cls, pixels, psum, isum, piece):
        self.cls, self.pixels, self.psum, self.isum = int(cls), int(pixels), float(psum), isum
        self.pieces = [piece]  # one per band the object spans (components of one band are never joined)

    def absorb(self, other: "_Piece") -> None:
        self.pixels += other.pixels
        self.psum += other.psum
        if self.isum is not None:
            self.isum = self.isum + other.isum
        self.pieces.extend(other.pieces)


class ObjectTracer:
    """Objects of one label map fed in row bands; objects crossing band borders are merged, not cut.

    Parameters
    ----------
    class_names : list of str
        Names of classes 1..K.
    width : int
        Width of the label map (prediction pixels).
    classes : list of int, optional
        Class ids (1..K) traced into objects; default every class but class 1 (by pixlab's
        convention the background).
    downsample : float
        Full-resolution input pixels per prediction pixel; outlines, areas and centroids are given in
        full-resolution pixels, as QuPath expects.
    pixel_size : (float, float), optional
        µm per full-resolution pixel (y, x). With it, ``min_area`` and ``fill_holes`` are in µm²;
        without it, in full-resolution pixels.
    min_area : float
        Objects smaller than this (after hole filling) are dropped.
    fill_holes : float
        Holes smaller than this are filled (``math.inf``: all holes).
    smooth : float
        Outline smoothing radius in full-resolution pixels (a morphological opening then closing
        with a disc, via ``shapely.buffer``); 0 keeps the exact pixel edges.
    simplify : float
        Douglas-Peucker tolerance in full-resolution pixels (``shapely.simplify``, topology kept).
    channel_names : list of str, optional
        Channels of the image given to :meth:`add`; one ``mean_<name>`` measurement each.
    on_objects : callable
        ``on_objects(batch)`` with the objects finished by each band, a list of dicts with ``geometry`` (shapely, full-resolution
        pixels), ``class_id`` and ``measurements`` (the :func:`object_columns` values but ``object_id``,
        ``class`` and ``class_id``).
    """

    def __init__(self, class_names, width, *, classes=None, downsample=1.0, pixel_size=None, min_area=0.0,
                 fill_holes=0.0, smooth=0.0, simplify=0.0, channel_names=(), on_objects=None):
        k = len(class_names)
        self.class_names = list(class_names)
        classes = list(range(2, k + 1)) if classes is None else [int(c) for c in classes]
        bad = [c for c in classes if not 1 <= c <= k]
        if bad:
            raise ValueError(f"object classes {bad} are not class ids 1..{k}; give class names or ids of {self.class_names}")
        self.classes = classes
        self._traced = np.zeros(k + 1, bool)
        self._traced[classes] = True
        self.width = int(width)
        self.downsample = float(downsample)
        self.pixel_size = None if pixel_size is None else (float(pixel_size[0]), float(pixel_size[1]))
        for name, value in (("min_area", min_area), ("fill_holes", fill_holes), ("smooth", smooth),
                            ("simplify", simplify)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        self.min_area, self.fill_holes = float(min_area), float(fill_holes)
        self.smooth, self.simplify = float(smooth), float(simplify)
        self.channel_names = list(channel_names)
        self.on_objects = on_objects
        self._done: list[_Piece] = []
        # Full-resolution pixel -> unit used for min_area / fill_holes (µm² or px).
        self._unit_area = self.downsample ** 2 * (self.pixel_size[0] * self.pixel_size[1] if self.pixel_size else 1.0)
        self.counts = np.zeros(k + 1, np.int64)  # objects kept per class
        self.dropped = 0  # objects smaller than min_area
        self.merged = 0  # objects that were put together from pieces in more than one band
        self.bands = 0
        self._row = 0
        self._open: dict[int, _Piece] = {}
        self._row_ids = np.zeros(self.width, np.int64)  # object id per column of the last row (0: none)
        self._row_labels = np.zeros(self.width, np.int64)
        self._next_id = 1
        self._n_objects = 0

    # -- feeding ------------------------------------------------------------------------------
    def add(self, labels, probs=None, image=None, *, confidence=None) -> None:
        """Add the next band of rows.

        Parameters
        ----------
        labels : ndarray (h, W)
            Class ids 1..K (0: not predicted, e.g. outside the tissue).
        probs : ndarray (K, h, W), optional
            Probabilities, for each object's mean probability of its class.
        image : ndarray (C, h, W), optional
            The image at the prediction's resolution, for the mean intensity per channel.
        confidence : ndarray (h, W), optional
            Instead of ``probs``: the probability of each pixel's class (what a streamed prediction
            hands back, so that the K probability maps need not be copied for this).
        """
        from skimage.measure import label as label_components

        labels = np.asarray(labels)
        h, w = labels.shape
        if w != self.width:
            raise ValueError(f"band width {w} differs from the tracer's width {self.width}")
        y0 = self._row
        lab = np.where(self._traced[np.clip(labels, 0, len(self._traced) - 1)], labels, 0).astype(labels.dtype)
        comp = label_components(lab, background=0, connectivity=1).astype(np.int32)
        n = int(comp.max())
        flat = comp.ravel()
        cls = np.zeros(n + 1, np.int64)
        cls[flat] = lab.ravel()
        pixels = np.bincount(flat, minlength=n + 1)
        psum = np.zeros(n + 1)
        if confidence is not None and n:
            psum = np.bincount(flat, weights=np.asarray(confidence, np.float64).ravel(), minlength=n + 1)
        elif probs is not None and n:
            own = np.take_along_axis(np.asarray(probs), np.maximum(lab.astype(np.intp) - 1, 0)[None], 0)[0]
            psum = np.bincount(flat, weights=own.ravel(), minlength=n + 1)
        isum = None
        if image is not None and self.channel_names:
            image = np.asarray(image)
            isum = np.stack([np.bincount(flat, weights=image[c].ravel().astype(np.float64), minlength=n + 1)
                             for c in range(image.shape[0])], axis=1)
        pieces = self._outlines(comp, y0, n)
        band = [None] + [_Piece(cls[j], pixels[j], psum[j], None if isum is None else isum[j], pieces[j])
                         for j in range(1, n + 1)]

        # Pairs (open object above, component below) that touch across the border, same class.
        touch = (self._row_ids > 0) & (comp[0] > 0) & (self._row_labels == lab[0])
        pairs = np.unique(np.stack([self._row_ids[touch], comp[0][touch]], axis=1), axis=0) if touch.any() else ()
        parent = {}

        def find(x):
            while parent.get(x, x) != x:
                parent[x] = parent.get(parent[x], parent[x])
                x = parent[x]
            return x

        for above, below in pairs:
            a, b = find(("o", int(above))), find(("c", int(below)))
            if a != b:
                parent[a] = b
        continued = {int(a) for a, _ in pairs}
        for oid in [o for o in self._open if o not in continued]:
            self._finish(self._open.pop(oid))  # nothing below it: complete

        groups: dict = {}
        for j in range(1, n + 1):
            groups.setdefault(find(("c", j)), []).append(j)
        for above, _ in pairs:
            root = find(("o", int(above)))
            piece = self._open.pop(int(above), None)
            if piece is not None:
                groups[root].append(piece)
        gid = np.zeros(n + 1, np.int64)
        last = set(np.unique(comp[-1]).tolist()) - {0}
        for members in groups.values():
            locals_ = [m for m in members if isinstance(m, (int, np.integer))]
            obj = band[locals_[0]]
            for m in members[1:]:
                obj.absorb(m if isinstance(m, _Piece) else band[m])
            if last.intersection(locals_):
                oid = self._next_id
                self._next_id += 1
                gid[locals_] = oid
                self._open[oid] = obj
            else:
                self._finish(obj)
        self._row_ids = gid[comp[-1]]
        self._row_labels = lab[-1].astype(np.int64)
        self._row += h
        self.bands += 1
        self._flush()

    def finish(self) -> None:
        """Finish the objects still open on the last row (call once, after the last band)."""
        for oid in list(self._open):
            self._finish(self._open.pop(oid))
        self._row_ids[:] = 0
        self._flush()

    # -- internals ----------------------------------------------------------------------------
    @staticmethod
    def _outlines(comp, y0, n):
        """One shapely Polygon per component (pixel edges, holes kept), in prediction pixels."""
        import rasterio.features
        import shapely
        from affine import Affine

        out = np.empty(n + 1, dtype=object)
        if not n:
            return out
        coords, ring_sizes, ring_owner, values = [], [], [], []
        for geom, value in rasterio.features.shapes(comp, mask=comp > 0, connectivity=4,
                                                    transform=Affine.translation(0, y0)):
            for ring in geom["coordinates"]:
                coords.extend(ring)
                ring_sizes.append(len(ring))
                ring_owner.append(len(values))
            values.append(int(value))
        # Built in one vectorised call: shapely.geometry.shape() per polygon was 4x slower.
        rings = shapely.linearrings(np.asarray(coords, np.float64),
                                    indices=np.repeat(np.arange(len(ring_sizes)), ring_sizes))
        out[values] = shapely.polygons(rings, indices=np.asarray(ring_owner))
        return out

    def _finish(self, obj: _Piece) -> None:
        self._done.append(obj)

    def _flush(self) -> None:
        """Outline, filter and measure the objects finished in this band, vectorised over them."""
        import shapely

        done, self._done = self._done, []
        if not done:
            return
        geoms = np.array([o.pieces[0] if len(o.pieces) == 1 else shapely.union_all(o.pieces) for o in done],
                         dtype=object)
        self.merged += sum(len(o.pieces) > 1 for o in done)
        if self.fill_holes > 0:
            for i in np.flatnonzero(shapely.get_num_interior_rings(geoms) > 0):
                g = geoms[i]
                keep = [r for r in g.interiors if shapely.area(shapely.polygons(r)) * self._unit_area >= self.fill_holes]
                geoms[i] = shapely.polygons(g.exterior, keep or None)
        big = shapely.area(geoms) * self._unit_area >= self.min_area
        self.dropped += int((~big).sum())
        done, geoms = [o for o, b in zip(done, big) if b], geoms[big]
        if not done:
            return
        ds = self.downsample
        if ds != 1:
            geoms = shapely.transform(geoms, lambda xy: xy * ds)
        area = shapely.area(geoms)
        centre = shapely.centroid(geoms)
        cx, cy = shapely.get_x(centre), shapely.get_y(centre)
        out = geoms
        if self.smooth > 0:
            r = self.smooth
            smoothed = shapely.buffer(shapely.buffer(shapely.buffer(out, -r), 2 * r), -r)
            # An object thinner than the disc would vanish: it keeps its pixel edges.
            out = np.where(shapely.is_empty(smoothed), out, smoothed)
        if self.simplify > 0:
            out = shapely.simplify(out, self.simplify, preserve_topology=True)
        perimeter = shapely.length(out)
        ps = self.pixel_size
        nan = np.full(len(done), math.nan)
        if ps:
            perimeter_um = shapely.length(shapely.transform(out, lambda xy: xy * (ps[1], ps[0])))
        cols = {
            "pixels": np.array([o.pixels for o in done]),
            "area_px": area,
            "area_um2": area * ps[0] * ps[1] if ps else nan,
            "perimeter_px": perimeter,
            "perimeter_um": perimeter_um if ps else nan,
            "centroid_x_px": cx,
            "centroid_y_px": cy,
            "centroid_x_um": cx * ps[1] if ps else nan,
            "centroid_y_um": cy * ps[0] if ps else nan,
            "mean_probability": np.array([o.psum / o.pixels for o in done]),
        }
        if self.channel_names:
            means = (np.stack([o.isum / o.pixels for o in done]) if done[0].isum is not None
                     else np.full((len(done), len(self.channel_names)), math.nan))
            for i, name in enumerate(self.channel_names):
                cols[f"mean_{name}"] = means[:, i]
        names, columns = list(cols), [np.asarray(v, np.float64).tolist() for v in cols.values()]
        columns[0] = [int(v) for v in columns[0]]  # pixels
        batch = []
        for i, (o, values) in enumerate(zip(done, zip(*columns))):
            self.counts[o.cls] += 1
            self._n_objects += 1
            batch.append({"object_id": self._n_objects, "geometry": out[i], "class_id": o.cls,
                          "class": self.class_names[o.cls - 1], "measurements": dict(zip(names, values))})
        if self.on_objects is not None:
            self.on_objects(batch)


def trace_objects(labels, class_names, *, probs=None, image=None, channel_names=(), band_height=None, **options):
    """Objects of an in-memory label map as a pandas DataFrame (and their outlines).

    Parameters
    ----------
    labels : ndarray (Y, X)
        Class ids 1..K.
    class_names : list of str
    probs : ndarray (K, Y, X), optional
    image : ndarray (C, Y, X), optional
        At the label map's resolution, for ``mean_<channel>`` (give ``channel_names`` with it).
    band_height : int, optional
        Trace in bands of this many rows (as :func:`pixlab.predict_file` does); default one band.
    **options
        :class:`ObjectTracer` options (``classes``, ``downsample``, ``pixel_size``, ``min_area``, ...).

    Returns
    -------
    (pandas.DataFrame, list of shapely geometries)
        One row per object (:func:`object_columns`), in the order objects were finished.

    Examples
    --------
    >>> lab = np.array([[1, 2, 2], [1, 1, 2], [2, 1, 1]])
    >>> table, shapes = trace_objects(lab, ["bg", "cell"], band_height=1)
    >>> table["area_px"].tolist()
    [3.0, 1.0]
    """
    import pandas as pd

    labels = np.asarray(labels)
    rows, shapes = [], []

    def keep(batch):
        for obj in batch:
            rows.append({"object_id": obj["object_id"], "class": obj["class"], "class_id": obj["class_id"],
                         **obj["measurements"]})
            shapes.append(obj["geometry"])

    tracer = ObjectTracer(class_names, labels.shape[1], channel_names=channel_names, on_objects=keep, **options)
    step = int(band_height or labels.shape[0])
    for y in range(0, labels.shape[0], step):
        tracer.add(labels[y: y + step], None if probs is None else probs[:, y: y + step],
                   None if image is None else image[:, y: y + step])
    tracer.finish()
    return pd.DataFrame(rows, columns=object_columns(channel_names)), shapes
