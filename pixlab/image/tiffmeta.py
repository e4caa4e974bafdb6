"""Pixel size and channel names from the metadata of TIFF flavours (OME, Aperio, Leica, Akoya, ImageJ, plain).

Where each flavour keeps its pixel size (µm per pixel, returned as ``(y, x)``):

============  =================================================================================
OME-TIFF      ``Pixels/@PhysicalSizeY``, ``@PhysicalSizeX`` and their ``...Unit`` (default µm)
Aperio SVS    ``MPP = 0.2525`` in the ImageDescription of the first page
Leica SCN     ``image/view/@sizeX`` (nm) divided by ``image/pixels/@sizeX`` in the SCN XML
ImageJ/Fiji   XResolution/YResolution (pixels per unit) with the unit in the ImageJ metadata
anything else XResolution/YResolution with ResolutionUnit cm/mm/µm (scanners, NDPI, QPTIFF), or
              inch when it gives a microscope's pixel (<= 50 µm): 72 or 300 dpi is a writer's
              default, not a measurement, and is ignored
============  =================================================================================

A pixel size of zero or less in metadata that claims one is an error naming the tag and the fix
(``open_image(path, pixel_size=...)``); tags that are absent simply give ``None``.
"""

from __future__ import annotations

import math
import re
import warnings
import xml.etree.ElementTree as ET

__all__ = ["tiff_pixel_size", "tiff_channel_names", "UNIT_TO_UM", "MAX_INCH_PIXEL_UM"]

#: Length units (OME, ImageJ, NGFF spellings) -> micrometres.
UNIT_TO_UM = {
    "µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "\u03bcm": 1.0, "\\u00b5m": 1.0,
    "micrometer": 1.0, "micrometre": 1.0, "nm": 1e-3, "nanometer": 1e-3, "å": 1e-4, "angstrom": 1e-4,
    "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "centimeter": 1e4, "m": 1e6, "meter": 1e6,
}

# ResolutionUnit tag values -> micrometres per unit (2 = inch, 3 = cm; 4, 5 = mm, µm in DNG).
_RESUNIT_UM = {2: 25400.0, 3: 1e4, 4: 1e3, 5: 1.0}

#: Resolution tags in inches are trusted only up to this pixel size (about 500 dpi and finer).
MAX_INCH_PIXEL_UM = 50.0


def _zero_error(path, where, value) -> ValueError:
    return ValueError(
        f"image '{path}' declares a pixel size of {value} in its {where}, which is not a size; pass the "
        f"real one with pixlab.open_image(path, pixel_size=...) in µm per pixel, e.g. pixel_size=0.5"
    )


def _positive(values, path, where):
    try:
        vals = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in vals):
        return None
    if not all(v > 0 for v in vals):
        raise _zero_error(path, where, values[0] if len(set(values)) == 1 else tuple(values))
    return tuple(vals)


