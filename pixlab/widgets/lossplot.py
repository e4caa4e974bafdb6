"""LossPlot: live training curves (Bokeh in a jupyter_bokeh widget), fed safely from a training thread.

Training callbacks run in the training thread. They only put events on a queue; a flush, at most every
``flush_interval`` seconds and at every epoch, turns the queued events into one ``stream`` per data
source, so the browser gets a few small messages instead of one per batch.

Two facts checked on this machine (shared/JUPYTER-NOTES.md) shape this file:

- BokehJS is not bundled with jupyter_bokeh's JupyterLab extension and the default CDN is unreachable
  offline, so :func:`ensure_bokehjs` loads ``bokeh.resources.INLINE`` once before the first plot shows.
- jupyter_bokeh 4.1 applies every ``ColumnsStreamed`` / ``ColumnsPatched`` event twice: the browser echoes
  the applied stream back and the kernel-side source applies it again, doubling the kernel's data.
  :class:`EchoSafeBokehModel` ignores those echoes.
"""

from __future__ import annotations

import io
import math
import queue
import threading
import time

import ipywidgets as widgets
from jupyter_bokeh import BokehModel

from pixlab.widgets.kernel_loop import call_in_kernel

__all__ = ["LossPlot", "EchoSafeBokehModel", "ensure_bokehjs"]

_BOKEHJS_LOADED = False
_ECHOED = ("ColumnsStreamed", "ColumnsPatched")
_EPOCH_COLUMNS = ("epoch", "train_loss", "val_loss", "val_miou")
_BATCH_COLUMNS = ("step", "train_loss", "smoothed")


def ensure_bokehjs(force: bool = False) -> bool:
    """Load BokehJS inline into the notebook page once per kernel (no CDN needed).

    Parameters
    ----------
    force : bool
        Load again (e.g. after reloading the browser page with the same kernel).

    Returns
    -------
    bool
        Whether BokehJS was loaded by this call (False outside a Jupyter kernel or when already loaded).
    """
    global _BOKEHJS_LOADED
    if _BOKEHJS_LOADED and not force:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return False
    from bokeh.io import output_notebook
    from bokeh.resources import INLINE

    output_notebook(INLINE, hide_banner=True)
    _BOKEHJS_LOADED = True
    return True


def _event_kind(content: dict):
    """The ``kind`` of a serialized Bokeh document event (a plain object or a serialized map)."""
    if "kind" in content:
        return content["kind"]
    if content.get("type") == "map":
        for key, value in content.get("entries", []):
            if key == "kind":
                return value
    return None


class EchoSafeBokehModel(BokehModel):
    """``jupyter_bokeh.BokehModel`` that ignores the browser's echo of streams and patches.

    The kernel already applied a stream before sending it; applying the browser's echo again would
    double the kernel-side data (jupyter_bokeh 4.1 bug). Other browser events (selections, range
    changes, button clicks) are handled as usual.
    """

    def _sync_model(self, _model, content, _buffers):
        if content.get("event", "") == "jsevent" and _event_kind(content) in _ECHOED:
            return
        super()._sync_model(_model, content, _buffers)


