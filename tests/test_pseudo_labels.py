"""Random-forest pseudo-labels: the fine-scale agreement (TrainConfig.pseudo_agreement)."""
import numpy as np
import pytest

from bench.quality.cases import cells_inside
from bench.quality.strokes import draw_strokes
from bench.quality.run import CASES
from pixlab import TrainConfig
from pixlab.training import pseudo


def test_scale_columns_are_the_features_of_the_smaller_sigmas():
    from pixlab.training.features import pixel_features, scale_columns
    x = np.random.default_rng(0).random((2, 48, 40)).astype(np.float32)
    full, fine = pixel_features(x, 1, 16), pixel_features(x, 1, 4)
    np.testing.assert_array_equal(full[..., scale_columns(2, 1, 16, 4)], fine)


@pytest.mark.parametrize("path", ["whole image", "windows around strokes"])
def test_pseudo_agreement_drops_the_halo_of_large_scale_features(path, monkeypatch):
    # Clustered cells outlined by a membrane, strokes deep inside and far outside: the forest's
    # large-scale features label a confident band of background around the clusters as cell
    # (docs/quality.md). A fine-scale forest does not; keeping the pixels both agree on removes
    # most of the wrong pseudo-labels and keeps most of the right ones.
    from pixlab.image.normalize import compute_stats
    from pixlab.training.samples import build_samples
    from pixlab.training.strokes import read_labels
    if path != "whole image":
        monkeypatch.setattr(pseudo, "PSEUDO_FEATURE_BYTES", 0)  # too large for whole-image features
    img, truth, _ = cells_inside(0)
    labels = draw_strokes(CASES["cells_inside"], truth, 0)
    stats = compute_stats([img])

    def labelled(agreement):
        s, = build_samples([img], [labels], [labels], [np.zeros_like(labels)], stats)
        cfg = TrainConfig(recipe="cpu_quick", device="cpu", pseudo_agreement=agreement).resolved()
        pseudo.add_pseudo_labels([s], 2, cfg)
        return read_labels(s.pseudo, 0, 512, 0, 512)  # an array or a label store

    plain, agreed = labelled(False), labelled(True)
    assert ((agreed == 0) | (agreed == plain)).all()            # only drops labels, never changes one
    wrong = lambda lab: int(((lab > 0) & (lab != truth)).sum())
    right = lambda lab: int(((lab > 0) & (lab == truth)).sum())
    assert wrong(plain) > 1000, wrong(plain)                     # the halo is there
    assert wrong(agreed) < 0.75 * wrong(plain), (wrong(agreed), wrong(plain))
    assert right(agreed) > 0.8 * right(plain), (right(agreed), right(plain))
