import json
import time

import numpy as np
import pytest

from pixlab.annotation import MIN_RADIUS, AnnotationSession
from pixlab.labels.masks import load_labels, save_labels


def _session(shape=(40, 50), names=("bg", "fg"), **kw):
    kw.setdefault("autosave", False)
    return AnnotationSession(np.zeros(shape, np.uint8), list(names), **kw)


def _write_png(path, array):
    from PIL import Image as PILImage

    PILImage.fromarray(array).save(path)
    return path


# ---------------------------------------------------------------------------------------------- painting
def test_single_point_paints_a_disk_and_a_tiny_brush_still_paints_one_pixel():
    s = _session()
    c = s.paint([(20, 25)], "fg", radius=2)
    yy, xx = np.mgrid[:40, :50]
    disk = (yy - 20) ** 2 + (xx - 25) ** 2 <= 4
    np.testing.assert_array_equal(s.labels == 2, disk)
    assert c.n_changed == disk.sum() and c.region == (18, 23, 23, 28)
    s2 = _session()
    assert s2.paint([(5.3, 7.4)], 1, radius=0).n_changed == 1 and s2.labels[5, 7] == 1
    s2.paint([(20, 10), (23, 13)], 2, radius=0.2)       # a thin brush draws a one-pixel diagonal
    assert [s2.labels[20 + k, 10 + k] for k in range(4)] == [2] * 4 and (s2.labels == 2).sum() == 4
    s3 = _session()
    assert s3.paint([(5.5, 7.5)], 1, radius=MIN_RADIUS).n_changed == 4   # on a corner: its 4 pixels


def test_segment_is_a_capsule_along_the_line():
    s = _session((60, 60))
    a, b, r = np.array([10.0, 5.0]), np.array([40.0, 50.0]), 3.0
    s.paint([tuple(a), tuple(b)], 1, radius=r)
    yy, xx = np.mgrid[:60, :60].astype(float)
    d = b - a
    t = np.clip(((yy - a[0]) * d[0] + (xx - a[1]) * d[1]) / (d @ d), 0, 1)
    dist = np.hypot(yy - (a[0] + t * d[0]), xx - (a[1] + t * d[1]))
    np.testing.assert_array_equal(s.labels == 1, dist <= r)


def test_paint_is_clipped_at_the_border_and_a_stroke_outside_is_ignored_with_a_message():
    s = _session((20, 20))
    c = s.paint([(-5, 10), (5, 10)], 1, radius=2)
    assert c.n_changed > 0 and c.region[0] == 0 and s.labels[0, 10] == 1
    before = s.labels.copy()
    n_undo = s.history.n_undo(0)
    with pytest.raises(ValueError, match="outside image.*nothing was painted"):
        s.paint([(-50, -50), (-40, -30)], 1, radius=3)    # a call of its own: wrong coordinates
    s.begin_stroke()                                     # a drag that leaves the image: a message
    out = s.paint([(-50, -50), (-40, -30)], 1, radius=3)
    assert out.n_changed == 0 and "outside image" in out.message
    assert s.end_stroke().n_changed == 0
    np.testing.assert_array_equal(s.labels, before)
    assert s.history.n_undo(0) == n_undo                 # nothing to undo for an ignored stroke
    with pytest.raises(ValueError, match="points"):
        s.paint([(1, 2, 3)], 1)
    with pytest.raises(ValueError, match="NaN"):
        s.paint([(np.nan, 2)], 1)
    with pytest.raises(ValueError, match="class_id"):
        s.paint([(1, 2)], 3)


def test_a_stroke_of_many_segments_is_one_undo_step_and_stores_only_diffs():
    s = _session((64, 64))
    s.begin_stroke()
    pts = [(10, 10), (10, 20), (15, 30), (20, 40)]
    for p, q in zip(pts[:-1], pts[1:]):
        s.paint([p, q], 2, radius=2)
    change = s.end_stroke()
    painted = s.labels.copy()
    n = int((painted == 2).sum())
    assert change.n_changed == n
    stroke = s.history.last(0)
    assert sum(e[2].size for e in stroke.edits) == n == stroke.n_changed   # each pixel stored once, no image copy
    s.undo()
    assert not s.labels.any()
    s.redo()
    np.testing.assert_array_equal(s.labels, painted)
    s.undo()
    s.paint([(50, 50)], 1, radius=1)                    # a new stroke clears the redo stack
    assert s.redo().message == "nothing to redo"


def test_undo_restores_previous_classes_not_zero():
    s = _session((30, 30), names=("a", "b", "c"))
    s.paint([(10, 5), (10, 25)], "a", radius=3)
    first = s.labels.copy()
    s.paint([(5, 15), (25, 15)], "b", radius=3)
    s.erase([(10, 15)], radius=2)
    s.undo()
    s.undo()
    np.testing.assert_array_equal(s.labels, first)


