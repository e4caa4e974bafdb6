"""The sparse chunked label store, its zarr files and the session on top of them (whole-slide labels)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import pixlab.annotation.files as label_files
import pixlab.labels.store as store_mod
from pixlab.annotation import AnnotationSession
from pixlab.labels.chunkfile import JOURNAL, open_chunks, write_chunks
from pixlab.labels.components import split_store_strokes, store_stats
from pixlab.labels.masks import label_stats, save_labels
from pixlab.labels.store import LabelStore, is_label_store

ROOT = Path(__file__).resolve().parents[1]


def _random_labels(shape=(300, 200), n=40, seed=0):
    rng = np.random.default_rng(seed)
    a = np.zeros(shape, np.uint8)
    for _ in range(n):
        y, x = rng.integers(0, shape[0] - 10), rng.integers(0, shape[1] - 10)
        a[y:y + rng.integers(1, 12), x:x + rng.integers(1, 12)] = rng.integers(1, 4)
    return a


@pytest.fixture
def chunked(monkeypatch):
    """Make small test images behave like slides: chunked stores (32 px) and .labels.zarr files."""
    monkeypatch.setattr(store_mod, "DENSE_PIXELS", 100)
    monkeypatch.setattr(store_mod, "DEFAULT_CHUNK", 32)
    monkeypatch.setattr(label_files, "DENSE_FILE_PIXELS", 100)


# ---------------------------------------------------------------------------------------------- the store
def test_store_holds_only_painted_chunks_and_reads_like_the_array():
    a = _random_labels()
    s = LabelStore.from_array(a, chunk=32)
    assert is_label_store(s) and not is_label_store(a)
    np.testing.assert_array_equal(s.read(), a)
    np.testing.assert_array_equal(s.read((17, 90, 33, 150)), a[17:90, 33:150])
    painted = {(y0 // 32, x0 // 32) for y0, _, x0, _ in s.painted_chunks()}
    expected = {(cy, cx) for cy in range(10) for cx in range(7) if a[cy * 32:(cy + 1) * 32, cx * 32:(cx + 1) * 32].any()}
    assert painted == expected and len(painted) < 70
    rows, cols = np.sort(np.random.default_rng(1).integers(0, 300, 50)), np.arange(0, 200, 3)
    np.testing.assert_array_equal(s.take(rows, cols), a[rows[:, None], cols[None, :]])
    np.testing.assert_array_equal(s.bincount(4), np.bincount(a.ravel(), minlength=4))
    s.write((0, 300, 0, 200), np.zeros((300, 200), np.uint8))   # erasing frees the chunks
    assert not s.any() and s.painted_chunks() == []


def test_a_whole_slide_store_costs_what_was_painted():
    s = LabelStore((100_000, 80_000))
    s.write((50_000, 50_010, 7, 9), np.ones((10, 2), np.uint8))
    s.write((99_990, 100_000, 79_990, 80_000), np.full((10, 10), 2, np.uint8))
    assert s.nbytes == 512 * 512 + 160 * 128 and s.bbox() == (50_000, 100_000, 7, 80_000)
    assert [d["pixels"] for d in store_stats(s, ["a", "b"])] == [20, 100]
    with pytest.raises(ValueError, match="too large for one array"):
        s.to_array()
    with pytest.raises(ValueError, match="outside the labels"):
        s.write((99_995, 100_005, 0, 10), np.ones((10, 10), np.uint8))


def test_downsampled_reads_equal_the_trainers_rule():
    from pixlab.training.samples import downsample_labels

    a = _random_labels((301, 203))
    s = LabelStore.from_array(a, chunk=32)
    for f in (2, 4, 64):
        np.testing.assert_array_equal(s.read_max((0, 301, 0, 203), f), downsample_labels(a, f))
    np.testing.assert_array_equal(s.read_max((64, 128, 32, 96), 4), downsample_labels(a[64:128, 32:96], 4))


def test_strokes_across_chunk_borders_count_once_and_split_whole():
    a = _random_labels((300, 200), n=60, seed=3)
    a[30:34, 20:100] = 2           # crosses two vertical chunk borders
    a[63, 63] = a[64, 64] = 3      # touches only diagonally across a chunk corner
    a[64, 31] = a[63, 32] = 1      # the other diagonal
    s = LabelStore.from_array(a, chunk=32)
    assert store_stats(s, ["a", "b", "c"]) == label_stats(a, ["a", "b", "c"])
    train, val, info = split_store_strokes([s], 3, 0.3, seed=0)
    t, v = train[0].read(), val[0].read()
    np.testing.assert_array_equal(t + v, a)                 # every labelled pixel in exactly one part
    assert not ((t > 0) & (v > 0)).any()
    assert [d["strokes"] for d in store_stats(val[0], "abc")] == info["val_strokes"]
    assert all(n >= 1 for n in info["val_strokes"])
    from skimage.measure import label
    cc = label(a, connectivity=2)
    for c in range(1, cc.max() + 1):                         # a stroke is never cut in two
        held = v[cc == c] > 0
        assert held.all() or not held.any()


# ---------------------------------------------------------------------------------------------- files
def test_zarr_file_round_trip_writes_only_dirty_chunks(tmp_path):
    a = _random_labels()
    s = LabelStore.from_array(a, chunk=32)
    path = tmp_path / "x.labels.zarr"
    write_chunks(path, s)
    files = {p: p.stat().st_mtime_ns for p in (path / "c").rglob("*") if p.is_file()}
    assert len(files) == len(s.painted_chunks())
    again = open_chunks(path)
    np.testing.assert_array_equal(again.read(), a)
    for p in files:                                           # mark the files to see which get rewritten
        os.utime(p, ns=(1, 1))
    s.write((100, 101, 100, 101), np.array([[3]], np.uint8))  # one chunk: (3, 3)
    write_chunks(path, s)
    changed = [p for p in files if p.exists() and p.stat().st_mtime_ns != 1] + \
        [p for p in (path / "c").rglob("*") if p.is_file() and p not in files]
    assert [p.relative_to(path).as_posix() for p in changed] == ["c/3/3"]
    assert not (path / JOURNAL).exists()
    np.testing.assert_array_equal(open_chunks(path).read(), s.read())


def test_old_png_labels_with_their_sidecar_load_and_stay_png(tmp_path):
    from PIL import Image as PILImage

    img = (np.random.default_rng(0).random((24, 32, 3)) * 255).astype(np.uint8)
    PILImage.fromarray(img).save(tmp_path / "cells.png")
    labels_dir = tmp_path / "runs" / "r1" / "labels"
    labels_dir.mkdir(parents=True)
    old = np.zeros((24, 32), np.uint8)
    old[3:6, 4:20] = 2
    PILImage.fromarray(old, mode="L").save(labels_dir / "cells.labels.png")   # as earlier versions wrote it
    (labels_dir / "cells.labels.json").write_text(json.dumps(
        {"format": "pixlab-labels", "version": 1, "image": "cells", "shape": [24, 32],
         "class_names": ["bg", "cells"], "colours": [[1, 2, 3], [4, 5, 6]]}))
    s = AnnotationSession(tmp_path / "cells.png", labels_dir=labels_dir, autosave=False)
    assert s.class_names == ["bg", "cells"] and s.colours[1] == [4, 5, 6]
    np.testing.assert_array_equal(s.labels, old)
    s.paint([(10, 10)], 1, radius=1)
    assert s.flush() == [labels_dir / "cells.labels.png"]
    assert sorted(p.name for p in labels_dir.iterdir()) == ["cells.labels.json", "cells.labels.png"]


def test_session_on_a_chunked_image_saves_zarr_and_undo_works_across_chunks(tmp_path, chunked):
    a = np.zeros((100, 90), np.uint8)
    s = AnnotationSession(a, ["bg", "fg"], labels_dir=tmp_path, autosave=False)
    store = s.label_store()
    assert not store.dense and store.chunk == 32
    s.paint([(5, 5), (90, 80)], "fg", radius=3)              # a diagonal through many chunks
    s.paint([(50, 5), (50, 85)], "bg", radius=2)
    after = s.read_labels()
    n_chunks = len(store.painted_chunks())
    assert n_chunks >= 6
    assert s.flush() == [tmp_path / "image.labels.zarr"]
    s.undo()
    s.undo()
    assert not store.any() and store.painted_chunks() == []   # undone chunks are freed
    s.redo()
    s.redo()
    np.testing.assert_array_equal(s.read_labels(), after)
    s.close()
    again = AnnotationSession(a, labels_dir=tmp_path, autosave=False)
    np.testing.assert_array_equal(again.read_labels(), after)
    assert again.class_names == ["bg", "fg"]
    assert [d["pixels"] for d in again.stats()] == [int((after == 1).sum()), int((after == 2).sum())]


def test_labels_of_another_shape_and_paints_outside_are_refused_with_nothing_written(tmp_path, chunked):
    s = AnnotationSession(np.zeros((100, 90), np.uint8), ["bg", "fg"], labels_dir=tmp_path, autosave=False)
    s.paint([(10, 10)], 1, radius=2)
    s.flush()
    with pytest.raises(ValueError, match=r"has shape \(100, 90\) but image 'image' is \(100, 91\).*move or delete"):
        AnnotationSession(np.zeros((100, 91), np.uint8), labels_dir=tmp_path, autosave=False)
    before = s.read_labels()
    with pytest.raises(ValueError, match="outside image 'image' of size \\(Y=100, X=90\\)"):
        s.paint([(500, 500), (600, 600)], 1, radius=3)
    with pytest.raises(ValueError, match="shape"):
        s.set_labels(LabelStore((90, 100)))
    np.testing.assert_array_equal(s.read_labels(), before)
    assert s.history.n_undo(0) == 1 and s.flush() == []


def test_autosave_on_a_chunked_image_writes_only_the_painted_chunks(tmp_path, chunked):
    s = AnnotationSession(np.zeros((200, 200), np.uint8), ["bg", "fg"], labels_dir=tmp_path, autosave_delay=0.02)
    s.paint([(10, 10)], 1, radius=2)
    s.flush()
    target = tmp_path / "image.labels.zarr"
    chunk_files = sorted(p.relative_to(target).as_posix() for p in (target / "c").rglob("*") if p.is_file())
    assert chunk_files == ["c/0/0"]
    s.paint([(150, 150)], 2, radius=2)
    import time
    deadline = time.monotonic() + 10
    while not (target / "c" / "4" / "4").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (target / "c" / "4" / "4").exists()
    s.close()


# ---------------------------------------------------------------------------------------------- kill
_KILL = """
import os, sys
import numpy as np
import pixlab.annotation.files as label_files, pixlab.labels.store as store_mod, pixlab.labels.chunkfile as cf
store_mod.DENSE_PIXELS = 100; store_mod.DEFAULT_CHUNK = 32; label_files.DENSE_FILE_PIXELS = 100
from pixlab.annotation import AnnotationSession
s = AnnotationSession(np.zeros((100, 90), np.uint8), ["bg", "fg"], labels_dir=sys.argv[1], autosave=False)
s.paint([(10, 10), (10, 80)], 1, radius=2)
s.flush()                                   # the last good state
s.paint([(60, 10), (60, 80)], 2, radius=2)   # three more chunks
where = sys.argv[2]
if where == "journal":                      # killed while the journal is being written
    real = np.savez_compressed
    def dying(*a, **k):
        real(*a, **k)
        os._exit(9)                         # the temporary journal exists; its rename never happens
    np.savez_compressed = dying
