"""Augmentation of training tiles: image, stroke labels and pseudo-labels move together.

Every step takes a ``tv_tensors.Image`` and any number of ``tv_tensors.Mask`` and returns the same
types, so a later step (or a torchvision v2 transform appended by a user) still knows which tensor is
a mask. Masks hold class indices with -1 = unlabelled (the training targets); geometric steps move
them with the image, never interpolate them, and pixels that come from outside the tile stay -1.

Randomness comes from a ``torch.Generator`` passed per call, never from torch's global RNG: batches
are prepared in a background thread, and seeding the global RNG there would race with the training
step (dropout draws from it) and with anything else the process runs.
"""

from __future__ import annotations

__all__ = ["build_augmentation", "collate", "Augmentation", "Flips", "Rot90", "ChannelJitter", "Elastic"]

UNLABELLED = -1  # mask value of unlabelled pixels in training targets


def _wrap(out, like):
    from torchvision import tv_tensors
    return tv_tensors.wrap(out, like=like) if isinstance(like, (tv_tensors.Image, tv_tensors.Mask)) else out


class Flips:
    """Random horizontal and vertical flips (exact), each with probability 1/2."""

    def draw(self, generator, image):
        import torch
        h, v = (torch.rand(2, generator=generator) < 0.5).tolist()
        return {"h": h, "v": v}

    def image(self, x, p):
        dims = [d for d, on in ((-1, p["h"]), (-2, p["v"])) if on]
        return _wrap(x.flip(dims), x) if dims else x

    mask = image


class Rot90:
    """Random rotation by k * 90 degrees (exact; v2.RandomRotation would interpolate)."""

    def draw(self, generator, image):
        import torch
        return {"k": int(torch.randint(0, 4, (), generator=generator))}

    def image(self, x, p):
        import torch
        return _wrap(torch.rot90(x, p["k"], dims=(-2, -1)), x) if p["k"] else x

    mask = image


class ChannelJitter:
    """Per-channel gain and offset on the normalized image (brightness/contrast for any channel count).

    ``v2.ColorJitter`` only handles 1 or 3 channels; microscopy has N. Masks are unchanged.
    """

    def __init__(self, gain: float = 0.2, offset: float = 0.1):
        self.gain, self.offset = gain, offset

    def draw(self, generator, image):
        import torch
        c = image.shape[-3]
        u = 2 * torch.rand(2, c, 1, 1, generator=generator) - 1
        return {"gain": 1 + self.gain * u[0], "offset": self.offset * u[1]}

    def image(self, x, p):
        return _wrap(x * p["gain"].to(x.dtype) + p["offset"].to(x.dtype), x)

    def mask(self, m, p):
        return m


class Elastic:
    """Elastic deformation with probability ``p``: a smooth random displacement field (torchvision's).

    The image is resampled bilinearly with reflection at the border (no artificial dark rim); masks
    are resampled by nearest neighbour and pixels taken from outside the tile become unlabelled
    (torchvision's default fill 0 would write class index 0, i.e. the first class, there).
    """

    def __init__(self, alpha: float = 30.0, sigma: float = 5.0, p: float = 0.5):
        self.alpha, self.sigma, self.p = float(alpha), float(sigma), float(p)

    def draw(self, generator, image):
        import torch
        from torchvision.transforms.v2 import functional as F
        if float(torch.rand((), generator=generator)) >= self.p:
            return None
        h, w = image.shape[-2:]
        k = int(8 * self.sigma + 1) | 1  # odd kernel, as v2.ElasticTransform
        d = torch.rand(2, 1, h, w, generator=generator) * 2 - 1
        if self.sigma > 0:
            d = F.gaussian_blur(d, [k, k], [self.sigma, self.sigma])
        d = d * self.alpha / torch.tensor([w, h], dtype=d.dtype).view(2, 1, 1, 1)
        # identity grid at pixel centres (align_corners=False) plus the displacement: 1 x H x W x 2
        ys = (torch.arange(h, dtype=d.dtype) * 2 + 1) / h - 1
        xs = (torch.arange(w, dtype=d.dtype) * 2 + 1) / w - 1
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        return {"grid": torch.stack([gx + d[0, 0], gy + d[1, 0]], -1)[None]}

    @staticmethod
    def _sample(x, grid, mode, padding):
        import torch
        t = x.as_subclass(torch.Tensor)
        flat = t.reshape(-1, 1, *t.shape[-2:]) if t.ndim != 3 else t[None]
        out = torch.nn.functional.grid_sample(flat.float(), grid.expand(flat.shape[0], -1, -1, -1).float(),
                                              mode=mode, padding_mode=padding, align_corners=False)
        return out.reshape(t.shape)

    def image(self, x, p):
        return _wrap(self._sample(x, p["grid"], "bilinear", "reflection").to(x.dtype), x)

    def mask(self, m, p):
        # shift so that unlabelled is 0, sample with zero padding: outside and unlabelled -> 0 -> -1
        out = self._sample(m - UNLABELLED, p["grid"], "nearest", "zeros").round().to(m.dtype) + UNLABELLED
        return _wrap(out, m)


class Augmentation:
    """Steps applied in order to one image and its masks, each step's parameters drawn once per call.

    Parameters
    ----------
    steps : list
        Objects with ``draw(generator, image) -> params or None`` (None: skip this time),
        ``image(x, params)`` and ``mask(m, params)``.
    """

    def __init__(self, steps):
        self.steps = list(steps)

    def __call__(self, image, *masks, generator=None):
        """Return ``(image, *masks)`` augmented jointly, as ``tv_tensors.Image`` / ``tv_tensors.Mask``."""
        from torchvision import tv_tensors
        x = image if isinstance(image, tv_tensors.Image) else tv_tensors.Image(image)
        ms = [m if isinstance(m, tv_tensors.Mask) else tv_tensors.Mask(m) for m in masks]
        for step in self.steps:
            params = step.draw(generator, x)
            if params is None:
                continue
            x = step.image(x, params)
            ms = [step.mask(m, params) for m in ms]
        return (x, *ms)

    def __repr__(self):
        return f"Augmentation({[type(s).__name__ for s in self.steps]})"


def build_augmentation(cfg):
    """The joint image/mask augmentation the config asks for (or None)."""
    if not cfg.augment:
        return None
    steps = []
    if cfg.flips:
        steps.append(Flips())
    if cfg.rotate90:
        steps.append(Rot90())
    if cfg.color_jitter:
        steps.append(ChannelJitter())
    if cfg.elastic:
        steps.append(Elastic())
    return Augmentation(steps) if steps else None


def collate(tiles, augment, gen_seed):
    """Stack tiles into tensors, augmenting each (image, target, pseudo) jointly.

    Augmentation randomness comes from a generator seeded with ``gen_seed`` (the loop derives it
    from the seed, epoch and batch index), so runs and resumed runs draw the same augmentations.
    """
    import torch
    gen = torch.Generator().manual_seed(int(gen_seed))
    xs, ys, ps = [], [], []
    for img, lab, pse in tiles:
        x, y, p = torch.from_numpy(img), torch.from_numpy(lab), torch.from_numpy(pse)
        if augment is not None:
            x, y, p = augment(x, y, p, generator=gen)
        xs.append(x.as_subclass(torch.Tensor))
        ys.append(y.as_subclass(torch.Tensor))
        ps.append(p.as_subclass(torch.Tensor))
    return torch.stack(xs), torch.stack(ys), torch.stack(ps)


_collate = collate
