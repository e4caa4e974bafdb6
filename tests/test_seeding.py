"""Training leaves no process-wide trace: torch's global RNG, deterministic mode, threads, Python/numpy RNGs."""

import random

import numpy as np
import torch

import pixlab


def test_training_has_no_process_global_side_effects(tiny_cfg, fluo_sample):
    img, labels, _, names = fluo_sample
    torch.manual_seed(1234)
    random.seed(5)
    np.random.seed(6)
    before = (torch.get_rng_state(), torch.are_deterministic_algorithms_enabled(), torch.get_num_threads(),
              random.getstate(), np.random.get_state()[1].copy())
    pixlab.train([(img, labels)], tiny_cfg.replace(num_threads=1), class_names=names, progress=False)
    after = (torch.get_rng_state(), torch.are_deterministic_algorithms_enabled(), torch.get_num_threads(),
             random.getstate(), np.random.get_state()[1])
    assert torch.equal(before[0], after[0]), "torch's global RNG was reseeded or drawn from"
    assert before[1:3] == after[1:3] and np.array_equal(before[4], after[4])
    random.seed(0)
    assert after[3] != random.getstate()  # Python's RNG not reseeded (libraries may draw from it)


def test_same_seed_same_weights_with_dropout_encoders(tiny_cfg, fluo_sample):
    # efficientnet-b0 has drop-path (drop_connect) in training mode: draws from torch's global RNG
    img, labels, _, names = fluo_sample
    cfg = tiny_cfg.replace(architecture="unet", encoder="efficientnet-b0", pretrained=False, epochs=1,
                           patches_per_epoch=4, tile_size=64)
    torch.manual_seed(1)
    a = pixlab.train([(img, labels)], cfg, class_names=names, progress=False).network.state_dict()
    torch.manual_seed(2)  # whatever the global RNG holds, the run's own seed decides
    b = pixlab.train([(img, labels)], cfg, class_names=names, progress=False).network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights_with_segformer_drop_path(tiny_cfg, fluo_sample):
    # smp's Segformer (mit_b0 encoder) has timm DropPath blocks (stochastic depth up to 0.1) that draw
    # from torch's global RNG in training mode; weight initialisation draws from it too.
    img, labels, _, names = fluo_sample
    cfg = tiny_cfg.replace(architecture="segformer", encoder="mit_b0", pretrained=False, epochs=1,
                           patches_per_epoch=8, tile_size=64)
    torch.manual_seed(1)
    model = pixlab.train([(img, labels)], cfg, class_names=names, progress=False)
    drop_path = [m.drop_prob for m in model.network.modules() if type(m).__name__ == "DropPath"]
    assert drop_path and max(drop_path) > 0  # the test covers stochastic depth, not only the init
    a = model.network.state_dict()
    torch.manual_seed(2)  # whatever the global RNG holds, the run's own seed decides
    b = pixlab.train([(img, labels)], cfg, class_names=names, progress=False).network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
