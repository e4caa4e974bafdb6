"""Classes of an annotation session: the names and colours, checked against saved labels, and their edits."""

from __future__ import annotations

import numpy as np

from pixlab.annotation.files import read_sidecar
from pixlab.labels.masks import default_colours, parse_colour

__all__ = ["resolve_classes", "ClassesMixin"]


def resolve_classes(names_of_images, labels_dir, class_names, colours):
    """The session's ``(class names, colours)``: given, else the saved ones, else background/foreground.

    Raises
    ------
    ValueError
        Names that are empty or repeated, or that disagree with the classes saved with an image's labels
        (new classes may follow the saved ones).
    """
    saved = [(n, m) for n in names_of_images if (m := read_sidecar(labels_dir, n)) is not None]
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
    for image_name, meta in saved:
        old = [str(n) for n in meta["class_names"]]
        if names[:len(old)] != old:
            raise ValueError(
                f"labels of image '{image_name}' in '{labels_dir}' were drawn with classes {old} "
                f"but this session has {names}; pass class_names={old} (new classes may follow them) "
                "or use another labels_dir"
            )
    if colours is None:
        colours = default_colours(len(names))
    colours = [parse_colour(c) for c in colours]
    if len(colours) < len(names):
        colours = colours + default_colours(len(names))[len(colours):]
    return names, colours[:len(names)]


class ClassesMixin:
    """Class editing for :class:`~pixlab.annotation.AnnotationSession` (``class_names``, ``colours``)."""

    @property
    def n_classes(self) -> int:
        """Number of classes ``K``."""
        return len(self.class_names)

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
        with self.lock:
            name = self._check_new_name(name)
            colour = parse_colour(colour) if colour is not None else default_colours(self.n_classes + 1)[-1]
            self.class_names.append(name)
            self.colours.append(colour)
            if self.n_classes == 256:  # labels no longer fit uint8 (and PNG): widen every store
                for store in self._stores.values():
                    store.astype(np.uint16)
            self._classes_changed()
            return self.n_classes

    def rename_class(self, cls, new_name: str) -> None:
        """Rename a class (id or name)."""
        with self.lock:
            k = self.class_id(cls)
            if str(new_name).strip() == self.class_names[k - 1]:
                return
            self.class_names[k - 1] = self._check_new_name(new_name)
            self._classes_changed()

    def recolour_class(self, cls, colour) -> None:
        """Change a class's display colour (``"#rrggbb"`` or ``[r, g, b]``)."""
        with self.lock:
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
        with self.lock:
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
            stores = {i: self.label_store(i) for i in range(self.n_images)}
            counts = {i: int(st.bincount(self.n_classes + 1)[k]) for i, st in stores.items()}
            total = sum(counts.values())
            if total and target is None and not drop:
                n_img = sum(1 for c in counts.values() if c)
                raise ValueError(
                    f"class '{self.class_names[k - 1]}' has {total} labelled pixels in {n_img} image(s); "
                    f"pass migrate_to='<another class>' to relabel them or drop=True to erase them"
                )
            lut = np.arange(self.n_classes + 1)
            lut[k] = 0 if target is None else target
            lut = np.where(lut > k, lut - 1, lut)
            for i, store in stores.items():
                store.map_values(lut)
                self._history.clear(i)
                self._touch(i)
            del self.class_names[k - 1]
            del self.colours[k - 1]
            self._classes_changed()

    def _classes_changed(self) -> None:
        # Every saved file's sidecar lists the classes, so all images with labels are rewritten.
        for i in list(self._stores):
            if self._labels_file(i) is not None or self._stores[i].any():
                self._mark_dirty(i)
        self._emit("classes")
