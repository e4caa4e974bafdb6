"""Saving an annotation session's labels: which images have unsaved edits, and writing them.

A mixin of :class:`~pixlab.annotation.AnnotationSession`. Edits mark their image dirty; the
:class:`~pixlab.annotation.autosave.Autosaver` (or an explicit :meth:`SavingMixin.flush`) then writes
each dirty image with :meth:`SavingMixin.save`: the sidecar first, then the labels, atomically, in the
format :mod:`pixlab.annotation.files` chooses for the image's size and class count.
"""

from __future__ import annotations

from pathlib import Path

# Imported as a module, not by name: tests replace files.write_sidecar to simulate a full disk.
import pixlab.annotation.files as files

__all__ = ["SavingMixin"]


class SavingMixin:
    """Saving for :class:`~pixlab.annotation.AnnotationSession` (which provides ``lock``, ``labels_dir``,
    ``autosave``, ``names``, ``n_classes``, ``class_names``, ``colours``, ``index_of``, ``image_of``,
    ``label_store``, ``_sources``, ``_dirty``, ``_closed``, ``_autosaver`` and ``_emit``)."""

    def _labels_file(self, i: int) -> Path | None:
        return files.existing_labels_file(self.labels_dir, self.names[i])

    def labels_path(self, image=None) -> Path | None:
        """The file the labels of an image are (auto)saved to.

        Parameters
        ----------
        image : int or str, optional
            Index or name (default: the current image).

        Returns
        -------
        pathlib.Path or None
            None when the session has no ``labels_dir``.
        """
        if self.labels_dir is None:
            return None
        i = self.index_of(image)
        return files.labels_path_for(self.labels_dir, self.names[i], self.n_classes, self.image_of(i).shape[1:])

    def _mark_dirty(self, i: int) -> None:
        # Edits are tracked whenever there is a folder (flush() writes them); the timer only with autosave.
        if self.labels_dir is None or self._closed:
            return
        with self.lock:
            self._dirty.add(i)
        if self.autosave:
            self._autosaver.touch()

    def _autosave_failed(self, message: str) -> None:
        self.last_error = message
        self._emit("error", message=message)

    @property
    def autosave_delay(self) -> float:
        """Seconds of quiet after the last edit before autosaving."""
        return self._autosaver.delay

    @autosave_delay.setter
    def autosave_delay(self, value) -> None:
        self._autosaver.delay = float(value)

    @property
    def autosave_running(self) -> bool:
        """Whether the autosave thread was started (it starts on the first edit with autosave on)."""
        return self._autosaver.started

    def save(self, image=None) -> Path:
        """Write one image's labels and sidecar now (atomically).

        A chunked ``.labels.zarr`` only gets the chunks changed since the last save.

        Parameters
        ----------
        image : int or str, optional
            Index or name (default: the current image).

        Returns
        -------
        pathlib.Path
            The labels file written.

        Raises
        ------
        ValueError
            The session has no ``labels_dir``.
        OSError
            The write failed; the image stays marked as edited, so the next save tries again.
        """
        if self.labels_dir is None:
            raise ValueError("this session has no labels_dir (in-memory images); pass labels_dir= to save labels")
        i = self.index_of(image)
        path = self.labels_path(i)
        with self.lock:
            store = self.label_store(i)
            meta = {"format": files.SIDECAR_FORMAT, "version": 1, "image": self.names[i],
                    "image_path": str(self._sources[i]) if isinstance(self._sources[i], Path) else None,
                    "shape": list(store.shape), "class_names": list(self.class_names),
                    "colours": [list(c) for c in self.colours]}
            self._dirty.discard(i)
            if path.suffix == ".zarr":
                from pixlab.labels.chunkfile import snapshot

                snap = snapshot(store, full=not path.exists())
            else:
                snap = store.to_array()
        self.labels_dir.mkdir(parents=True, exist_ok=True)
        try:
            # Sidecar first: a labels file is never on disk without the class names that give it meaning.
            files.write_sidecar(self.labels_dir, self.names[i], meta)
            if path.suffix == ".zarr":
                from pixlab.labels.chunkfile import write_snapshot

                write_snapshot(path, snap)
            else:
                files.save_store(path, store, snap)
        except BaseException:
            with self.lock:  # try again at the next save
                self._dirty.add(i)
                if path.suffix == ".zarr":
                    store.restore_dirty(snap.keys)
            raise
        files.remove_stale(path)  # switched format (crossed 255 classes or the size limit)
        self._emit("saved", image=i, path=str(path))
        return path

    def flush(self) -> list[Path]:
        """Write every image edited since the last save, now.

        Returns
        -------
        list of pathlib.Path
            The labels files written (empty without a ``labels_dir``).
        """
        if self.labels_dir is None:
            return []
        with self.lock:
            dirty = sorted(self._dirty)
        return [self.save(i) for i in dirty]