def _ome_pixels(tif):
    xml = tif.ome_metadata
    if not xml:
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    return next((el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"), None)


def _ome_pixel_size(tif, path):
    pixels = _ome_pixels(tif)
    if pixels is None:
        return None
    raw, factors = [], []
    for ax in ("Y", "X"):
        value = pixels.get(f"PhysicalSize{ax}")
        factor = UNIT_TO_UM.get(pixels.get(f"PhysicalSize{ax}Unit", "µm").lower())
        if value is None or factor is None:
            return None
        raw.append(value)
        factors.append(factor)
    size = _positive(raw, path, "OME-XML (PhysicalSizeX/Y)")
    return None if size is None else (size[0] * factors[0], size[1] * factors[1])


def _svs_pixel_size(tif, path):
    desc = tif.pages.first.description or ""
    m = re.search(r"\|\s*MPP\s*=\s*([-+0-9.eE]+)", desc)
    if not m:
        return None
    size = _positive([m.group(1)], path, "Aperio ImageDescription (MPP)")
    return None if size is None else (size[0], size[0])


def _scn_image(tif, series):
    xml = tif.scn_metadata
    if not xml:
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    ny, nx = (int(v) for v in series.shape[-2:]) if series.axes[-1] != "S" else (int(v) for v in series.shape[-3:-1])
    for image in root.iter():
        if not image.tag.endswith("}image") and image.tag != "image":
            continue
        pixels = next((el for el in image if el.tag.endswith("pixels")), None)
        view = next((el for el in image if el.tag.endswith("view")), None)
        if pixels is None or view is None:
            continue
        if (int(pixels.get("sizeY", -1)), int(pixels.get("sizeX", -1))) == (ny, nx):
            return pixels, view
    return None


def _scn_pixel_size(tif, series, path):
    found = _scn_image(tif, series)
    if found is None:
        return None
    pixels, view = found
    nm = _positive([view.get("sizeY"), view.get("sizeX")], path, "Leica SCN XML (view sizeX/sizeY)")
    if nm is None:
        return None
    return (nm[0] / int(pixels.get("sizeY")) * 1e-3, nm[1] / int(pixels.get("sizeX")) * 1e-3)


def _rational(tag):
    value = tag.value
    if isinstance(value, tuple) and len(value) == 2:
        num, den = value
        return num / den if den else None
    return float(value)


def _imagej_unit_um(tif):
    meta = tif.imagej_metadata or {}
    unit = str(meta.get("unit", "")).strip().lower()
    return UNIT_TO_UM.get(unit)


def _resolution_pixel_size(tif, path):
    """Pixel size from XResolution/YResolution (pixels per unit) and ResolutionUnit or ImageJ's unit."""
    tags = tif.pages.first.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None
    try:
        xres, yres = _rational(tags["XResolution"]), _rational(tags["YResolution"])
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not xres or not yres or xres <= 0 or yres <= 0:
        return None  # a zero resolution tag is a writer's placeholder, not a claim
    unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    # Fiji writes the real unit in its own metadata (the tag then says "none"); ImageJ reads that first.
    per_unit = _imagej_unit_um(tif) if tif.is_imagej else None
    if per_unit is not None:
        unit = 0  # not inch: ImageJ's unit is a statement, not a default
    else:
        per_unit = _RESUNIT_UM.get(unit)
        if per_unit is None:
            return None
    size = (per_unit / yres, per_unit / xres)
    if unit == 2 and max(size) > MAX_INCH_PIXEL_UM:
        warnings.warn(
            f"image '{path}': resolution tags say {xres:g} dpi, a software default rather than a "
            f"microscope's pixel size, so pixlab ignores them; pass pixel_size=... to open_image if "
            f"you know it", stacklevel=4)
        return None
    return size


def tiff_pixel_size(tif, series, path):
    """µm per pixel ``(y, x)`` of ``series`` level 0 from the file's metadata, or None.

    Parameters
    ----------
    tif : tifffile.TiffFile
    series : tifffile.TiffPageSeries
        The series pixlab reads (matters for Leica SCN, which holds several images).
    path : str
        For messages.
    """
    if tif.is_ome:
        size = _ome_pixel_size(tif, path)
        if size is not None:
            return size
    if tif.is_svs:
        size = _svs_pixel_size(tif, path)
        if size is not None:
            return size
    if tif.is_scn:
        size = _scn_pixel_size(tif, series, path)
        if size is not None:
            return size
    return _resolution_pixel_size(tif, path)


def tiff_channel_names(tif, series, n_channels):
    """Channel names from OME-XML, Akoya QPTIFF page XML or ImageJ labels; None when absent or partial."""
    names = None
    if tif.is_ome:
        pixels = _ome_pixels(tif)
        if pixels is not None:
            names = [ch.get("Name") for ch in pixels if ch.tag.endswith("Channel")]
    elif tif.is_qpi:
        names = []
        for page in series.pages[:n_channels]:
            try:
                root = ET.fromstring(page.description)
            except (ET.ParseError, AttributeError, TypeError):
                return None
            el = root.find("Biomarker") if root.find("Biomarker") is not None else root.find("Name")
            names.append(el.text.strip() if el is not None and el.text else None)
    elif tif.is_imagej:
        labels = (tif.imagej_metadata or {}).get("Labels")
        names = list(labels) if isinstance(labels, (list, tuple)) else None
    if not names or len(names) != n_channels or not all(names):
        return None
    return [str(n) for n in names]
