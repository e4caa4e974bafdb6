"""The trained model: network + everything needed to apply it the way it was trained.

:class:`Model` holds data and runs batches; what it does with files is delegated downwards
(:mod:`pixlab.model.folder` writes the bundle, :mod:`pixlab.inference.in_memory` predicts,
:mod:`pixlab.model.export.formats` exports), never to a module that loads models, so that
:mod:`pixlab.model.bundle` can build a ``Model`` without an import cycle.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pixlab.nn.tile_size import TILE_MULTIPLE

__all__ = ["Model"]


class Model:
    """A trained pixel classifier.

    Parameters
    ----------
    network : torch.nn.Module
        Maps (B, C, H, W) normalized float32 tiles to (B, K, H, W) logits.
    class_names : list of str
        ``class_names[k-1]`` is class ``k``; output channel ``k-1`` of ``predict`` is its probability.
    colours : list of [r, g, b]
        Display colour per class.
    channel_names : list of str
        Names of the input channels the network expects, in order.
    norm_stats : dict
        Normalization statistics from :func:`pixlab.image.normalize.compute_stats` (training-set statistics).
    config : TrainConfig
        The resolved configuration the model was trained with.
    history : list of dict, optional
        One dict per epoch (losses, metrics, learning rate, time).
    metadata : dict, optional
        Anything else recorded at training time (fingerprints, versions, split).
    """

    #: Tile sides the network accepts are multiples of this (see :func:`pixlab.nn.tile_size.check_tile_size`).
    tile_multiple: int = TILE_MULTIPLE

    def __init__(self, network, class_names: Sequence[str], colours, channel_names: Sequence[str],
                 norm_stats: dict, config, history: list | None = None, metadata: dict | None = None):
        self.network = network
        self.class_names = list(class_names)
        self.colours = [list(map(int, c)) for c in colours]
        self.channel_names = list(channel_names)
        self.norm_stats = norm_stats
        # A model describes what was trained: 'auto' fields (a config built by hand) are made concrete.
        self.config = config.resolved() if hasattr(config, "resolution") and config.resolution() else config
        self.history = list(history or [])
        self.metadata = dict(metadata or {})
        self.network.eval()

    # ------------------------------------------------------------------ properties
    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return len(self.channel_names)

    @property
    def device(self):
        import torch
        try:
            return next(self.network.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    @property
    def inference_tile_size(self) -> int:
        """Tile size used at inference (fully convolutional nets take larger tiles than training crops)."""
        return int(self.metadata.get("inference_tile_size", self.config.tile_size))

    def to(self, device) -> "Model":
        """Move the network to ``device`` ('cpu', 'cuda', ...) and return self."""
        self.network.to(device)
        return self

    def __repr__(self) -> str:
        c = self.config
        arch = c.architecture if c.architecture == "tiny_unet" else f"{c.architecture}/{c.encoder}"
        return (f"Model({arch}, classes={self.class_names}, "
                f"channels={self.channel_names}, epochs_trained={len(self.history)})")

    # ------------------------------------------------------------------ inference
    def infer_batch(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch of normalized tiles.

        Parameters
        ----------
        batch : ndarray, shape (B, C, H, W), float32

        Returns
        -------
        ndarray, shape (B, K, H, W), float32
            Softmax probabilities.
        """
        import torch
        dev = self.device
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if dev.type == "cuda":
            x = x.pin_memory().to(dev, non_blocking=True)
        self.network.eval()
        with torch.inference_mode():
            if dev.type == "cuda" and self.config.amp:
                with torch.autocast("cuda", dtype=torch.float16):
                    logits = self.network(x)
            else:
                logits = self.network(x)
            probs = torch.softmax(logits.float(), dim=1)
        return probs.cpu().numpy()

    def predict(self, image, *, tile_size: int | None = None, overlap: float | None = None,
                batch_size: int | None = None, per_image_norm: bool | None = None,
                channels=None) -> np.ndarray:
        """Class probabilities for a whole image, tiled with smooth blending.

        Parameters
        ----------
        image : Image, ndarray or path
            Anything :func:`pixlab.open_image` accepts. Its channels are matched to the model's
            by :func:`pixlab.image.channels.match_channels`: by name when both have informative
            names, by position (with a warning) when the names are generic.
        tile_size, overlap, batch_size : optional
            Override the inference tile size, overlap fraction and batch size.
        per_image_norm : bool, optional
            Normalize with this image's own statistics instead of the training statistics
            (default: the model's ``use_training_stats`` setting).
        channels : sequence of int/str, or dict, optional
            The image channels to use, in the model's order (names or 0-based indices), or
            ``{model channel: image channel}``; needed when the channel counts differ.

        Returns
        -------
        ndarray, shape (K, Y, X), float32
            ``probs[k-1]`` is the probability of class ``k``.
        """
        from pixlab.inference.in_memory import predict_image
        return predict_image(self, image, tile_size=tile_size, overlap=overlap, batch_size=batch_size,
                             per_image_norm=per_image_norm, channels=channels)

    def predict_labels(self, image, **kw) -> np.ndarray:
        """Most probable class per pixel, (Y, X) with values 1..K (uint8; uint16 beyond 255 classes)."""
        from pixlab.labels.classids import argmax_labels
        return argmax_labels(self.predict(image, **kw))

    def backend(self, name: str = "eager"):
        """An inference backend for this model: an object with ``infer_batch`` like :meth:`infer_batch`.

        Parameters
        ----------
        name : {"eager", "onnxruntime"}
            ``"eager"`` returns the model itself (PyTorch; AMP and pinned memory on CUDA).
            ``"onnxruntime"`` exports :attr:`network` to ONNX in memory and returns a
            :class:`pixlab.model.onnx.OnnxBackend` (faster on CPUs). The session is made once and reused:
            it is a snapshot of the weights at that moment.

        Returns
        -------
        object
            With ``infer_batch(batch) -> (B, K, H, W) float32`` probabilities.
        """
        if name == "eager":
            return self
        if name != "onnxruntime":
            raise ValueError(f"backend must be 'eager' or 'onnxruntime', got {name!r}")
        cached = self.__dict__.get("_onnx_backend")
        if cached is None:
            from pixlab.model.onnx import OnnxBackend
            cached = self.__dict__["_onnx_backend"] = OnnxBackend(self)
        return cached

    def export_onnx(self, path, **kwargs) -> str:
        """Export :attr:`network` to an ONNX file (dynamic batch, height and width; logits out).

        See :func:`pixlab.model.onnx.export_onnx` for the options. Returns ``path``.
        """
        from pixlab.model.onnx import export_onnx
        return export_onnx(self, path, **kwargs)

    def export(self, out, format: str = "bioimageio", **options) -> str:
        """Write this model for another tool: ``"bioimageio"`` (package .zip), ``"qupath-dl"`` (QuPath
        extension folder), ``"torchscript"`` or ``"onnx"``.

        Delegates to :func:`pixlab.model.export.export_model` (see there for the options). Returns
        the path written.
        """
        from pixlab.model.export.formats import write
        return write(self, out, format, **options)

    # ------------------------------------------------------------------ persistence
    def save(self, directory, overwrite: bool = False) -> None:
        """Write the bundle (model.safetensors + metadata.json) into ``directory`` atomically.

        An existing ``directory`` raises FileExistsError unless ``overwrite=True`` (then it is
        replaced atomically). Read it back with :func:`pixlab.load_model` (:mod:`pixlab.model.bundle`, the one loader).
        """
        from pixlab.model.folder import save_model
        save_model(self, directory, overwrite)

    def copy(self) -> "Model":
        """A deep copy (network included)."""
        import copy
        return Model(copy.deepcopy(self.network), self.class_names, self.colours, self.channel_names,
                     copy.deepcopy(self.norm_stats), self.config, copy.deepcopy(self.history),
                     copy.deepcopy(self.metadata))

    def summary(self) -> dict[str, Any]:
        """A short description for reports and notebooks."""
        best = self.metadata.get("best_epoch")
        return {"architecture": self.config.architecture, "encoder": self.config.encoder,
                "classes": self.class_names, "channels": self.channel_names,
                "epochs_trained": len(self.history), "best_epoch": best,
                "recipe": self.config.recipe}
