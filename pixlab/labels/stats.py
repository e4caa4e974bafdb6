"""Label statistics (pixels and strokes per class) and the guide's annotation advice."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pixlab.labels.validate import _as_integer_labels, _check_class_names

__all__ = ["label_stats", "min_strokes_per_class", "annotation_warnings"]


# The guide's annotation table: (minimum, recommended) strokes per class by task size.
_STROKE_GUIDE = {2: (10, 30), 4: (15, 40), None: (20, 50)}


# A class with more than this many times the labelled pixels of another is "imbalanced" (guide).
_IMBALANCE_RATIO = 10.0


def label_stats(labels_list, class_names: Sequence[str]) -> list[dict]:
    """Count labelled pixels and strokes per class over one or more label images.

    Parameters
    ----------
    labels_list : array_like or list of array_like
        One label image ``(Y, X)`` or a list of them (``None`` entries, images without labels, are
        skipped).
    class_names : sequence of str
        Names of classes ``1..N``.

    Returns
    -------
    list of dict
        One dict per class, in class order: ``{"class": name, "id": k, "pixels": int,
        "strokes": int}``. A stroke is an 8-connected component of one class, so two strokes that
        touch count as one.

    Examples
    --------
    >>> labels = np.array([[1, 1, 0, 2], [0, 0, 0, 2], [1, 0, 0, 0]])
    >>> [(s["class"], s["pixels"], s["strokes"]) for s in label_stats(labels, ["bg", "fg"])]
    [('bg', 3, 2), ('fg', 2, 1)]
    """
    from skimage.measure import label as connected_components

    names = _check_class_names(class_names)
    if labels_list is None:
        labels_list = []
    elif isinstance(labels_list, np.ndarray) or (
        isinstance(labels_list, (list, tuple)) and labels_list and np.ndim(labels_list[0]) == 1
    ):
        labels_list = [labels_list]  # one image given directly
    pixels = np.zeros(len(names) + 1, np.int64)
    strokes = np.zeros(len(names) + 1, np.int64)
    for i, labels in enumerate(labels_list):
        if labels is None:
            continue
        array = _as_integer_labels(labels, what=f"labels[{i}]")
        top = int(array.max()) if array.size else 0
        if top > len(names):
            raise ValueError(
                f"labels[{i}] contain class id {top} but only {len(names)} class names were given "
                f"({', '.join(map(repr, names))}); add the class name or relabel"
            )
        pixels += np.bincount(array.ravel(), minlength=len(names) + 1)
        # skimage labels connected regions of *equal value*, so one pass finds the strokes of all
        # classes; each component's class is the value of any of its pixels.
        components = connected_components(array, background=0, connectivity=2)
        component_class = np.zeros(int(components.max()) + 1, np.int64)
        component_class[components.ravel()] = array.ravel()
        strokes += np.bincount(component_class[1:], minlength=len(names) + 1)
    return [
        {"class": name, "id": k, "pixels": int(pixels[k]), "strokes": int(strokes[k])}
        for k, name in enumerate(names, start=1)
    ]


def _stroke_guide(n_classes: int) -> tuple[int, int]:
    if isinstance(n_classes, bool) or int(n_classes) != n_classes or n_classes < 1:
        raise ValueError(
            f"n_classes must be a positive integer, got {n_classes!r}; pass len(class_names)"
        )
    if n_classes <= 2:
        return _STROKE_GUIDE[2]
    if n_classes <= 4:
        return _STROKE_GUIDE[4]
    return _STROKE_GUIDE[None]


def min_strokes_per_class(n_classes: int) -> int:
    """Minimum number of strokes per class that the annotation guide asks for.

    Parameters
    ----------
    n_classes : int
        Number of classes in the task.

    Returns
    -------
    int
        10 for 1-2 classes, 15 for 3-4 classes, 20 for 5 or more (the guide recommends 30, 40 and
        50+ respectively).

    Examples
    --------
    >>> [min_strokes_per_class(n) for n in (2, 3, 4, 5)]
    [10, 15, 15, 20]
    """
    return _stroke_guide(n_classes)[0]


def annotation_warnings(stats: Sequence[dict]) -> list[str]:
    """Plain-language warnings about annotations that are too few or too unbalanced.

    Parameters
    ----------
    stats : list of dict
        Output of :func:`label_stats`.

    Returns
    -------
    list of str
        One sentence per problem: classes with no labelled pixels, classes with fewer strokes than
        the guide's minimum (:func:`min_strokes_per_class`), and, when one class has more than 10x
        the labelled pixels of another, suggested class-weight multipliers. Empty when all is well.

    Examples
    --------
    >>> stats = [{"class": "background", "id": 1, "pixels": 900, "strokes": 12},
    ...          {"class": "nuclei", "id": 2, "pixels": 300, "strokes": 4}]
    >>> annotation_warnings(stats)
    ["class 'nuclei' has 4 strokes; the guide recommends at least 10 for a 2-class task (30+ is better)"]
    """
    stats = list(stats)
    if not stats:
        return []
    n_classes = len(stats)
    minimum, recommended = _stroke_guide(n_classes)
    messages = []
    for s in stats:
        if s["pixels"] == 0:
            messages.append(
                f"class '{s['class']}' has no labelled pixels; draw at least {minimum} strokes of it "
                "or remove the class"
            )
        elif s["strokes"] < minimum:
            messages.append(
                f"class '{s['class']}' has {s['strokes']} stroke{'s' if s['strokes'] != 1 else ''}; "
                f"the guide recommends at least {minimum} for a {n_classes}-class task "
                f"({recommended}+ is better)"
            )
    labelled = [s for s in stats if s["pixels"] > 0]
    if len(labelled) >= 2:
        most = max(labelled, key=lambda s: s["pixels"])
        least = min(labelled, key=lambda s: s["pixels"])
        ratio = most["pixels"] / least["pixels"]
        if ratio > _IMBALANCE_RATIO:
            # Inverse-frequency multipliers relative to the most labelled class (which keeps 1.0).
            weights = ", ".join(
                f"{s['class']}={most['pixels'] / s['pixels']:.1f}" if s["pixels"] else f"{s['class']}=1.0"
                for s in stats
            )
            messages.append(
                f"class '{most['class']}' has {ratio:.0f}x the labelled pixels of class "
                f"'{least['class']}' ({most['pixels']} vs {least['pixels']}); label more "
                f"'{least['class']}' or use class weight multipliers such as {weights}"
            )
    return messages
