"""Notebook 01 in real JupyterLab + Chromium: brush strokes with the mouse, undo, eraser, kernel SIGKILL.

The notebook is the real ``notebooks/01_annotate.ipynb`` with papermill-style injected parameters (a
synthetic two-class fluorescence image without labels, so every labelled pixel on disk comes from the
mouse). Kernel-side facts (the canvas -> image mapping, the preview state) are read through a second
jupyter_client on the notebook's kernel; everything else is what the browser and the disk show.
"""

from __future__ import annotations

import os
import signal
import time
from types import SimpleNamespace

import numpy as np
import pytest

from labtools import REPO, Notebook, canvas_pixels, drag, poll

CLASSES = ["background", "nuclei"]
# Canvas strokes (x, y in canvas pixels of the 720 x 540 canvas; the 256 px image is fitted in the
# middle, columns 90..630). Kept apart so that each check sees one stroke.
STROKE_A = [(220, 130), (330, 130), (420, 140)]  # class 1
STROKE_B = [(240, 330), (350, 320), (450, 330)]  # class 2
STROKE_C = [(200, 450), (320, 455), (440, 450)]  # class 2, drawn just before the kernel is killed
ERASE_X = 330  # a vertical eraser drag through the middle of stroke A


def _read_labels(path):
    from pixlab.labels.masks import load_labels

    for _ in range(20):  # the file is replaced atomically; a read may race the rename on some filesystems
        try:
            return load_labels(path)
        except (OSError, ValueError):
            time.sleep(0.1)
    return load_labels(path)


def _saved(annot, condition, what: str, timeout: float = 30.0):
    """Labels once the kernel's stroke is finished, satisfies ``condition``, and autosave wrote exactly it.

    The kernel's labels are read only when no stroke is in progress (``_drawing`` is False after the
    mouse-up event), so a half-received drag is never taken for the result.
    """
    def kernel():
        done, labels = annot.nb.eval("[not annotator._drawing, annotator.session.labels.tolist()]")
        labels = np.array(labels, dtype=np.uint8)
        return labels if done and condition(labels) else None

    expected = poll(kernel, timeout=timeout, what=what)
    return poll(lambda: lab if annot.labels_file.is_file()
                and np.array_equal(lab := _read_labels(annot.labels_file), expected) else None,
                timeout=timeout, what=f"the autosave of {what}")


def _segments_mask(nb, canvas_points, shape, radius_extra: float):
    """Image pixels within (brush radius + radius_extra) of the stroke, using the kernel's own mapping."""
    pts = nb.eval(f"[annotator.view.canvas_to_image(y, x) for x, y in {canvas_points!r}]")
    radius = nb.eval("annotator.radius")
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    near = np.zeros(shape, bool)
    centre = []
    for (y0, x0), (y1, x1) in zip(pts[:-1], pts[1:]):
        d = np.array([y1 - y0, x1 - x0], float)
        t = np.clip(((yy - y0) * d[0] + (xx - x0) * d[1]) / max(float(d @ d), 1e-9), 0, 1)
        dist = np.hypot(yy - (y0 + t * d[0]), xx - (x0 + t * d[1]))
        near |= dist <= radius + radius_extra
        for s in np.linspace(0, 1, 25):
            centre.append((int(round(y0 + s * d[0])), int(round(x0 + s * d[1]))))
    return near, np.array(centre), radius


@pytest.fixture(scope="module")
def annot(lab, page):
    """Notebook 01 opened, Run All done, brush canvas visible; returns a small namespace."""
    from pixlab.datasets import synthetic_fluorescence
    from pixlab.image.io import write_ome_tiff

    img, _ = synthetic_fluorescence(shape=(256, 256), n_channels=2, n_nuclei=10, seed=5)
    image = lab.root / "cells.ome.tif"
    write_ome_tiff(image, img.read(), channel_names=img.channel_names)
    run_dir = lab.root / "annotate-run"
    lab.add_notebook(REPO / "notebooks" / "01_annotate.ipynb", "01_annotate.ipynb",
                     {"run_dir": str(run_dir), "images": [str(image)], "class_names": CLASSES, "preview": False})
    nb = Notebook(lab, page, "01_annotate.ipynb", "annotate").open()
    nb.run_all()
    assert nb.errors() == []
    canvas = page.locator(".jupyter-widgets canvas").first
    canvas.wait_for(state="visible")
    canvas.scroll_into_view_if_needed()

    yield SimpleNamespace(nb=nb, page=page, canvas=canvas, labels_file=run_dir / "labels" / "cells.labels.png",
                          shape=(256, 256), colours=nb.eval("annotator.session.colours"))
    nb.close()


