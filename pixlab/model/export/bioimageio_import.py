"""Moved to :mod:`pixlab.model.bioimageio_import` (reading a package is loading, not exporting);
re-exported so that old imports keep working."""

from pixlab.model.bioimageio_import import SETTINGS, BioimageioModel, is_bioimageio, load_bioimageio  # noqa: F401

__all__ = ["BioimageioModel", "load_bioimageio", "is_bioimageio", "SETTINGS"]
