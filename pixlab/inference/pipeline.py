"""The streamed tile pipeline of ``predict_file``: read in workers, compute on the device, write in workers.

::

    reader threads            main thread (device)                       writer thread (+ encoders)
    strips of rows  --->  tiles cut on the device as uint8/uint16  --->  finished rows: raster tiles
    (decoded once,        -> normalise -> network -> softmax ->          compressed in a pool,
     pinned on CUDA)      blend (float32) -> quantise -> copy back       counts, preview, objects

- **Reading**: the input is read in strips of whole file chunks (each chunk is decoded once, not once
  per overlapping tile), several strips at a time in a thread pool sized to the machine (tifffile and
  imagecodecs release the GIL while decoding), a few bands ahead of the network.
- **Device work** (:class:`pixlab.inference.blend.BandBlender`): tiles travel to the device in the
  image's integer type (pinned memory and non-blocking copies on CUDA), and normalisation, softmax,
  blending and quantisation happen there; only finished rows of the output type come back.
- **Writing**: a consumer thread takes finished rows through a small bounded queue (memory stays
  flat) and hands them to the raster writer, whose tile encoding runs in its own pool.

Errors and Ctrl-C: whatever raises (a reader, the network, the writer, KeyboardInterrupt in the main
thread), pending reads are cancelled, every worker thread is joined before the call returns, and the
exception propagates, so the raster writer removes its temporary files: no thread is left running and
no half-written output remains.
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["worker_count", "BackgroundSink", "StripReader", "run_tiles"]


def worker_count(cap: int = 8) -> int:
    """Threads for I/O work: the CPUs this process may use, at most ``cap``."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(int(cap), n))


