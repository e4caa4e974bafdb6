"""A region of a large image around its strokes, for the diagnostics that hold a whole image.

Pixel maps, suggested boxes, label refinements and AdaBN predict an image in memory
(``model.predict`` returns ``(K, Y, X)`` float32). On a whole slide that is impossible, so they run
on the part of it where the user painted: :func:`labelled_region` cuts the densest cluster of
strokes out of level 0 (a window of at most ``max_side`` pixels a side) with its labels. An image
that fits in that window is returned whole, so small images are diagnosed as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LabelledRegion", "labelled_region"]

# Region corners are multiples of this: tiles and a model's downsample blocks fall on the image's grid.
_ALIGN = 64


@dataclass
class LabelledRegion:
    """An image region with its labels (see :func:`labelled_region`).

    Attributes
    ----------
    image : Image
        The region's level-0 pixels, in memory, with the image's channel names and pixel size.
    labels : numpy.ndarray
        ``(Y, X)`` labels of the region (0 = unlabelled).
    box : (y0, y1, x0, x1) or None
        Where the region lies in the image (level-0 pixels); None when it is the whole image.
    note : str or None
        One sentence saying which part of the image was taken, when it is not the whole image.
    """

    image: object
    labels: np.ndarray
    box: tuple | None
    note: str | None


def labelled_region(image, labels, max_side: int = 4096) -> LabelledRegion:
    """The whole image, or for a larger image the window of its strokes with the most labels.

    Parameters
    ----------
    image : Image, array or path
        Anything :func:`pixlab.open_image` accepts; a slide is read only inside the window.
    labels : array, LabelStore or path
        The image's labels (a label file, a slide's ``.labels.zarr``, an array or a label store).
    max_side : int
        Largest side of the window in level-0 pixels. An image whose sides both fit is returned
        whole. Memory: the window's pixels plus, for the maps, ``4 * K`` bytes per pixel.

    Returns
    -------
    LabelledRegion

    Raises
    ------
    ValueError
        ``max_side`` is below 64, labels do not fit the image, or no pixel is labelled.
    """
    from pixlab.image.image import Image
    from pixlab.image.io import open_image
    from pixlab.training.samples import open_labels
    from pixlab.training.strokes import read_labels, stroke_windows

    if int(max_side) < _ALIGN:
        raise ValueError(f"max_side must be at least {_ALIGN} pixels, got {max_side!r}; e.g. 4096")
    side = int(max_side) // _ALIGN * _ALIGN
    img = open_image(image)
    lab = open_labels(labels, img.shape[1:], None, f"labels of image '{img.name}'")
    if not lab.any():
        raise ValueError(f"labels of image '{img.name}' have no labelled pixel; brush some strokes first")
    _, H, W = img.shape
    if H <= max_side and W <= max_side:
        return LabelledRegion(img, read_labels(lab, 0, H, 0, W), None, None)
    best, best_n = None, -1
    for win in stroke_windows(lab, side):
        # Centre the window on the labels inside it (stroke_windows centres on a coarse grid).
        part = read_labels(lab, *win)
        rows, cols = np.flatnonzero(part.any(axis=1)), np.flatnonzero(part.any(axis=0))
        cy = win[0] + (rows[0] + rows[-1] + 1) // 2
        cx = win[2] + (cols[0] + cols[-1] + 1) // 2
        y0 = max(0, min(H - side, cy - side // 2) + _ALIGN // 2) // _ALIGN * _ALIGN
        x0 = max(0, min(W - side, cx - side // 2) + _ALIGN // 2) // _ALIGN * _ALIGN
        y1, x1 = min(H, y0 + side), min(W, x0 + side)
        n = int(np.count_nonzero(read_labels(lab, y0, y1, x0, x1)))
        if n > best_n:
            best, best_n = (y0, y1, x0, x1), n
    y0, y1, x0, x1 = best
    crop = Image(img.read(best), img.channel_names, img.pixel_size, name=f"{img.name} [{y0}:{y1}, {x0}:{x1}]")
    note = (f"Image '{img.name}' is {H} x {W} px, larger than max_side={max_side}: these diagnostics use the "
            f"{y1 - y0} x {x1 - x0} px region y {y0}:{y1}, x {x0}:{x1} (level 0), the cluster of strokes with "
            f"the most labelled pixels ({best_n}). Raise max_side for a larger region (memory grows with its area).")
    return LabelledRegion(crop, read_labels(lab, y0, y1, x0, x1), best, note)
