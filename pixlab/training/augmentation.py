"""Augmentation of training tiles: image, stroke labels and pseudo-labels move together."""

from __future__ import annotations

__all__ = ["build_augmentation", "collate"]


def build_augmentation(cfg):
    """torchvision.transforms.v2 pipeline applied jointly to image and mask tensors (or None)."""
    if not cfg.augment:
        return None
    import torch
    from torchvision.transforms import v2

    class RandomRot90(v2.Transform):
        # v2 has no exact 90-degree rotation; RandomRotation would interpolate. torch.rot90 is exact.
        def make_params(self, flat_inputs):
            return {"k": int(torch.randint(0, 4, ()).item())}

        def transform(self, inpt, params):
            return torch.rot90(inpt, params["k"], dims=(-2, -1)) if params["k"] else inpt

    class ChannelJitter(v2.Transform):
        # v2.ColorJitter only handles 1 or 3 channels; microscopy has N. Gain/offset per channel
        # on the normalized image is the same idea (brightness/contrast) for any channel count.
        def make_params(self, flat_inputs):
            c = next(x for x in flat_inputs if isinstance(x, torch.Tensor) and x.ndim == 3).shape[0]
            return {"gain": 1 + 0.2 * (2 * torch.rand(c, 1, 1) - 1), "offset": 0.1 * (2 * torch.rand(c, 1, 1) - 1)}

        def transform(self, inpt, params):
            from torchvision import tv_tensors
            if isinstance(inpt, tv_tensors.Mask):
                return inpt
            return inpt * params["gain"] + params["offset"]

    ts = []
    if cfg.flips:
        ts += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    if cfg.rotate90:
        ts.append(RandomRot90())
    if cfg.color_jitter:
        ts.append(ChannelJitter())
    if cfg.elastic:
        ts.append(v2.RandomApply([v2.ElasticTransform(alpha=30.0, sigma=5.0)], p=0.5))
    return v2.Compose(ts) if ts else None


def collate(tiles, augment, gen_seed):
    """Stack tiles into tensors, augmenting each (image, target, pseudo) jointly."""
    import torch
    from torchvision import tv_tensors
    xs, ys, ps = [], [], []
    # Augmentation randomness is tied to the batch index so runs (and resumed runs) are reproducible.
    # v2 transforms draw from torch's global RNG; the training step itself draws none (no dropout in
    # our architectures), so seeding it from this producer thread does not race with the optimizer.
    torch.manual_seed(gen_seed)
    for img, lab, pse in tiles:
        x = torch.from_numpy(img)
        y = tv_tensors.Mask(torch.from_numpy(lab))
        p = tv_tensors.Mask(torch.from_numpy(pse))
        if augment is not None:
            x, y, p = augment(x, y, p)
        xs.append(torch.as_tensor(x))
        ys.append(torch.as_tensor(y))
        ps.append(torch.as_tensor(p))
    return torch.stack(xs), torch.stack(ys), torch.stack(ps)


_collate = collate
