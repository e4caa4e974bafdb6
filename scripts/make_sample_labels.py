"""Regenerate ``pixlab/data/ihc_strokes.png``, the sparse labels of :func:`pixlab.datasets.sample_ihc`.

Deterministic: the dense reference mask comes from colour deconvolution (see
:func:`pixlab.datasets.sample_ihc_reference`) and the strokes from a fixed seed, so running this
again reproduces the committed file (up to changes in scikit-image's algorithms).

Usage::

    python scripts/make_sample_labels.py [--out pixlab/data/ihc_strokes.png] [--preview preview.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from pixlab._atomic import atomic_path
from pixlab.datasets import IHC_CLASSES, sample_ihc_reference, strokes_from_mask

STROKES_PER_CLASS = 14
RADIUS = 2
LENGTH = (10, 25)
SEED = 0
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "pixlab" / "data" / "ihc_strokes.png"


def make_labels() -> np.ndarray:
    """Return the (512, 512) uint8 stroke labels (0 = unlabelled, 1..3 = IHC_CLASSES)."""
    reference = sample_ihc_reference()
    return strokes_from_mask(reference, strokes_per_class=STROKES_PER_CLASS, radius=RADIUS,
                             length=LENGTH, seed=SEED)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="label PNG to write")
    parser.add_argument("--preview", type=Path, help="also write an RGB overlay for a visual check")
    args = parser.parse_args(argv)

    labels = make_labels()
    # Plain 8-bit grey PNG holding class ids: tiny, and every reader returns the ids unchanged.
    with atomic_path(args.out) as tmp:
        PILImage.fromarray(labels).save(tmp, format="PNG", optimize=True)
    args.out.chmod(0o644)  # package data must be readable by everyone; temp files are created 0600
    counts = {name: int((labels == k).sum()) for k, name in enumerate(IHC_CLASSES, start=1)}
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes); labelled pixels per class: {counts}")

    if args.preview:
        from skimage import data

        rgb = data.immunohistochemistry().copy()
        colours = np.array([[0, 0, 0], [0, 200, 0], [30, 60, 255], [255, 0, 0]], np.uint8)
        rgb[labels > 0] = colours[labels[labels > 0]]
        with atomic_path(args.preview) as tmp:
            PILImage.fromarray(rgb).save(tmp, format="PNG")
        print(f"wrote {args.preview}")


if __name__ == "__main__":
    main()
