"""Blending tile predictions on the device: float32 weighted means, finished rows quantised there.

The numpy twin for in-memory prediction is :func:`pixlab.inference.tiling.predict_tiled`; both use
the same rule, an **incremental weighted mean** per pixel (West's algorithm)::

    W += w;  M += (w / W) * (p - M)

which is the weighted average ``sum(w p) / sum(w)`` of MONAI's sliding window, computed so that
float32 is enough: a pixel whose tiles all agree on ``c`` gets ``M = c`` exactly (the first tile
sets ``M = (w / w) * c = c``, every later one adds ``r * (c - c) = 0``), so a constant network gives an
exactly constant map with no float64 accumulators (half the band memory, and float64 is slow or
absent on GPUs). Rows are finished as soon as no later tile can touch them; they are normalised
into what is stored (uint8 ``round(255 p)``, float16/32, or the argmax label map) on the device, and
only those finished rows come back to the host.
"""

from __future__ import annotations

import numpy as np

from pixlab.labels.classids import torch_label_dtype

__all__ = ["BandBlender", "quantize_probs", "FinishedRows"]


def quantize_probs(probs, output: str, dtype: str):
    """What is stored, computed where ``probs`` lives: the torch twin of ``outputs.to_output``.

    Parameters
    ----------
    probs : torch.Tensor (K, h, w) float32
    output : {"probabilities", "labels"}
    dtype : {"uint8", "float16", "float32"}

    Returns
    -------
    torch.Tensor
        ``(K, h, w)`` of ``dtype`` (uint8 holds ``round(255 p)``), or ``(1, h, w)`` class ids 1..K
        (uint8; uint16 beyond 255 classes).
    """
    import torch

    if output == "labels":
        return (torch.argmax(probs, dim=0, keepdim=True) + 1).to(torch_label_dtype(probs.shape[0]))
    if dtype == "uint8":
        # torch.round rounds half to even like numpy.rint, so both paths store the same bytes.
        return (probs * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    # A copy even for float32: ``probs`` is a view of the accumulators, which are reused at once.
    return probs.to(getattr(torch, dtype), copy=True)


class FinishedRows:
    """Rows ``[y0, y1)`` of the prediction as they come back to the host.

    Attributes
    ----------
    y0, y1 : int
    out : numpy.ndarray or None
        What the raster stores, ``(K or 1, h, X)`` of the output dtype.
    labels : numpy.ndarray or None
        ``(h, X)`` class ids 1..K (uint8, uint16 beyond 255 classes; argmax of the float32 probabilities), when asked for.
    confidence : numpy.ndarray or None
        ``(h, X)`` float32 probability of the predicted class (the maximum), when asked for.
    columns : numpy.ndarray or None
        ``(K, h, ceil(X / f))`` float32 sums of probabilities over blocks of ``f`` columns, for a
        reduced preview (:class:`pixlab.inference.outputs.PreviewLabels`), when asked for.
    """

    __slots__ = ("y0", "y1", "out", "labels", "confidence", "columns", "_event", "_tensors")

    def __init__(self, y0, y1, tensors: dict, event=None):
        self.y0, self.y1 = y0, y1
        self._tensors, self._event = tensors, event
        self.out = self.labels = self.confidence = self.columns = None

    def ready(self) -> "FinishedRows":
        """Wait for the device-to-host copies (CUDA: an event; CPU: nothing) and expose numpy arrays."""
        if self._event is not None:
            self._event.synchronize()
            self._event = None
        for name, t in self._tensors.items():
            setattr(self, name, t.numpy())
        self._tensors = {}
        return self


class BandBlender:
    """Accumulate tile probabilities of one band of rows on ``device``; hand back finished rows.

    Parameters
    ----------
    n_classes : int
    height, width : int
        Size of the (working) image.
    tile : int
        Network tile size; tiles of an image smaller than it are cropped back before blending.
    window : numpy.ndarray (tile, tile) float32
        Blending weights (:func:`pixlab.inference.tiling.blend_window`).
    device : torch.device or str
    output, dtype : str
        What :meth:`finish` stores in ``out`` (see :func:`quantize_probs`); ``output=None``: no ``out``.
    labels : bool
        Also hand back the argmax label map.
    confidence : bool
        Also hand back the probability of the predicted class (objects' mean probability).
    preview_factor : int or None
        Also hand back column sums over blocks of this many columns.
    fill_uncovered : bool
        Pixels no tile covered (background tiles that were skipped) get probability 1 for class 1
        (index 0). Without it every pixel must be covered.
    """

    def __init__(self, n_classes, height, width, tile, window, device, output="probabilities",
                 dtype="uint8", labels=False, preview_factor=None, fill_uncovered=False, confidence=False):
        import torch

        self.k, self.height, self.width = int(n_classes), int(height), int(width)
        self.device = torch.device(device)
        self.rows = min(int(tile), self.height)
        self.output, self.dtype = output, dtype
        self.want_labels, self.preview_factor, self.fill_uncovered = labels, preview_factor, fill_uncovered
        self.want_confidence = confidence
        self.window = torch.as_tensor(np.asarray(window, np.float32), device=self.device)
        self.mean = torch.zeros((self.k, self.rows, self.width), dtype=torch.float32, device=self.device)
        self.wsum = torch.zeros((self.rows, self.width), dtype=torch.float32, device=self.device)
        self.top = 0  # image row held in row 0 of the buffers

    def add(self, y0, x0, probs) -> None:
        """Blend one tile's probabilities ``(K, >=h, >=w)`` (float32 on the device) at ``(y0, x0)``.

        Tiles must come in raster order of their ``y0``; rows above ``y0`` must have been
        :meth:`finish`-ed first (``y0`` is at most ``top + rows``).
        """
        h = min(self.rows, self.height - y0)
        w = min(self.window.shape[1], self.width - x0)
        r0 = y0 - self.top
        if r0 < 0 or r0 + h > self.rows:
            raise ValueError(f"tile at y0={y0} does not fit the band starting at row {self.top}; "
                             "finish the rows above it first")
        wt = self.window[:h, :w]
        ws = self.wsum[r0: r0 + h, x0: x0 + w]
        ws += wt
        ratio = wt / ws
        m = self.mean[:, r0: r0 + h, x0: x0 + w]
        m.addcmul_(probs[:, :h, :w] - m, ratio)

    def finish(self, y_end: int) -> list:
        """Rows ``[top, y_end)`` are final: normalise them, start their copy to the host, free them.

        Returns a list of :class:`FinishedRows` of at most one band each (empty when there is
        nothing new): rows far below the band, skipped as background, come in band-sized pieces.
        """
        out = []
        while int(y_end) > self.top:
            out.append(self._finish(min(int(y_end), self.top + self.rows)))
        return out

    def _finish(self, y_end: int) -> FinishedRows:
        import torch

        done = int(y_end) - self.top
        probs = self.mean[:, :done]
        if self.fill_uncovered:
            empty = self.wsum[:done] == 0
            probs = probs.clone()
            probs[0].masked_fill_(empty, 1.0)  # skipped background: class 1 with probability 1
        results = {}
        if self.output is not None:
            results["out"] = quantize_probs(probs, self.output, self.dtype)
        if self.want_confidence:
            best, index = torch.max(probs, dim=0)
            results["confidence"] = best
            if self.want_labels:
                results["labels"] = (index + 1).to(torch_label_dtype(self.k))
        elif self.want_labels:
            results["labels"] = (torch.argmax(probs, dim=0) + 1).to(torch_label_dtype(self.k))
        if self.preview_factor and self.preview_factor > 1:
            f = self.preview_factor
            pad = -self.width % f
            cols = torch.nn.functional.pad(probs, (0, pad)) if pad else probs
            results["columns"] = cols.reshape(self.k, done, -1, f).sum(dim=3)
        rows = self._to_host(self.top, y_end, results)
        # Slide the buffers up: unfinished rows move to the top, freed rows start empty.
        keep = self.rows - done
        if keep > 0:
            self.mean[:, :keep] = self.mean[:, done:].clone()
            self.wsum[:keep] = self.wsum[done:].clone()
        self.mean[:, keep:] = 0
        self.wsum[keep:] = 0
        self.top = y_end
        return rows

    def _to_host(self, y0, y1, results) -> FinishedRows:
        import torch

        if self.device.type != "cuda":
            return FinishedRows(y0, y1, {n: t.contiguous() for n, t in results.items()})
        host = {}
        for name, t in results.items():
            # Pinned buffers make the copies asynchronous: the GPU goes on with the next tiles while
            # these rows travel; the writer thread waits on the event before touching them.
            buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            buf.copy_(t, non_blocking=True)
            host[name] = buf
        event = torch.cuda.Event()
        # On the stream of the blender's device, not the calling thread's current device: the
        # compute thread starts on cuda:0, so a bare record() would not wait for cuda:1's copies.
        event.record(torch.cuda.current_stream(self.device))
        return FinishedRows(y0, y1, host, event)
