"""PNG and JPEG files: small, read whole.

Pillow decodes everything except 16-bit colour PNGs, which it silently reduces to 8 bits per sample
(Pillow 13 has no 48/64-bit RGB mode): those are decoded by imagecodecs, which keeps the 16 bits.
"""

from __future__ import annotations

import warnings

import numpy as np

from pixlab.image.formats import unreadable
from pixlab.image.image import RGB_NAMES, Image, choose_pixel_size
from pixlab.image.tiffmeta import MAX_INCH_PIXEL_UM

__all__ = ["open_pil"]

_CONVERT = {"1": "L", "LA": "L", "La": "L", "P": "RGB", "PA": "RGB", "RGBA": "RGB", "CMYK": "RGB",
            "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "RGBX": "RGB", "RGBa": "RGB"}


def _png_16bit_colour(path) -> bool:
    """IHDR says 16 bits per sample and colour type RGB (2) or RGBA (6)."""
    with open(path, "rb") as f:
        head = f.read(26)
    return head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 26 and head[24] == 16 and head[25] in (2, 6)


def _pixel_size(info, path):
    """µm per pixel from a PNG pHYs chunk / JPEG density, which Pillow gives as dots per inch."""
    dpi = info.get("dpi")
    try:
        xdpi, ydpi = (float(v) for v in dpi)
    except (TypeError, ValueError):
        return None
    if not (xdpi > 0 and ydpi > 0):
        return None
    size = (25400.0 / ydpi, 25400.0 / xdpi)
    if max(size) > MAX_INCH_PIXEL_UM:
        if round(xdpi) not in (72, 96):  # the usual defaults are not worth a warning
            warnings.warn(f"image '{path}' says {xdpi:g} dpi, not a microscope's pixel size; pixlab ignores "
                          f"it (pass pixel_size=... to open_image if you know it)", stacklevel=4)
        return None
    return size


def open_pil(path: str, pixel_size=None) -> Image:
    """Open a PNG/JPEG file as an in-memory :class:`Image` (samples last in the file: no guessing)."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(path) as im:
            info = dict(im.info)
            if im.format == "PNG" and _png_16bit_colour(path):
                import imagecodecs

                with open(path, "rb") as f:
                    arr = imagecodecs.png_decode(f.read())
                arr = arr[..., :3]  # colour type 6 declares its 4th sample as alpha
            else:
                im.load()
                if im.mode in _CONVERT:
                    im = im.convert(_CONVERT[im.mode])
                arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, RuntimeError) as exc:
        raise unreadable(path, exc) from exc
    if arr.dtype == np.int32 and arr.size and arr.min() >= 0 and arr.max() < 2**16:
        arr = arr.astype(np.uint16)  # 16-bit grey PNGs may come back as 32-bit "I" mode
    data = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    names = list(RGB_NAMES) if data.shape[0] == 3 else None  # colour files are RGB at any bit depth
    return Image(np.ascontiguousarray(data), names, pixel_size=choose_pixel_size(pixel_size, lambda: _pixel_size(info, path), path),
                 path=path)
