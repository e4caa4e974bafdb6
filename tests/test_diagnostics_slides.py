"""Diagnostics (notebook 03) on a whole slide: labels stay a chunked store, only stroke regions are read.

The slide and its strokes are those of ``test_train_slides``: a 20,000 x 20,000 lazy RGB image that
counts the blocks it computes, and a LabelStore that refuses to become a dense array.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pixlab
import pixlab.diagnostics as dx
from test_train_slides import CHUNK, PLACES, SIDE, CountingSlide, _near_strokes, _strokes

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture(scope="module")
def slide_model():
    cfg = pixlab.TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=64, epochs=3, batch_size=4,
                             recipe="standard", device="cpu", early_stopping=False, loss="ce",
                             scheduler="none", learning_rate=3e-3, pseudo_labels=False, seed=0)
    slide = CountingSlide()
    labels = _strokes()
    model = pixlab.train([(slide.image(), labels)], cfg, class_names=["background", "tissue"], progress=False)
    return model


def test_evaluate_on_a_slide_reads_only_around_the_strokes_and_keeps_the_training_split(slide_model):
    slide, labels = CountingSlide(), _strokes()
    report = dx.evaluate(slide_model, [(slide.image(), labels)])
    # The model's own training data: the trainer's stroke split is reproduced from the store.
    assert set(report.splits) >= {"train", "validation"}, report.notes
    counts = labels.bincount()
    total = sum(int(report.confusion[s].sum()) for s in ("train", "validation"))
    assert total == int(counts[1:].sum())  # every labelled pixel counted once
    assert report.confusion["all"].sum() == counts[1:].sum()
    assert report.tiles["labelled"].sum() == counts[1:].sum()
    # It learned the two colours on the strokes.
    assert report.metrics("all")["iou"].min() > 0.8
    far = [b for b in set(slide.blocks) if not _near_strokes(*b, labels, margin=2 * CHUNK)]
    assert slide.blocks and not far, sorted(far)[:5]


def test_labelled_region_of_a_slide_is_the_window_of_its_densest_strokes():
    slide, labels = CountingSlide(), _strokes()
    # Make the second place the densest: one more tissue stroke there.
    cy, cx = PLACES[1]
    labels.write((cy, cy + 6, cx - 900, cx - 300), np.full((6, 600), 2, np.uint8))
    region = dx.labelled_region(slide.image(), labels, max_side=2048)
    y0, y1, x0, x1 = region.box
    assert y1 - y0 <= 2048 and x1 - x0 <= 2048 and y0 % 64 == 0 and x0 % 64 == 0
    assert y0 <= cy - 600 and cy + 606 <= y1 and x0 <= cx - 900 and cx + 900 <= x1
    assert region.image.shape == (3, y1 - y0, x1 - x0)
    assert region.image.pixel_size == (0.5, 0.5) and region.image.channel_names == ["R", "G", "B"]
    np.testing.assert_array_equal(region.labels, labels.read(region.box))
    assert str(SIDE) in region.note and f"y {y0}:{y1}" in region.note
    np.testing.assert_array_equal(region.image.read(), CountingSlide.render(y0, y1, x0, x1))
    assert all(_near_strokes(*b, labels, margin=2048) for b in slide.blocks)


def test_labelled_region_of_a_small_image_is_the_whole_image():
    img = np.zeros((100, 120), np.uint8)
    lab = np.zeros((100, 120), np.uint8)
    lab[10, 10:20] = 1
    region = dx.labelled_region(img, lab, max_side=128)
    assert region.box is None and region.note is None
    assert region.image.shape == (1, 100, 120)
    np.testing.assert_array_equal(region.labels, lab)
    with pytest.raises(ValueError, match="no labelled pixel"):
        dx.labelled_region(img, np.zeros_like(lab))
    with pytest.raises(ValueError, match="max_side"):
        dx.labelled_region(img, lab, max_side=10)


@pytest.mark.slow
def test_diagnostics_notebook_runs_on_a_slide_project(tmp_path):
    """Notebook 03 on a project whose image is a pyramidal slide with chunked labels (.labels.zarr)."""
    import json

    import nbformat
    import papermill

    from pixlab.image.writer import write_ome_tiff
    from pixlab.labels.chunkfile import write_chunks
    from pixlab.labels.store import LabelStore

    H, W = 3072, 4096
    yy, xx = np.mgrid[0:H, 0:W]
    tissue = (xx < W // 2) | ((yy > H // 2) & (xx > 3 * W // 4))
    rgb = np.where(tissue[None], np.array([190, 95, 170], np.int16)[:, None, None],
                   np.array([238, 236, 240], np.int16)[:, None, None])
    rgb = np.clip(rgb + ((yy * 7 + xx * 13) % 11 - 5)[None], 0, 255).astype(np.uint8)
    root = tmp_path / "runs" / "slide"
    path = write_ome_tiff(tmp_path / "slide.ome.tif", rgb, ["R", "G", "B"], pixel_size=0.5)
    del rgb, yy, xx
    labels = LabelStore((H, W))
    for y in (300, 700, 1100):  # strokes near the top-left corner (tissue | background edge) ...
        labels.write((y, y + 6, 1600, 2000), np.full((6, 400), 2, np.uint8))
        labels.write((y, y + 6, 2200, 2600), np.full((6, 400), 1, np.uint8))
    labels.write((2500, 2506, 3300, 3700), np.full((6, 400), 2, np.uint8))  # ... and one far away
    (root / "labels").mkdir(parents=True)
    write_chunks(root / "labels" / "slide.labels.zarr", labels)
    (root / "images.json").write_text(json.dumps([str(path)]))
    cfg = pixlab.TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=64, epochs=3, batch_size=4,
                             recipe="standard", device="cpu", early_stopping=False, loss="ce", scheduler="none",
                             learning_rate=3e-3, pseudo_labels=False, seed=0)
    model = pixlab.train([(path, labels)], cfg, class_names=["background", "tissue"], progress=False)
    model.save(root / "model")
    out = tmp_path / "03.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / "03_diagnostics.ipynb"), str(out), progress_bar=False,
                               parameters={"run_dir": str(root), "interactive": False, "map_max_side": 1024},
                               cwd=str(NOTEBOOKS))
    nb = nbformat.read(str(out), as_version=4)
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/markdown", ""))
                   + str(o.get("data", {}).get("text/plain", "")) for c in nb.cells for o in c.get("outputs", []))
    assert "these diagnostics use the 1024 x 1024 px region" in text  # the strokes' window, said
    assert "1 labelled image(s)" in text
    assert (root / "figures" / "maps.png").stat().st_size > 1000