class LossPlot(widgets.VBox):
    """Train/validation loss per epoch, smoothed per-batch train loss and validation mIoU (right axis).

    Use it as a training callback (``pixlab.train(..., callbacks=[plot])``); it is safe to call from
    the training thread.

    Parameters
    ----------
    title : str
        Plot title.
    width, height : int
        Size in pixels.
    smoothing : float
        Exponential smoothing of the per-batch loss (0 = none, 0.9 = strong); it starts at the first
        batch's loss, so the curve does not rise from zero.
    flush_interval : float
        Seconds between streams to the browser during an epoch (each epoch end is always sent).
    max_batch_points : int
        Per-batch points kept (older ones roll over).

    Attributes
    ----------
    epochs : bokeh.models.ColumnDataSource
        Columns ``epoch, train_loss, val_loss, val_miou``.
    batches : bokeh.models.ColumnDataSource
        Columns ``step`` (fractional epoch), ``train_loss``, ``smoothed``.
    figure : bokeh.plotting.figure
    bokeh : EchoSafeBokehModel
        The widget showing the figure.
    """

    def __init__(self, title: str = "Training", width: int = 640, height: int = 300, smoothing: float = 0.9,
                 flush_interval: float = 0.5, max_batch_points: int = 20_000):
        from bokeh.models import ColumnDataSource, HoverTool, LinearAxis, Range1d
        from bokeh.plotting import figure

        if not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}; e.g. 0.9")
        self.smoothing = float(smoothing)
        self.flush_interval = float(flush_interval)
        self.max_batch_points = int(max_batch_points)
        self.title = title
        self.epochs = ColumnDataSource({k: [] for k in _EPOCH_COLUMNS})
        self.batches = ColumnDataSource({k: [] for k in _BATCH_COLUMNS})
        fig = figure(title=title, width=int(width), height=int(height), x_axis_label="epoch",
                     y_axis_label="loss", tools="pan,wheel_zoom,box_zoom,reset,save")
        fig.extra_y_ranges = {"miou": Range1d(0, 1)}
        fig.add_layout(LinearAxis(y_range_name="miou", axis_label="val mIoU"), "right")
        fig.line("step", "smoothed", source=self.batches, color="#9ecae1", line_width=1,
                 legend_label="train (per batch, smoothed)")
        fig.line("epoch", "train_loss", source=self.epochs, color="#1f77b4", line_width=2, legend_label="train")
        fig.scatter("epoch", "train_loss", source=self.epochs, color="#1f77b4", size=5)
        fig.line("epoch", "val_loss", source=self.epochs, color="#ff7f0e", line_width=2, legend_label="val")
        fig.scatter("epoch", "val_loss", source=self.epochs, color="#ff7f0e", size=5)
        fig.line("epoch", "val_miou", source=self.epochs, color="#2ca02c", line_width=2, line_dash="dashed",
                 y_range_name="miou", legend_label="val mIoU")
        fig.legend.location = "top_right"
        fig.legend.click_policy = "hide"
        fig.add_tools(HoverTool(tooltips=[("epoch", "@epoch"), ("train", "@train_loss{0.000}"),
                                          ("val", "@val_loss{0.000}"), ("mIoU", "@val_miou{0.000}")]))
        self.figure = fig
        self.bokeh = EchoSafeBokehModel(fig)
        self._queue: queue.Queue = queue.Queue()
        self._flush_lock = threading.Lock()
        self._last_flush = 0.0
        self._ema = None
        self._n_batches = 0
        self._steps_per_epoch = None
        super().__init__([self.bokeh])

    def _repr_mimebundle_(self, **kwargs):
        ensure_bokehjs()
        return super()._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------------------------------
    def __call__(self, event: dict) -> None:
        """Training callback: queue the event; flush when due. Never stops training (returns None)."""
        self._queue.put(dict(event))
        kind = event.get("event")
        if kind in ("start", "epoch", "end") or time.monotonic() - self._last_flush >= self.flush_interval:
            self._last_flush = time.monotonic()  # one pending flush per interval
            call_in_kernel(self.flush)  # Bokeh streams from the kernel's IO loop, not this thread

    callback = __call__

    def reset(self) -> None:
        """Forget all points (before a new training run)."""
        with self._flush_lock:
            while not self._queue.empty():
                self._queue.get_nowait()
            self.epochs.data = {k: [] for k in _EPOCH_COLUMNS}
            self.batches.data = {k: [] for k in _BATCH_COLUMNS}
            self._ema, self._n_batches, self._steps_per_epoch = None, 0, None

    def flush(self) -> None:
        """Send queued events to the plot: one ``stream`` per data source."""
        with self._flush_lock:
            epochs = {k: [] for k in _EPOCH_COLUMNS}
            batches = {k: [] for k in _BATCH_COLUMNS}
            while True:
                try:
                    ev = self._queue.get_nowait()
                except queue.Empty:
                    break
                kind = ev.get("event")
                if kind == "start":
                    self._steps_per_epoch = ev.get("steps_per_epoch")
                elif kind == "batch":
                    loss = float(ev.get("train_loss", math.nan))
                    self._n_batches += 1
                    b = self.smoothing
                    self._ema = loss if self._ema is None else b * self._ema + (1 - b) * loss
                    steps = self._steps_per_epoch or (ev.get("batch", 0) + 1)
                    batches["step"].append(ev.get("epoch", 0) + (ev.get("batch", 0) + 1) / max(1, steps))
                    batches["train_loss"].append(loss)
                    batches["smoothed"].append(self._ema)
                elif kind == "epoch":
                    epochs["epoch"].append(int(ev.get("epoch", len(self.epochs.data["epoch"]))) + 1)
                    for k in ("train_loss", "val_loss", "val_miou"):
                        epochs[k].append(float(ev.get(k, math.nan)))
            if batches["step"]:
                self.batches.stream(batches, rollover=self.max_batch_points)
            if epochs["epoch"]:
                self.epochs.stream(epochs)
            self._last_flush = time.monotonic()

    @property
    def data(self) -> dict:
        """Kernel-side copies of the plotted columns: ``{"epochs": {...}, "batches": {...}}``."""
        return {"epochs": {k: list(v) for k, v in self.epochs.data.items()},
                "batches": {k: list(v) for k, v in self.batches.data.items()}}

    # ------------------------------------------------------------------------------------------
    def to_matplotlib(self):
        """The same curves as a static matplotlib Figure (for papermill/nbconvert and reports)."""
        from matplotlib.figure import Figure

        self.flush()
        d = self.data
        fig = Figure(figsize=(7, 3.2), dpi=100)
        ax = fig.add_subplot(111)
        e, b = d["epochs"], d["batches"]
        if b["step"]:
            ax.plot(b["step"], b["smoothed"], color="#9ecae1", lw=1, label="train (per batch, smoothed)")
        if e["epoch"]:
            ax.plot(e["epoch"], e["train_loss"], "o-", color="#1f77b4", lw=2, ms=3, label="train")
            ax.plot(e["epoch"], e["val_loss"], "o-", color="#ff7f0e", lw=2, ms=3, label="val")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_title(self.title)
        ax2 = ax.twinx()
        if e["epoch"]:
            ax2.plot(e["epoch"], e["val_miou"], "--", color="#2ca02c", lw=2, label="val mIoU")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("val mIoU")
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        if lines[0] or lines2[0]:
            ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper right", fontsize=8)
        fig.tight_layout()
        return fig

    def show_static(self, path=None):
        """Display the curves as a PNG in the notebook output (saved with it) and optionally to ``path``.

        Returns
        -------
        matplotlib.figure.Figure
        """
        fig = self.to_matplotlib()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        if path is not None:
            from pixlab._atomic import atomic_write

            with atomic_write(path) as f:
                f.write(buf.getvalue())
        try:
            from IPython import get_ipython
            from IPython.display import Image, display

            if get_ipython() is not None:
                display(Image(data=buf.getvalue(), format="png"))
        except ImportError:
            pass
        return fig