def test_eraser_erases_everything_or_one_class():
    s = _session((30, 30), names=("a", "b"))
    s.paint([(10, 5), (10, 25)], 1, radius=3)
    s.paint([(5, 15), (25, 15)], 2, radius=3)
    only = s.erase([(10, 15)], radius=4, class_id="a")
    assert only.n_changed == 2 and s.labels[10, 15] == 2 and s.labels[10, 11] == 0 and s.labels[10, 19] == 0
    s.erase([(10, 15)], radius=4)
    assert s.labels[10, 15] == 0


def test_clear_class_and_fill_polygon_are_undoable():
    s = _session((30, 30))
    s.paint([(5, 5), (5, 25)], 1, radius=2)
    s.fill_polygon([(10, 10), (10, 20), (20, 20), (20, 10)], "fg")
    assert s.labels[15, 15] == 2 and s.labels[9, 15] == 0
    s.clear_class(1)
    assert not (s.labels == 1).any() and (s.labels == 2).any()
    s.undo()
    assert (s.labels == 1).any()
    s.undo()
    assert not (s.labels == 2).any()
    assert "no pixels" in s.clear_class("fg").message


def test_set_labels_is_one_undoable_step_and_is_checked():
    s = _session((10, 10), names=("a", "b", "c"))
    s.paint([(1, 1)], 1, radius=1)
    before = s.labels.copy()
    new = np.zeros((10, 10), np.uint8)
    new[5:] = 2
    new[:2, :2] = 3
    events = []
    s.subscribe(lambda event, **info: events.append((event, info.get("region"))))
    assert s.set_labels(new).n_changed == int((before != new).sum())
    np.testing.assert_array_equal(s.labels, new)
    assert events == [("labels", (0, 10, 0, 10))]
    s.undo()
    np.testing.assert_array_equal(s.labels, before)
    s.redo()
    np.testing.assert_array_equal(s.labels, new)
    with pytest.raises(ValueError, match="shape"):
        s.set_labels(np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="class id 4"):
        s.set_labels(np.full((10, 10), 4, np.uint8))


def test_undo_history_is_bounded():
    s = _session((30, 30), max_undo=3)
    for x in range(0, 30, 5):
        s.paint([(5, x)], 1, radius=1)
    assert s.history.n_undo(0) == 3


# ---------------------------------------------------------------------------------------------- classes
def test_add_rename_recolour_and_refuse_duplicates():
    s = _session()
    assert s.add_class("nuclei", "#ff0000") == 3
    assert s.colours[2] == [255, 0, 0]
    s.rename_class("nuclei", "cells")
    s.recolour_class(3, [0, 0, 255])
    assert s.class_names == ["bg", "fg", "cells"] and s.colours[2] == [0, 0, 255]
    with pytest.raises(ValueError, match="already exists"):
        s.add_class("bg")
    with pytest.raises(ValueError, match="empty"):
        s.add_class("  ")


def test_deleting_a_class_with_pixels_needs_an_explicit_choice():
    s = _session((30, 30), names=("bg", "fg", "dust"))
    s.paint([(5, 5)], "bg", radius=2)
    s.paint([(15, 15)], "dust", radius=2)
    s.paint([(25, 25)], "fg", radius=2)
    dust = s.labels == 3
    with pytest.raises(ValueError, match="migrate_to.*drop=True"):
        s.delete_class("fg")
    assert s.class_names == ["bg", "fg", "dust"]        # refused: nothing changed
    s.delete_class("fg", migrate_to="bg")
    assert s.class_names == ["bg", "dust"]
    assert s.labels[25, 25] == 1                          # migrated
    assert (s.labels[dust] == 2).all()                    # higher ids moved down
    s.delete_class("dust", drop=True)
    assert s.class_names == ["bg"] and not dust[s.labels == 1].any()
    with pytest.raises(ValueError, match="only class"):
        s.delete_class("bg", drop=True)
    s2 = _session()
    s2.delete_class("fg")                                 # no pixels: nothing to ask
    assert s2.class_names == ["bg"]


# ---------------------------------------------------------------------------------------------- counts
def test_counts_per_class_and_image_and_guide_warnings():
    s = AnnotationSession([np.zeros((30, 30), np.uint8), np.zeros((20, 20), np.uint8)], ["bg", "fg"],
                          autosave=False)
    s.paint([(5, 5)], "bg", radius=1)
    s.paint([(20, 20)], "bg", radius=1)
    s.select(1)
    s.paint([(10, 10)], "fg", radius=1)
    assert [(d["pixels"], d["strokes"]) for d in s.stats(0)] == [(10, 2), (0, 0)]
    assert [(d["pixels"], d["strokes"]) for d in s.stats()] == [(0, 0), (5, 1)]
    assert [(d["pixels"], d["strokes"]) for d in s.total_stats()] == [(10, 2), (5, 1)]
    rows = s.image_summary()
    assert [r["pixels"] for r in rows] == [10, 5] and rows[1]["classes"]["fg"] == (5, 1)
    w = s.warnings()
    assert any("'bg' has 2 strokes" in m and "at least 10" in m for m in w)


