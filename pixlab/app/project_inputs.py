"""The inputs of a project folder: its images, their labels and the prediction jobs (notebooks 01 and 04).

A mixin of :class:`pixlab.app.project.Project`, which owns the folder's paths and run information.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from pixlab._atomic import atomic_path, atomic_write
from pixlab.image.formats import IMAGE_SUFFIXES, is_image_path, list_image_folder, stem as _stem

__all__ = ["InputsMixin", "SAMPLE_IHC"]

#: The bundled sample image, usable wherever a project takes image paths.
SAMPLE_IHC = "sample:ihc"


def _write_json(path: Path, obj) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")


def _read_json(path: Path, what: str):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} '{path}' is not valid JSON ({e}); fix or delete it") from None


class InputsMixin:
    """Images, labels and prediction jobs of a :class:`~pixlab.app.project.Project` (mixin)."""

    # ---------------------------------------------------------------- images
    def _sample_image(self, labels: bool = True) -> Path:
        """Write the bundled IHC sample as an OME-TIFF, and (``labels``) its strokes unless labels exist."""
        from pixlab.datasets import sample_ihc
        from pixlab.image.io import write_ome_tiff
        img, strokes, class_names = sample_ihc()
        path = self.images_dir / "ihc.tif"
        if not path.is_file():
            self.images_dir.mkdir(parents=True, exist_ok=True)
            write_ome_tiff(path, img)
        if labels and self.labels_file("ihc") is None:
            self.labels_dir.mkdir(parents=True, exist_ok=True)
            from pixlab.annotation import AnnotationSession
            from pixlab.labels.masks import save_labels
            save_labels(self.labels_dir / "ihc.labels.png", strokes)
            # Reopening through the session writes the sidecar (class names, colours) it reads back.
            s = AnnotationSession([path], class_names, labels_dir=self.labels_dir, autosave=False)
            try:
                s.save(0)
            finally:
                s.close()
        return path

    def set_images(self, images, channels=None, labels_from=None) -> list[Path]:
        """Choose the project's images and write ``images.json`` (and ``settings.json``).

        Parameters
        ----------
        images : str, path or list of them
            Image files, folders (every image file in them, sorted) or ``"sample:ihc"`` (the bundled
            IHC sample, written to ``images/ihc.tif`` with its brush strokes in ``labels/``).
        channels : list of int or str, optional
            Channels used for training (names or indices); None or [] = all.
        labels_from : path, optional
            A folder of ``<image name>.labels.png`` files to start from (see :meth:`import_labels`);
            they win over the sample's strokes, labels already in the project win over both.

        Returns
        -------
        list of pathlib.Path
            Absolute image paths, in order.

        Raises
        ------
        FileNotFoundError
            If a path does not exist.
        ValueError
            If the list is empty, a folder holds no image, or a name appears twice.
        """
        items = [images] if isinstance(images, (str, os.PathLike)) else list(images or [])
        if not items:
            raise ValueError("images is empty; give image files, a folder, or 'sample:ihc' for the bundled sample")
        paths: list[Path] = []
        for item in items:
            if str(item).strip().lower() == SAMPLE_IHC:
                paths.append(self._sample_image(labels=False))
                continue
            p = Path(item).expanduser()
            if p.is_dir() and not is_image_path(p):  # an OME-Zarr folder is one image
                found = list_image_folder(p)
                if not found:
                    raise ValueError(f"folder '{p}' holds no image files ({', '.join(IMAGE_SUFFIXES)}); "
                                     "give another folder or the image files themselves")
                paths.extend(f.absolute() for f in found)
            elif p.exists():
                paths.append(p.absolute())
            else:
                raise FileNotFoundError(f"image '{item}' does not exist; check the path (relative paths start "
                                        f"at {Path.cwd()}) or use 'sample:ihc' for the bundled sample")
        stems = [_stem(p) for p in paths]
        dupes = sorted({s for s in stems if stems.count(s) > 1})
        if dupes:
            raise ValueError(f"several images are named '{dupes[0]}'; their labels would share one file - rename "
                             "them or run them as separate projects")
        self.root.mkdir(parents=True, exist_ok=True)
        _write_json(self.images_file, [str(p) for p in paths])
        _write_json(self.settings_file, {"channels": list(channels) if channels else None})
        if self.run_info() is None:
            self.write_run_info(parameters={})
        if labels_from:
            self.import_labels(labels_from)
        if any(str(i).strip().lower() == SAMPLE_IHC for i in items):
            self._sample_image(labels=True)  # the sample's strokes where no labels came from elsewhere
        return paths

    def images(self) -> list[Path]:
        """The image paths saved by :meth:`set_images` (notebook 01).

        Raises
        ------
        FileNotFoundError
            If ``images.json`` or one of the images is missing.
        """
        if not self.images_file.is_file():
            raise FileNotFoundError(f"'{self.images_file}' not found; run notebook 01_annotate first "
                                    f"(with run_dir='{self.root}') to choose the images")
        items = _read_json(self.images_file, "image list")
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ValueError(f"'{self.images_file}' must hold a list of image paths; run 01_annotate again")
        out = []
        for item in items:
            if item.strip().lower() == SAMPLE_IHC:
                out.append(self._sample_image())
                continue
            p = Path(item)
            if not p.is_absolute():
                p = self.root / p
            if not p.is_file():
                raise FileNotFoundError(f"image '{p}' listed in '{self.images_file}' does not exist; "
                                        "restore it or run 01_annotate again")
            out.append(p)
        return out

    def settings(self) -> dict:
        """``settings.json`` (``{"channels": ...}``); empty when 01 has not run."""
        if not self.settings_file.is_file():
            return {}
        s = _read_json(self.settings_file, "settings file")
        return s if isinstance(s, dict) else {}

    # ---------------------------------------------------------------- labels
    def labels_file(self, image) -> Path | None:
        """The saved labels of ``image`` (a path or a name), or None."""
        from pixlab.annotation.files import existing_labels_file
        stem = image if isinstance(image, str) and not Path(image).suffix else _stem(image)
        return existing_labels_file(self.labels_dir, stem)  # a slide's are a .labels.zarr folder

    def import_labels(self, folder) -> list[Path]:
        """Copy ``<stem>.labels.png``/``.tif``/``.zarr`` (+ ``.labels.json``) of the project's images from ``folder``.

        Labels already in the project are kept (they may hold newer strokes).

        Returns
        -------
        list of pathlib.Path
            The label files copied.
        """
        src = Path(folder).expanduser()
        if not src.is_dir():
            raise FileNotFoundError(f"labels folder '{src}' does not exist; give the folder that holds "
                                    "<image name>.labels.png files")
        copied = []
        self.labels_dir.mkdir(parents=True, exist_ok=True)
        for img in self.images():
            stem = _stem(img)
            if self.labels_file(stem) is not None:
                continue
            for suffix in (".png", ".tif", ".zarr", ".json"):
                f = src / f"{stem}.labels{suffix}"
                if f.is_dir() and suffix == ".zarr":  # a slide's chunked labels
                    from pixlab._atomic import atomic_dir
                    with atomic_dir(self.labels_dir / f.name) as tmp:
                        shutil.copytree(f, tmp, dirs_exist_ok=True)
                    copied.append(self.labels_dir / f.name)
                elif f.is_file():
                    with atomic_path(self.labels_dir / f.name) as tmp:
                        shutil.copyfile(f, tmp)
                    if suffix != ".json":
                        copied.append(self.labels_dir / f.name)
        return copied

    def session(self, class_names=None, **kwargs):
        """An :class:`pixlab.annotation.AnnotationSession` over the project's images and labels.

        Parameters
        ----------
        class_names : list of str, optional
            Default: the classes saved with the labels.
        **kwargs
            Passed to the session (``autosave``, ``channels``, ...); ``channels`` defaults to the
            channels chosen in 01.
        """
        from pixlab.annotation import AnnotationSession
        if "channels" not in kwargs and self.settings().get("channels"):
            kwargs["channels"] = self.settings()["channels"]
        return AnnotationSession(self.images(), class_names or None, labels_dir=self.labels_dir, **kwargs)

    def missing_labels(self) -> list[Path]:
        """Images of the project without a labels file."""
        return [p for p in self.images() if self.labels_file(p) is None]

    def require_labels(self) -> list[Path]:
        """The label files of the project's images; FileNotFoundError when no image has any.

        Headless runs cannot wait for a person to draw, so they stop here with the fix.
        """
        images = self.images()
        found = [f for f in (self.labels_file(p) for p in images) if f is not None]
        if not found:
            raise FileNotFoundError(
                f"no labels for any of the {len(images)} image(s) in '{self.labels_dir}'; draw them in "
                "01_annotate (interactive), or pass labels_from=FOLDER holding <image name>.labels.png files")
        return found

    def prediction_jobs(self, inputs=None, output_dir=None, suffix: str = ".ome.tif") -> list[tuple[Path, Path]]:
        """Pairs (input image, output file) for notebook 04.

        Parameters
        ----------
        inputs : list of paths or folders, optional
            Default (None or []): the project's images.
        output_dir : path, optional
            Default (None or ""): ``predictions/``.
        suffix : str
            Output suffix after the image's stem.

        Returns
        -------
        list of (pathlib.Path, pathlib.Path)
        """
        if inputs:
            items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
            sources: list[Path] = []
            for item in items:
                p = Path(item).expanduser()
                if p.is_dir() and not is_image_path(p):
                    found = list_image_folder(p)
                    if not found:
                        raise ValueError(f"folder '{p}' holds no image files; give another folder or the files")
                    sources.extend(found)
                elif p.exists():
                    sources.append(p)
                else:
                    raise FileNotFoundError(f"input '{item}' does not exist; check the path (relative paths "
                                            f"start at {Path.cwd()})")
        else:
            sources = self.images()
        out_dir = Path(output_dir).expanduser() if output_dir else self.predictions_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        return [(p.absolute(), (out_dir / f"{_stem(p)}{suffix}").absolute()) for p in sources]
