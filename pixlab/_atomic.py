"""Atomic file writing: every file pixlab writes goes through here.

A reader (or a crash) must see either the previous complete file or the new complete file, never a
half-written one. We write to a temporary name in the same folder (so ``os.replace`` is a rename on
the same filesystem), fsync it, then rename it over the final name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "atomic_path", "atomic_dir", "check_writable"]


def _fsync_dir(folder: Path) -> None:
    # Persist the rename itself; not supported on every platform/filesystem, hence best effort.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    # mkstemp/mkdtemp create owner-only files; written files should get the user's usual mode.
    # Read it from /proc where possible: os.umask(0) + restore changes the whole process's umask for
    # a moment, and background writers (the annotation autosave) would race other threads' files.
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: str | os.PathLike) -> Path:
    """Raise a clear error if the folder that will hold ``path`` cannot be written.

    Parameters
    ----------
    path : str or PathLike
        The file that is about to be written.

    Returns
    -------
    pathlib.Path
        ``path`` as a Path.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.exists():
        raise FileNotFoundError(
            f"output folder '{folder}' does not exist; create it first or choose another output path"
        )
    if not folder.is_dir():
        raise NotADirectoryError(f"output folder '{folder}' is a file, not a folder; choose another output path")
    if not os.access(folder, os.W_OK):
        raise PermissionError(
            f"output folder '{folder}' is not writable; choose a folder you can write to"
        )
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path that replaces ``path`` when the block succeeds.

    For libraries that write by file name (tifffile, PIL, zarr). The temporary file sits in the same
    folder and keeps ``path``'s suffix (or ``suffix``) so that format detection by suffix works.

    Parameters
    ----------
    path : str or PathLike
        Final location.
    suffix : str, optional
        Suffix for the temporary name; defaults to the suffix of ``path``.

    Yields
    ------
    str
        The temporary path to write to.
    """
    path = check_writable(path)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None):
    """Open a temporary file that replaces ``path`` when the block succeeds.

    Parameters
    ----------
    path : str or PathLike
        Final location.
    mode : {"wb", "w"}
        Binary or text mode.
    encoding : str, optional
        Text encoding (text mode only; defaults to UTF-8).

    Yields
    ------
    file object
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary folder that replaces the folder ``path`` when the block succeeds.

    The old folder (if any) is moved aside, the new one renamed into place, then the old one is
    removed; if anything fails, the previous folder is left as it was.

    Parameters
    ----------
    path : str or PathLike
        Final folder.

    Yields
    ------
    pathlib.Path
        The temporary folder to fill.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():  # never mkdir "through" a file: check_writable names that problem
        parent.mkdir(parents=True, exist_ok=True)
    check_writable(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        mode = 0o666 & ~_umask()
        for f in tmp.rglob("*"):
            if f.is_file():
                # Some writers create owner-only files (safetensors' save_file: 0600), which colleagues
                # on a shared server could not read; every file gets the user's usual mode.
                os.chmod(f, mode)
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        old = None
        if path.exists():
            old = parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)
            raise
        _fsync_dir(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