# ---------------------------------------------------------------------------------------------- files
def _image_file(tmp_path, name="img.png", shape=(24, 32)):
    data = (np.random.default_rng(0).random(shape + (3,)) * 255).astype(np.uint8)
    return _write_png(tmp_path / name, data)


def test_autosave_writes_atomically_after_a_moment_and_reloads(tmp_path):
    path = _image_file(tmp_path)
    s = AnnotationSession(path, ["bg", "cells"], colours=["#010203", "#040506"], autosave_delay=0.05)
    assert s.labels_dir == tmp_path / "labels"
    s.paint([(5, 5), (5, 20)], "cells", radius=2)
    target = tmp_path / "labels" / "img.labels.png"
    deadline = time.monotonic() + 5
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert target.exists()
    np.testing.assert_array_equal(load_labels(target), s.labels)
    side = json.loads((tmp_path / "labels" / "img.labels.json").read_text())
    assert side["class_names"] == ["bg", "cells"] and side["colours"][1] == [4, 5, 6]
    assert not [p for p in (tmp_path / "labels").iterdir() if ".tmp" in p.name]
    drawn = s.labels.copy()
    s.close()
    again = AnnotationSession(path)                        # same image, no class names given
    np.testing.assert_array_equal(again.labels, drawn)
    assert again.class_names == ["bg", "cells"] and again.colours[0] == [1, 2, 3]
    again.close()


def test_flush_saves_at_once(tmp_path):
    path = _image_file(tmp_path)
    s = AnnotationSession(path, ["bg", "cells"], autosave_delay=3600)
    s.paint([(3, 3)], 1, radius=1)
    assert not (tmp_path / "labels" / "img.labels.png").exists()
    assert s.flush() == [tmp_path / "labels" / "img.labels.png"]
    assert load_labels(tmp_path / "labels" / "img.labels.png")[3, 3] == 1
    s.close()