class BackgroundSink:
    """Runs ``consume(item)`` on a thread named ``pixlab-writer``, fed through a bounded queue.

    The bound keeps memory flat when writing is slower than predicting. An error in the thread is
    re-raised in the caller at its next :meth:`put` or at exit. When the caller fails (or is
    interrupted) the thread stops consuming, drains what is queued and ends; :meth:`__exit__` always
    joins it, so the caller never returns with the thread alive and never blocks forever.
    """

    def __init__(self, consume, maxsize: int = 4):
        self._consume = consume
        self._queue: queue.Queue = queue.Queue(maxsize)
        self.error: BaseException | None = None
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pixlab-writer", daemon=True)

    def _run(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.error is None and not self._abort.is_set():
                try:
                    self._consume(item)
                except BaseException as e:  # handed to the caller thread
                    self.error = e

    def put(self, item) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:  # a timeout so that a writer error is seen even while the queue is full
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self._abort.set()
        while True:  # the thread drains the queue even after an error, so this put completes
            try:
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                if not self._thread.is_alive():
                    break
        self._thread.join()
        if exc_type is None and self.error is not None:
            raise self.error
        return False


def _strip_height(img, tile: int) -> int:
    """Rows per read: whole file chunks (a dask image's chunk height), about half a tile or more."""
    chunks = getattr(img.data, "chunks", None)
    h = int(chunks[1][0]) if chunks and len(chunks) > 1 and chunks[1] else 256
    h = max(1, h)
    return h * max(1, -(-min(256, tile) // h)) if h < 64 else h


class StripReader:
    """Full-width bands of a (working) image, read as strips of whole chunks in a thread pool.

    Parameters
    ----------
    img : pixlab.Image
    tile : int
        Network tile size (a band is ``min(tile, Y)`` rows).
    device : torch.device
        Strips are returned as tensors there; on CUDA they are pinned by the reader threads and
        copied without blocking.
    workers : int
        Reader threads.
    ahead : int
        Strips read ahead of the band asked for (bounded memory).
    """

    def __init__(self, img, tile, device, workers, ahead=None):
        from pixlab.inference.prepare import read_rows

        self._read_rows = read_rows
        self.img, self.device = img, device
        self.height = img.shape[1]
        self.strip = _strip_height(img, tile)
        self.n_strips = -(-self.height // self.strip)
        band_strips = -(-min(tile, self.height) // self.strip) + 1
        self.ahead = ahead if ahead is not None else max(workers, band_strips)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pixlab-read")
        self.futures: dict = {}
        self.on_device: dict = {}

    def _read(self, i):
        import torch

        y0, y1 = i * self.strip, min(self.height, (i + 1) * self.strip)
        t = torch.from_numpy(np.ascontiguousarray(self._read_rows(self.img, y0, y1)))
        if self.device.type == "cuda":
            t = t.pin_memory()  # here, in the reader thread: the main thread only starts the copy
        return t

    def band(self, y0: int, y1: int):
        """Rows ``[y0, y1)`` of the image, ``(C, y1 - y0, X)`` in its own dtype, on the device.

        Bands must be asked for in increasing ``y0``; strips above ``y0`` are then released.
        """
        import torch

        first, last = y0 // self.strip, (y1 - 1) // self.strip
        for i in range(first, min(self.n_strips, last + 1 + self.ahead)):
            if i not in self.futures and i not in self.on_device:
                self.futures[i] = self.pool.submit(self._read, i)
        for i in [i for i in self.on_device if i < first]:
            del self.on_device[i]
        parts = []
        for i in range(first, last + 1):
            if i not in self.on_device:
                t = self.futures.pop(i).result()
                self.on_device[i] = t.to(self.device, non_blocking=True) if self.device.type == "cuda" else t
            parts.append(self.on_device[i])
        whole = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        offset = first * self.strip
        return whole[:, y0 - offset: y1 - offset]

    def close(self) -> None:
        """Cancel reads not started, wait for the running ones: no reader thread outlives this."""
        for f in self.futures.values():
            f.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.futures.clear()
        self.on_device.clear()


def _reflect_index(n: int, size: int, device):
    """Indices ``0..size-1`` folded onto ``0..n-1`` by reflection (numpy's "reflect", repeating)."""
    import torch

    i = torch.arange(size, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * n - 2
    i = i % period
    return torch.where(i >= n, period - i, i)


def _tiles_loop(reader, boxes, shape_yx, tile, batch_size, stats, logits, blender, sink, progress, stop,
                net_threads):
    import torch

    from pixlab.image.normalize import apply_torch

    height, width = shape_yx
    th, tw = min(tile, height), min(tile, width)
    device = blender.device
    pad_y = _reflect_index(th, tile, device) if th < tile else None
    pad_x = _reflect_index(tw, tile, device) if tw < tile else None
    bands: dict = {}
    trial = None
    if net_threads is not None:
        from pixlab.inference.threads import ThreadTrial
        per_band = sum(1 for y, _ in boxes if y == boxes[0][0]) if boxes else 1
        trial = ThreadTrial(net_threads, -(-len(boxes) // batch_size), -(-per_band // batch_size))
    with torch.inference_mode():
        for start in range(0, len(boxes), batch_size):
            if stop.is_set():
                return trial
            b = start // batch_size
            batch = boxes[start: start + batch_size]
            for y0 in [y for y in bands if y < batch[0][0]]:
                del bands[y0]
            pieces = []
            for y0, x0 in batch:
                if y0 not in bands:
                    # Normalised once per band, not once per overlapping tile (1.8x fewer pixels at
                    # overlap 0.25); the band arrived in the image's own integer type.
                    bands[y0] = apply_torch(reader.band(y0, y0 + th)[None], stats)[0]
                piece = bands[y0][:, :, x0: x0 + tw]
                if pad_y is not None:
                    piece = piece.index_select(1, pad_y)
                if pad_x is not None:
                    piece = piece.index_select(2, pad_x)
                pieces.append(piece)
            x = torch.stack(pieces)
            if trial is not None:
                torch.set_num_threads(trial.threads(b))
            try:
                out = logits(x)
            finally:
                if trial is not None:
                    torch.set_num_threads(1)
            if tuple(out.shape) != (len(batch), blender.k, tile, tile):
                raise ValueError(f"the network returned shape {tuple(out.shape)} for tiles of shape "
                                 f"{tuple(x.shape)}; it must return ({len(batch)}, {blender.k}, {tile}, "
                                 f"{tile}) (one channel per class)")
            probs = torch.softmax(out.float(), dim=1)
            for (y0, x0), p in zip(batch, probs):
                # No later tile reaches above this tile's row: those rows are final.
                for rows in blender.finish(y0):
                    sink(rows)
                blender.add(y0, x0, p)
            if progress is not None:
                progress(len(batch))
            if trial is not None:
                trial.done(b)
        for rows in blender.finish(height):
            sink(rows)
    return trial


def run_tiles(reader: StripReader, boxes, shape_yx, tile, batch_size, stats, logits, blender, sink,
              progress=None, net_threads: int | None = None) -> None:
    """Send every tile of ``boxes`` through the network and blend it; finished rows go to ``sink``.

    The work runs in a compute thread (``pixlab-compute``) while this thread waits: a Ctrl-C here
    stops it after the batch in flight, and an error there (the network's own KeyboardInterrupt
    included) is re-raised here; either way the thread has ended when this returns or raises.

    On a CPU, torch's intra-op threads are a per-thread setting: the compute thread runs its
    elementwise work (normalisation, softmax, blending, quantisation: memory-bound, ~1 ms per op)
    with one thread, so that it does not contend with the reader and encoder threads for the cores
    (OpenMP threads spin at barriers: on a busy 2-core machine a 2-thread 1x1 convolution ran 10x
    slower than a 1-thread one), and the network with ``net_threads`` (default: the caller's
    ``torch.get_num_threads()``) or one thread, whichever :class:`~pixlab.inference.threads.ThreadTrial`
    measures faster on the first bands. The caller's own setting is not changed.

    Parameters
    ----------
    reader : StripReader
    boxes : list of (y0, x0)
        Tiles to compute, in raster order (background tiles may be left out).
    shape_yx : (int, int)
    tile, batch_size : int
    stats : dict
        Normalisation statistics (:func:`pixlab.image.normalize.apply_torch` on the device).
    logits : callable
        ``logits(x (B, C, tile, tile) float32 tensor on the device) -> (B, K, tile, tile)`` tensor.
    blender : pixlab.inference.blend.BandBlender
    sink : callable
        ``sink(FinishedRows)``, called with rows in order, each row once.
    progress : callable, optional
        ``progress(n_tiles_done_in_this_batch)``.
    net_threads : int, optional
        CPU threads for the network (see above).

    Returns
    -------
    int or None
        The network's CPU threads after the trial (None on a GPU).
    """
    import torch

    if blender.device.type != "cpu":
        net_threads = None  # the GPU does the work; thread counts are not the question there
    elif net_threads is None:
        net_threads = torch.get_num_threads()
    stop = threading.Event()
    failure: list = []
    result: list = []

    def target():
        if net_threads is not None:
            torch.set_num_threads(1)  # this thread only (an OpenMP per-thread setting)
        try:
            result.append(_tiles_loop(reader, boxes, shape_yx, tile, batch_size, stats, logits, blender, sink,
                                      progress, stop, net_threads))
        except BaseException as e:  # KeyboardInterrupt from the network included: the caller re-raises
            failure.append(e)

    thread = threading.Thread(target=target, name="pixlab-compute", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)  # a timeout so that Ctrl-C reaches this thread while it waits
    except BaseException:
        stop.set()
        thread.join()
        raise
    if failure:
        raise failure[0]
    trial = result[0] if result else None
    return None if trial is None else trial.chosen
