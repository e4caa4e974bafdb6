"""Augmentation moves image and label masks together, and unlabelled pixels stay unlabelled.

The tiles used here carry their labels in the pixels: channel 0 is 4**(label+1) on labelled pixels
and 0 on unlabelled ones, so the label of every augmented pixel can be read back from the image and
compared with the augmented masks.
"""

import numpy as np
import pytest
import torch

from pixlab import TrainConfig
from pixlab.training.augmentation import Augmentation, Elastic, Rot90, build_augmentation, collate

T = 32
SWITCHES = ["flips", "rotate90", "color_jitter", "elastic"]


def _tile(seed=0):
    rng = np.random.default_rng(seed)
    # 8x8 blocks of classes -1 (unlabelled), 0, 1, 2: an asymmetric pattern, so any flip/rotation shows
    lab = np.kron(rng.integers(-1, 3, (T // 8, T // 8)), np.ones((8, 8), dtype=np.int64)).astype(np.int64)
    img = np.stack([np.where(lab >= 0, 4.0 ** (lab + 1), 0.0), rng.random((T, T))]).astype(np.float32)
    pse = np.where(lab >= 0, (lab + 1) % 3, -1).astype(np.int64)  # a second mask, another function of pixels
    return img, lab, pse


def _decode(x):
    """The label each pixel's value says (jitter gain 0.8-1.2 and offset +-0.1 keep it readable)."""
    x0 = x[:, 0].double()
    return torch.where(x0 > 0.5, torch.log(x0.clamp_min(1e-3)) / np.log(4) - 1, torch.tensor(-1.0)).round().long()


def _cfg(**on):
    return TrainConfig(augment=True, **{s: on.get(s, False) for s in SWITCHES})


def _agreement(x, y, p):
    want = _decode(x)
    lab = y >= 0
    return (float((want[lab] == y[lab]).float().mean()) if lab.any() else 1.0,
            bool(torch.equal(torch.where(y >= 0, (y + 1) % 3, -1), p)), want, lab)


@pytest.mark.parametrize("switches", [[s] for s in SWITCHES] + [SWITCHES])
def test_every_switch_moves_image_and_masks_together(switches):
    aug = build_augmentation(_cfg(**{s: True for s in switches}))
    img, lab, pse = _tile()
    tiles = [_tile(s) for s in range(16)]
    x, y, p = collate(tiles, aug, 123)
    assert x.shape == (16, 2, T, T) and y.shape == p.shape == (16, T, T)
    agree, pseudo_ok, want, labelled = _agreement(x, y, p)
    assert pseudo_ok, "the two masks no longer agree with each other"
    # flips, rotations and jitter are exact; elastic mixes neighbouring values at block edges only
    assert agree >= (0.97 if "elastic" in switches else 1.0), agree
    # unlabelled pixels (value 0 in the image) are unlabelled in the masks
    unl = float((y[want < 0] == -1).float().mean())
    assert unl >= (0.97 if "elastic" in switches else 1.0), unl


def test_strong_elastic_after_rot90_deforms_the_masks_too():
    # RandomRot90 once returned plain tensors, after which v2's elastic deformed the image only.
    aug = Augmentation([Rot90(), Elastic(alpha=400.0, sigma=4.0, p=1.0)])
    tiles = [_tile(s) for s in range(16)]
    x, y, p = collate(tiles, aug, 7)
    moved = sum(not torch.equal(torch.from_numpy(t[1]), torch.rot90(y[i], -k, dims=(0, 1)))
                for i, t in enumerate(tiles) for k in [0, 1, 2, 3]) / 64
    assert moved > 0.95  # the masks were deformed, not just rotated
    agree, pseudo_ok, _, _ = _agreement(x, y, p)
    assert pseudo_ok and agree >= 0.9, agree


def test_elastic_never_turns_unlabelled_into_a_class():
    aug = Augmentation([Elastic(alpha=400.0, sigma=4.0, p=1.0)])
    full = (np.ones((2, T, T), np.float32), np.full((T, T), 2, np.int64), np.full((T, T), -1, np.int64))
    empty = (np.ones((2, T, T), np.float32), np.full((T, T), -1, np.int64), np.full((T, T), -1, np.int64))
    x, y, p = collate([full] * 8 + [empty] * 8, aug, 3)
    assert set(torch.unique(y[:8]).tolist()) == {-1, 2}  # pixels from outside the tile: unlabelled
    assert bool((y[8:] == -1).all()) and bool((p == -1).all())
    assert float(x.min()) > 0.99  # the image is reflected at the border, no dark fill


def test_steps_keep_tv_tensor_types_for_later_transforms():
    from torchvision import tv_tensors
    from torchvision.transforms import v2
    aug = build_augmentation(_cfg(flips=True, rotate90=True, color_jitter=True, elastic=True))
    img, lab, pse = _tile()
    g = torch.Generator().manual_seed(0)
    for _ in range(8):
        x, y, p = aug(torch.from_numpy(img), torch.from_numpy(lab), torch.from_numpy(pse), generator=g)
        assert isinstance(x, tv_tensors.Image) and isinstance(y, tv_tensors.Mask) and isinstance(p, tv_tensors.Mask)
        x2, y2, p2 = v2.RandomHorizontalFlip(p=1.0)(x, y, p)  # a v2 transform after ours moves all three
        assert torch.equal(y2, y.flip(-1)) and torch.equal(p2, p.flip(-1))


def test_augmentation_uses_its_own_generator_not_the_global_rng():
    aug = build_augmentation(_cfg(flips=True, rotate90=True, color_jitter=True, elastic=True))
    tiles = [_tile(s) for s in range(4)]
    torch.manual_seed(5)
    before = torch.get_rng_state()
    a = collate(tiles, aug, 11)
    assert torch.equal(torch.get_rng_state(), before)  # nothing drawn from or seeded in the global RNG
    b = collate(tiles, aug, 11)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    c = collate(tiles, aug, 12)
    assert not torch.equal(a[0], c[0])