else:                                       # killed after the first chunk of the save was written
    real = cf._write_into
    def dying(array, snap):
        first = dict(list(snap.chunks.items())[:1])
        real(array, cf.Snapshot(snap.shape, snap.dtype, snap.chunk, first))
        os._exit(9)
    cf._write_into = dying
s.flush()
"""


@pytest.mark.parametrize("where", ["journal", "chunks"])
def test_a_kill_during_autosave_leaves_a_complete_state(tmp_path, chunked, where):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_KILL), str(tmp_path), where], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    s = AnnotationSession(np.zeros((100, 90), np.uint8), labels_dir=tmp_path, autosave=False)
    lab = s.read_labels()
    first = (lab[10, 10:81] == 1).all()
    second = (lab[60, 10:81] == 2).all()
    if where == "journal":
        assert first and not (lab == 2).any()           # the last good state, untouched
    else:
        assert first and second                         # the journal finished the interrupted save
    assert not (tmp_path / "image.labels.zarr" / JOURNAL).exists()
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


def test_dense_labels_file_of_a_big_image_is_converted_on_save(tmp_path, chunked):
    old = np.zeros((100, 90), np.uint8)
    old[40:45, 10:70] = 2
    save_labels(tmp_path / "image.labels.png", old)
    s = AnnotationSession(np.zeros((100, 90), np.uint8), ["bg", "fg"], labels_dir=tmp_path, autosave=False)
    np.testing.assert_array_equal(s.read_labels(), old)
    s.paint([(5, 5)], 1, radius=1)
    assert s.flush() == [tmp_path / "image.labels.zarr"]
    assert not (tmp_path / "image.labels.png").exists()
    expected = old.copy()
    expected[4:7, 4:7][np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)] = 1
    np.testing.assert_array_equal(open_chunks(tmp_path / "image.labels.zarr").read(), expected)


def test_training_samples_of_an_image_larger_than_training_holds_are_a_label_store(tmp_path):
    # 8,200 x 8,200 px (67 M, more than training.samples.IN_MEMORY_PIXELS): a dense copy of its
    # labels would be what training itself refuses to build (it trains from the chunks).
    import dask.array as da
    from pixlab.image.image import Image
    from pixlab.training.samples import IN_MEMORY_PIXELS
    img = Image(da.zeros((3, 8200, 8200), np.uint8, chunks=(3, 1024, 1024)), ["R", "G", "B"], name="big")
    assert 8200 * 8200 > IN_MEMORY_PIXELS
    s = AnnotationSession(img, ["bg", "fg"], labels_dir=tmp_path, autosave=False)
    s.paint([(100, 100), (100, 400)], 1, 3)
    s.paint([(5000, 7000)], 2, 5)
    (image, labels), = s.training_samples()
    assert is_label_store(labels) and labels is not s.label_store()
    assert labels.shape == (8200, 8200) and labels.bincount()[1:3].tolist() == s.label_store().bincount()[1:3].tolist()
    s.close()


def test_a_projects_slide_labels_are_found_copied_and_trained_from(tmp_path, chunked):
    # Labels of a slide are a .labels.zarr folder: the project finds them (02 requires labels, 03
    # lists the labelled images), labels_from copies them, and training reads them from the path.
    from pixlab import TrainConfig
    from pixlab.app.project import Project
    from pixlab.image.writer import write_ome_tiff
    from pixlab.training.samples import prepare_samples
    image = tmp_path / "slide.ome.tif"
    write_ome_tiff(image, np.zeros((3, 96, 128), np.uint8), pyramid=False)
    first = Project(tmp_path / "first")
    first.set_images([image])
    s = first.session(["bg", "fg"], autosave=False)
    s.paint([(10, 10), (10, 90)], 1, 2)
    s.paint([(70, 40)], 2, 4)
    s.close()
    found = first.labels_file(image)
    assert found is not None and found.name == "slide.labels.zarr" and found.is_dir()
    assert first.require_labels() == [found]
    second = Project(tmp_path / "second")
    second.set_images([image], labels_from=first.labels_dir)
    copied = second.labels_file(image)
    assert copied is not None and copied.name == "slide.labels.zarr"
    _, (labels,), _ = prepare_samples([(image, copied)], TrainConfig(), ["bg", "fg"])
    np.testing.assert_array_equal(np.asarray(labels), s.label_store().read())
