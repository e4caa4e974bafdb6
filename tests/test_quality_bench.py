"""The issue-13 quality benchmark (bench/quality): generators, strokes and the table; no network is trained."""

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import morphology

from bench.quality import cases as C
from bench.quality import run as R
from bench.quality.strokes import MARGIN, allowed_region, draw_strokes, simulate_strokes
from bench.quality.table import render, rows

SYNTHETIC = [n for n in C.CASES if n != "ihc"]


@pytest.fixture(scope="module")
def made():
    return {n: C.CASES[n].make(0) for n in C.CASES}


def test_case_shapes_dtypes_and_classes(made):
    assert len(C.CASES) >= 6
    expected = {"fluo_nuclei": (1, np.uint16), "he_3class": (3, np.uint8), "multiplex_if": (5, np.uint16),
                "texture": (1, np.uint16), "ihc": (3, np.uint8), "cells_inside": (1, np.uint16)}
    for name, (img, truth, classes) in made.items():
        n_ch, dtype = expected[name]
        assert img.shape[0] == n_ch and img.data.dtype == dtype, name
        assert truth.shape == img.shape[1:] and truth.dtype == np.uint8, name
        if name != "ihc":
            assert img.shape[1:] == (512, 512), name
        # Every class 1..K is present, nothing else.
        assert set(np.unique(truth)) == set(range(1, len(classes) + 1)), name
        assert len(img.channel_names) == n_ch
    assert len(made["he_3class"][2]) == 3 and len(made["ihc"][2]) == 3
    assert len(made["multiplex_if"][0].channel_names) >= 4


def test_generators_are_seeded(made):
    img, truth, _ = C.CASES["fluo_nuclei"].make(0)
    np.testing.assert_array_equal(img.data, made["fluo_nuclei"][0].data)
    other, truth1, _ = C.CASES["fluo_nuclei"].make(1)
    assert not np.array_equal(truth, truth1)


def test_class_variants():
    assert R.load_case("fluo_nuclei", "classes2") is None      # 2-class case: nothing to merge
    assert R.load_case("texture", "classes3") is None          # no meaningful split
    _, t3, names3 = R.load_case("multiplex_if", "classes3")
    assert set(np.unique(t3)) == {1, 2, 3} and len(names3) == 3
    _, t2, names2 = R.load_case("he_3class", "classes2")
    assert set(np.unique(t2)) == {1, 2} and len(names2) == 2


@pytest.mark.parametrize("name", ["fluo_nuclei", "cells_inside", "he_3class"])
def test_strokes_lie_inside_their_eroded_class(made, name):
    img, truth, classes = made[name]
    case = C.CASES[name]
    for draw in (0, 1):
        labels = draw_strokes(case, truth, draw)
        for k in range(1, len(classes) + 1):
            stroke = labels == k
            assert stroke.sum() > 100, (name, k)  # each class is brushed
            ok = allowed_region(truth, k, case.deep.get(k, MARGIN))
            assert not (stroke & ~ok).any(), (name, k)
            # roughly 12 pieces (strokes may touch each other)
            assert 1 <= ndi.label(stroke)[1] <= 12
    assert not np.array_equal(draw_strokes(case, truth, 0), draw_strokes(case, truth, 1))


def test_deep_strokes_stay_far_from_boundaries(made):
    _, truth, _ = made["cells_inside"]
    labels = draw_strokes(C.CASES["cells_inside"], truth, 0)
    dist_in = ndi.distance_transform_edt(truth == 2)
    assert dist_in[labels == 2].min() > 8
    shallow = simulate_strokes(truth, seed=0)
    assert dist_in[shallow == 2].min() <= 8  # the default margin does go closer


def test_strokes_brush_radius_and_margin():
    truth = np.ones((80, 80), np.uint8)
    truth[20:60, 20:60] = 2
    labels = simulate_strokes(truth, seed=3, n=5)
    inner = ndi.binary_erosion(truth == 2, morphology.disk(3))
    assert labels[labels == 2].size and not ((labels == 2) & ~inner).any()


def test_metrics_and_degenerate():
    truth = np.ones((10, 10), np.uint8)
    truth[:, 5:] = 2
    assert R.score(truth, truth, 2)[0] == 1.0
    all_fg = np.full_like(truth, 2)
    assert R.score(all_fg, truth, 2)[0] == pytest.approx(0.5)
    assert R.degenerate(all_fg, truth, 2) and not R.degenerate(truth, truth, 2)
    t3 = truth.copy()
    t3[:5, 5:] = 3
    s, ious = R.score(t3, t3, 3)
    assert s == 1.0 and len(ious) == 3


def _rec(kind, draw, score, setting="defaults", seconds=60.0, **kw):
    return {"case": "fluo_nuclei", "setting": setting if kind in ("pixlab", "upper") else "-",
            "seconds": seconds if kind in ("pixlab", "upper") else None, "draw": draw, "kind": kind,
            "score": score, **kw}


def test_table_with_error_row_and_summary():
    results = [_rec("forest", d, 0.70 + 0.01 * d) for d in range(3)]
    results += [_rec("otsu", 0, 0.65)]
    results += [_rec("pixlab", d, 0.78, steps=500, recipe="cpu_quick", architecture="tiny_unet", tile_size=128)
                for d in range(3)]
    results += [_rec("upper", 0, 0.9)]
    results += [_rec("pixlab", 0, None, setting="resnet18", error="RuntimeError: boom"),
                _rec("pixlab", 1, 0.2, setting="resnet18", degenerate=True, steps=5)]
    rs = {r["setting"]: r for r in rows(results)}
    assert rs["defaults"]["passes"] and rs["defaults"]["upper"] == 0.9
    assert rs["defaults"]["diff"] == pytest.approx(0.78 - 0.71)
    assert not rs["resnet18"]["passes"] and rs["resnet18"]["degenerate"] == 1
    assert rs["resnet18"]["draws_below_forest"] == [1]
    text = render(results)
    assert "RuntimeError: boom" in text and "| 0.650 |" in text
    assert "defaults @ 60 s: 1/1 cases" in text and "resnet18 @ 60 s: 0/1 cases" in text
    assert "failing: fluo_nuclei" in text


def test_table_forest_only_and_merge(tmp_path):
    path = tmp_path / "q.json"
    R.save_results(path, [_rec("forest", 0, 0.7)])
    R.save_results(path, [_rec("forest", 0, 0.75), _rec("forest", 1, 0.6)])  # same key replaced
    saved = R.load_results(path)
    assert len(saved) == 2 and sorted(r["score"] for r in saved) == [0.6, 0.75]
    text = render(saved)
    assert "(forest only)" in text and "0.675" in text


def test_settings_are_valid_configs():
    import pixlab
    for name, (fields, seconds) in R.SETTINGS.items():
        pixlab.TrainConfig(time_limit_s=seconds or 60, seed=0, **fields)