def test_labels_file_of_another_shape_gives_a_clear_error(tmp_path):
    path = _image_file(tmp_path)
    (tmp_path / "labels").mkdir()
    save_labels(tmp_path / "labels" / "img.labels.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"has shape \(10, 10\) but image 'img' is \(24, 32\).*move or delete"):
        AnnotationSession(path, ["bg", "cells"])


def test_saved_classes_that_disagree_are_refused(tmp_path):
    path = _image_file(tmp_path)
    s = AnnotationSession(path, ["bg", "cells"])
    s.paint([(3, 3)], 2, radius=1)
    s.close()
    with pytest.raises(ValueError, match=r"drawn with classes \['bg', 'cells'\]"):
        AnnotationSession(path, ["cells", "bg"])
    ok = AnnotationSession(path, ["bg", "cells", "debris"])   # adding classes after the saved ones is fine
    assert ok.labels[3, 3] == 2
    ok.close()


def test_folder_session_switches_images_each_with_its_own_labels(tmp_path):
    _image_file(tmp_path, "a.png", (20, 20))
    _image_file(tmp_path, "b.png", (30, 25))
    s = AnnotationSession(tmp_path, ["bg", "fg"])
    assert s.names == ["a", "b"]
    s.paint([(5, 5)], 1, radius=2)
    s.select("b")
    assert s.labels.shape == (30, 25) and not s.labels.any()
    s.paint([(10, 10)], 2, radius=2)
    s.flush()
    assert sorted(p.name for p in (tmp_path / "labels").glob("*.png")) == ["a.labels.png", "b.labels.png"]
    s.close()
    again = AnnotationSession(tmp_path)                   # labels files in labels/ are not images
    assert again.names == ["a", "b"]
    assert again.labels_of("a")[5, 5] == 1 and again.labels_of("b")[10, 10] == 2
    again.close()


def test_in_memory_images_do_not_autosave_without_a_folder(tmp_path):
    s = AnnotationSession(np.zeros((10, 10), np.uint8), ["a", "b"])
    assert not s.autosave and s.flush() == []
    with pytest.raises(ValueError, match="labels_dir"):
        s.save()
    s2 = AnnotationSession(np.zeros((10, 10), np.uint8), ["a", "b"], labels_dir=tmp_path)
    s2.paint([(2, 2)], 1)
    assert s2.flush() == [tmp_path / "image.labels.png"]
    s2.close()
    s3 = AnnotationSession(np.zeros((10, 10), np.uint8), ["a", "b"], labels_dir=tmp_path / "x", autosave=False)
    s3.paint([(2, 2)], 1)
    assert not s3.autosave_running                        # no timer thread...
    assert s3.flush() == [tmp_path / "x" / "image.labels.png"]   # ...but flush writes the edits


# ---------------------------------------------------------------------------------------------- training
def test_training_samples_apply_the_channel_selection(fluo_sample):
    img, labels, _, names = fluo_sample
    s = AnnotationSession(img, names, autosave=False, channels=["DAPI"])
    with pytest.raises(ValueError, match="no image has labels"):
        s.training_samples()
    s.set_labels(labels)
    (sample_img, sample_labels), = s.training_samples()
    assert sample_img.channel_names == ["DAPI"]
    np.testing.assert_array_equal(sample_labels, labels)
    sample_labels[:] = 0
    assert s.labels.any()                                 # a copy, not the live array
    with pytest.raises(ValueError, match="not found"):
        s.channels = ["GFP"]


# ---------------------------------------------------------------------------------------------- preview
def test_preview_needs_two_classes_then_predicts_the_region(fluo_sample):
    img, labels, truth, names = fluo_sample
    s = AnnotationSession(img, names, autosave=False)
    s.paint([(5, 5)], 1, radius=2)
    r = s.preview()
    assert r.probs is None and "two classes" in r.message
    s.set_labels(labels)
    r = s.preview(region=(10, 60, 20, 90))
    assert r.probs.shape == (2, 50, 70) and r.origin == (10, 20) and r.factor == 1 and r.source == "features"
    np.testing.assert_allclose(r.probs.sum(0), 1, atol=1e-5)
    pred = r.probs.argmax(0) + 1
    assert (pred == truth[10:60, 20:90]).mean() > 0.8


def test_preview_latest_request_wins(fluo_sample):
    img, labels, _, names = fluo_sample
    s = AnnotationSession(img, names, autosave=False)
    s.set_labels(labels)
    with s.lock:  # the worker cannot read the labels yet, so the newer request arrives during the older fit
        older = s.preview_async()
        newer = s.preview_async(region=(0, 48, 0, 48))
    a, b = older.result(60), newer.result(60)
    assert a is b and a.probs.shape == (2, 48, 48) and a.region == (0, 48, 0, 48)


def test_preview_comes_from_the_model_after_training(fluo_sample):
    img, labels, _, names = fluo_sample

    class FakeModel:
        calls = 0

        def predict(self, image):
            FakeModel.calls += 1
            out = np.zeros((2,) + image.shape[1:], np.float32)
            out[1] = 1
            return out

    s = AnnotationSession(img, names, autosave=False)
    s.set_labels(labels)
    s.set_model(FakeModel())
    r = s.preview(region=(0, 30, 0, 40))
    assert r.source == "model" and r.probs.shape == (2, 30, 40) and (r.probs[1] == 1).all()
    s.preview(region=(0, 30, 0, 40))
    assert FakeModel.calls == 1                           # same view: cached
    s.set_model(None)
    assert s.preview(region=(0, 30, 0, 40)).source == "features"
    with pytest.raises(ValueError, match="predict"):
        s.set_model(object())


def test_large_images_are_previewed_at_a_coarser_level(monkeypatch, fluo_sample):
    import pixlab.annotation.preview as annotation

    img, labels, truth, names = fluo_sample
    ny, nx = img.shape[1:]
    # Features cost 4 bytes x 4 filters x 5 sigmas x channels per pixel; a budget of a third of the
    # image's features forces a downsample of 2.
    monkeypatch.setattr(annotation, "PREVIEW_FEATURE_BYTES", ny * nx * 4 * 4 * 5 * img.n_channels // 3)
    s = AnnotationSession(img, names, autosave=False)
    s.set_labels(labels)
    r = s.preview()
    assert r.factor == 2 and r.probs.shape == (2, ny // 2, nx // 2)
    assert r.full_resolution().shape == (2, ny, nx)
    assert (r.full_resolution().argmax(0) + 1 == truth).mean() > 0.7


def test_training_samples_refuse_labels_that_could_not_be_saved(tmp_path, fluo_sample, monkeypatch):
    import pixlab.annotation.files as files
    from pixlab.widgets.train_panel import TrainPanel
    img, labels, _, names = fluo_sample
    s = AnnotationSession(img, names, labels_dir=tmp_path, autosave=False)
    s.set_labels(labels)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "write_sidecar", disk_full)
    with pytest.raises(OSError, match="cannot save the labels before training.*No space left.*not on disk"):
        s.training_samples()
    panel = TrainPanel(s)
    assert panel.start() is None and "cannot save the labels" in panel.message.value  # a message, no thread
    monkeypatch.undo()
    (sample_img, sample_labels), = s.training_samples()   # saved now (the edit stayed pending)
    np.testing.assert_array_equal(sample_labels, labels)
    assert list(tmp_path.glob("*.labels.*"))