def _select_class(page, k: int) -> None:
    page.get_by_label(f"{k}. {CLASSES[k - 1]}", exact=True).check()


def _select_tool(page, name: str) -> None:
    page.locator(".widget-toggle-buttons button", has_text=name).first.click()


def test_mouse_strokes_of_two_classes_reach_the_labels_file_and_the_preview_appears(annot):
    page, nb, canvas = annot.page, annot.nb, annot.canvas
    nb.screenshot("annotator-ready")
    assert not annot.labels_file.exists(), "the test image must start without labels"
    assert nb.eval("annotator._preview_result is None or annotator._preview_result.probs is None")
    before = canvas_pixels(canvas)

    drag(page, canvas, STROKE_A)
    _select_class(page, 2)
    poll(lambda: nb.eval("annotator.current_class") == 2, what="class 2 to be selected")
    drag(page, canvas, STROKE_B)

    labels = _saved(annot, lambda lab: (lab == 1).any() and (lab == 2).any(), "strokes of both classes")
    near_a, centre_a, radius = _segments_mask(nb, STROKE_A, annot.shape, 1.5)
    near_b, centre_b, _ = _segments_mask(nb, STROKE_B, annot.shape, 1.5)
    # Every pixel under the pointer's path has the class it was painted with ...
    assert (labels[tuple(centre_a.T)] == 1).all()
    assert (labels[tuple(centre_b.T)] == 2).all()
    # ... and nothing was painted anywhere else.
    assert not (labels[~near_a] == 1).any()
    assert not (labels[~near_b] == 2).any()
    assert (labels == 1).sum() > 0.5 * near_a.sum() and (labels == 2).sum() > 0.5 * near_b.sum()

    # The instant preview (random forest on the two classes) is computed and drawn over the image.
    assert nb.eval("annotator.wait_preview(120).probs is not None", timeout=150)
    poll(lambda: nb.eval("annotator._preview_result is not None and annotator._preview_result.probs is not None"),
          what="the preview result")
    time.sleep(1.0)  # the preview's canvas messages follow the kernel-side result
    canvas.scroll_into_view_if_needed()
    after = canvas_pixels(canvas)
    rect = nb.eval("list(annotator.view.canvas_rect((0, 256, 0, 256)))")  # (i0, i1, j0, j1) of the image
    i0, i1, j0, j1 = rect
    changed = np.abs(after[i0:i1, j0:j1, :3].astype(int) - before[i0:i1, j0:j1, :3].astype(int)).max(-1) > 8
    # Away from the strokes only the preview overlay can have changed the pixels: most of them did.
    assert changed.mean() > 0.5, f"only {changed.mean():.0%} of the image pixels show the preview overlay"
    nb.screenshot("strokes-and-preview")


def test_undo_and_eraser_change_the_file_accordingly(annot):
    page, nb, canvas = annot.page, annot.nb, annot.canvas
    canvas.scroll_into_view_if_needed()
    start = _read_labels(annot.labels_file)
    assert (start == 2).any(), "needs the strokes of the previous test"

    page.locator("button", has_text="undo").first.click()  # undoes stroke B (class 2), the last one
    after_undo = _saved(annot, lambda lab: not (lab == 2).any(), "the undo")
    expected = start.copy()
    expected[expected == 2] = 0
    np.testing.assert_array_equal(after_undo, expected)
    nb.screenshot("after-undo")

    _select_tool(page, "eraser")
    poll(lambda: nb.eval("annotator.tool.value") == "eraser", what="the eraser tool")
    drag(page, canvas, [(ERASE_X, 95), (ERASE_X, 175)])
    after_erase = _saved(annot, lambda lab: (lab == 1).sum() < (after_undo == 1).sum(), "the eraser")
    near_e, centre_e, _ = _segments_mask(nb, [(ERASE_X, 95), (ERASE_X, 175)], annot.shape, 1.5)
    # Pixels under the eraser are unlabelled now; every other pixel is as before.
    assert not after_erase[tuple(centre_e.T)].any()
    np.testing.assert_array_equal(after_erase[~near_e], after_undo[~near_e])
    # Stroke A survives on both sides of the cut.
    cols = np.nonzero((after_erase == 1).any(axis=0))[0]
    cut = int(np.median(centre_e[:, 1]))
    assert cols.min() < cut - 3 and cols.max() > cut + 3
    _select_tool(page, "brush")
    poll(lambda: nb.eval("annotator.tool.value") == "brush", what="the brush tool")
    nb.screenshot("after-eraser")


def test_sigkill_of_the_kernel_right_after_a_stroke_loses_nothing(annot, lab):
    page, nb, canvas = annot.page, annot.nb, annot.canvas
    canvas.scroll_into_view_if_needed()
    _select_class(page, 2)
    poll(lambda: nb.eval("annotator.current_class") == 2, what="class 2 to be selected")
    pid = nb.eval("__import__('os').getpid()")
    delay = nb.eval("annotator.session.autosave_delay")
    assert nb.eval("int((annotator.session.labels == 2).sum())") == 0
    drag(page, canvas, STROKE_C)
    # The kernel has the stroke in memory (mouse-up handled) ...
    poll(lambda: nb.eval("not annotator._drawing and bool((annotator.session.labels == 2).any())"), timeout=20,
         what="the whole stroke (mouse-up included) to reach the kernel")
    in_memory = np.array(nb.eval("annotator.session.labels.tolist()"), dtype=np.uint8)
    # ... then, without any save call, the kernel dies hard once the autosave debounce has passed
    # (plus a margin for a busy machine). No atexit handler or flush can run after SIGKILL.
    time.sleep(delay + 1.5)
    nb.screenshot("stroke-before-sigkill")
    nb.close_kernel_client()
    os.kill(pid, signal.SIGKILL)
    # JupyterLab notices (status "autorestarting"/"restarting", or its "kernel died" dialog): evidence.
    poll(lambda: page.locator(".jp-Dialog").count() > 0 or nb.kernel_status() != "idle", timeout=30,
         what="JupyterLab to notice the dead kernel")
    nb.screenshot("kernel-killed")

    # Reopen: reload the page (the server restarts the dead kernel), Run All again.
    page.reload()
    nb.open(timeout=120)
    new_pid = poll(lambda: nb.eval("__import__('os').getpid()"), timeout=60, what="the restarted kernel")
    assert new_pid != pid
    nb.run_all()
    assert nb.errors() == []
    canvas = page.locator(".jupyter-widgets canvas").first
    canvas.wait_for(state="visible")
    canvas.scroll_into_view_if_needed()

    _, centre_c, _ = _segments_mask(nb, STROKE_C, annot.shape, 1.5)
    on_disk = _read_labels(annot.labels_file)
    assert (on_disk[tuple(centre_c.T)] == 2).all(), "the stroke drawn before SIGKILL is not on disk"
    np.testing.assert_array_equal(on_disk, in_memory)  # nothing of what the dead kernel held is lost
    # The reopened annotator holds it ...
    in_kernel = np.array(nb.eval("annotator.session.labels.tolist()"), dtype=np.uint8)
    np.testing.assert_array_equal(in_kernel, on_disk)
    # ... and shows it: with opaque labels and the preview off, the canvas pixels under the stroke
    # are exactly the class colour.
    nb.eval("annotator.preview_enabled.value = False\nannotator.opacity.value = 1.0\nTrue")
    pts = nb.eval(f"[annotator.view.image_to_canvas(y, x) for y, x in {centre_c.tolist()!r}]")
    colour = np.array(annot.colours[1])

    def shows_stroke():
        px = canvas_pixels(canvas)
        got = np.array([px[int(round(i)), int(round(j)), :3] for i, j in pts])
        return (np.abs(got.astype(int) - colour).max(-1) <= 2).mean() > 0.9

    poll(shows_stroke, timeout=20, what="the reopened canvas to show the stroke in its class colour")
    nb.screenshot("reopened-after-sigkill")
