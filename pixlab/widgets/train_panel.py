"""TrainPanel: start/cancel training in a background thread, with a live loss plot and progress."""

from __future__ import annotations

import html
import threading
import time
from pathlib import Path

import ipywidgets as widgets

from pixlab.widgets.kernel_loop import call_in_kernel
from pixlab.widgets.lossplot import LossPlot, ensure_bokehjs
from pixlab.widgets.thread_warnings import collect_warnings

__all__ = ["TrainPanel"]

_STATUS_INTERVAL = 0.5  # s between progress-text updates during an epoch


def _error(text: str) -> str:
    return f"<span style='color:#b00'>{html.escape(str(text))}</span>"


def _note(text: str) -> str:
    return f"<span style='color:#333'>{html.escape(str(text))}</span>"


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _resolution_html(notes) -> str:
    """The automatic settings of a run, folded under the result (every automatic choice is shown)."""
    if not notes:
        return ""
    rows = "".join(f"<li><b>{html.escape(n['field'])}</b>: {html.escape(repr(n['value']))} → "
                   f"{html.escape(repr(n['resolved']))} ({html.escape(n['reason'])})</li>" for n in notes)
    return f"<details><summary>automatic settings ({len(notes)})</summary><ul>{rows}</ul></details>"


class TrainPanel(widgets.VBox):
    """Train a model from the annotations without blocking the kernel.

    Parameters
    ----------
    source : AnnotationSession, BrushAnnotator or list of (image, labels)
        What to train on: a session's (or annotator's) labelled images, or explicit samples.
    class_names, colours : optional
        Needed with explicit samples (a session provides its own).
    form : TrainForm, optional
        Where the configuration comes from; else ``config``.
    config : TrainConfig, optional
        Used when there is no form (default ``TrainConfig()``).
    output_dir : path, optional
        The final model is saved there (replaced atomically).
    checkpoint_dir : path, optional
        Passed to :func:`pixlab.train` (resumable ``last/`` and ``best/`` checkpoints).
    channel_picker : ChannelPicker, optional
        Its normalization switch is linked to the form's ``per_channel`` field (default: the
        annotator's picker when ``source`` is a BrushAnnotator).

    Attributes
    ----------
    model : pixlab.Model or None
        The trained model (the best epoch), once training ended.
    error : Exception or None
        What made the last run fail (the message area shows it; no traceback is printed).
    plot : LossPlot
    progress : ipywidgets.FloatProgress
    status, message : ipywidgets.HTML
    """

    def __init__(self, source=None, *, class_names=None, colours=None, form=None, config=None, output_dir=None,
                 checkpoint_dir=None, channel_picker=None):
        from pixlab.annotation import AnnotationSession

        self.annotator = None
        self.session = None
        self.samples = None
        if isinstance(source, AnnotationSession):
            self.session = source
        elif hasattr(source, "session") and isinstance(source.session, AnnotationSession):
            self.annotator, self.session = source, source.session
        elif source is not None:
            self.samples = list(source)
        self.class_names = class_names
        self.colours = colours
        self.form = form
        self.config = config
        self.checkpoint_dir = checkpoint_dir
        self.model = None
        self.error = None
        self.warnings: list[str] = []
        #: The automatic choices of the last run (TrainConfig.resolution), shown with the result.
        self.resolution: list[dict] = []
        self._thread = None
        self._cancel = threading.Event()
        self._t_start = None
        self._steps = None
        self._epochs = None
        self._best = None
        self._last_status = 0.0
        #: The end of the last run, (model or None, message), until _finish shows it.
        self._pending = None
        self._finish_lock = threading.Lock()

        self.output_dir = widgets.Text(value="" if output_dir is None else str(output_dir),
                                       placeholder="folder for the trained model", description="Save to",
                                       layout=widgets.Layout(width="420px"))
        self.start_button = widgets.Button(description="Start training", icon="play", button_style="success")
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", button_style="warning",
                                            disabled=True,
                                            tooltip="stop after the current batch; the best model so far is kept")
        self.start_button.on_click(lambda _: self.start())
        self.cancel_button.on_click(lambda _: self.cancel())
        self.progress = widgets.FloatProgress(value=0, min=0, max=1, description="epoch",
                                              layout=widgets.Layout(width="420px"))
        self.status = widgets.HTML()
        self.message = widgets.HTML()
        self.plot = LossPlot()
        channel_picker = channel_picker or getattr(self.annotator, "channel_picker", None)
        if channel_picker is not None and form is not None and "per_channel" in form.controls:
            widgets.link((channel_picker.normalization, "value"), (form.controls["per_channel"], "value"))
        super().__init__([widgets.HBox([self.start_button, self.cancel_button, self.output_dir]),
                          widgets.HBox([self.progress, self.status]), self.plot, self.message])

    def _repr_mimebundle_(self, **kwargs):
        ensure_bokehjs()
        return super()._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether a training run is in progress."""
        return self._thread is not None and self._thread.is_alive()

    def _resolve_config(self):
        from pixlab.training.config import TrainConfig

        if self.form is not None:
            return self.form.config  # ValueError with the field's message when invalid
        return self.config if self.config is not None else TrainConfig()

    def _resolve_samples(self):
        if self.session is not None:
            return self.session.training_samples(), list(self.session.class_names), list(self.session.colours)
        if not self.samples:
            raise ValueError("nothing to train on: give the panel an annotation session, a BrushAnnotator "
                             "or a list of (image, labels) samples")
        return self.samples, self.class_names, self.colours

    def start(self):
        """Start training in a background thread (returns it, or None with a message on bad input)."""
        if self.running:
            self.message.value = _error("training is already running; cancel it or wait for it to finish")
            return None
        try:
            cfg = self._resolve_config()
            samples, names, colours = self._resolve_samples()
        except (ValueError, OSError) as e:  # OSError: labels could not be saved (training_samples)
            self.message.value = _error(str(e))
            return None
        self._cancel.clear()
        with self._finish_lock:
            self._pending = None  # a previous run not shown yet is superseded by this one
        self.model, self.error, self.warnings = None, None, []
        self._best, self._steps, self._t_start = None, None, time.monotonic()
        self._epochs = cfg.epochs
        self.plot.reset()
        self.progress.max, self.progress.value = max(1, cfg.epochs), 0
        self.message.value = _note(f"training on {len(samples)} image(s)…")
        self.start_button.disabled, self.cancel_button.disabled = True, False
        self._thread = threading.Thread(target=self._worker, args=(samples, cfg, names, colours),
                                        name="pixlab-train", daemon=True)
        self._thread.start()
        return self._thread

    def cancel(self) -> None:
        """Stop training after the current batch; the best model so far is kept (and saved)."""
        if self.running:
            self._cancel.set()
            self.message.value = _note("stopping after the current batch; the best model so far is kept…")

    def wait(self, timeout: float | None = None):
        """Wait for the run to end; returns the model (None if it failed or is still running)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.model

    def run(self, blocking: bool = True):
        """Train; with ``blocking=True`` (papermill, scripts) wait, then display the static loss figure.

        Returns
        -------
        pixlab.Model, threading.Thread or None
            Blocking: the model (None if training could not start or failed; ``message``/``error`` say
            why). Non-blocking: the training thread (None if it could not start).
        """
        thread = self.start()
        if thread is None or not blocking:
            return None if thread is None else thread
        model = self.wait()
        # In a kernel the IO loop is busy with this cell until it returns: show the end of the run
        # now (at once on the main thread), so the message, the overlay and the curves are complete.
        call_in_kernel(self._finish)
        self.plot.show_static()
        return model

    # ------------------------------------------------------------------------------------------
    def _worker(self, samples, cfg, names, colours) -> None:
        from pixlab.training.preparation import TrainingCancelled
        from pixlab.training.trainer import train

        model, text = None, None
        try:
            # This thread's warnings land in the message area (e.g. "class 'x' has 4 strokes") instead
            # of as stderr noise under the widget; other threads' warnings are untouched.
            with collect_warnings() as caught:
                model = train(samples, cfg, class_names=names, colours=colours,
                              callbacks=[lambda ev: call_in_kernel(self._on_event, ev), self.plot],
                              cancel=self._cancel, checkpoint_dir=self.checkpoint_dir, progress=False)
            self.warnings = list(dict.fromkeys(str(w) for w in caught))
            out = self.output_dir.value.strip()
            if out:
                model.save(Path(out), overwrite=True)  # the panel's output folder, retrained in place
            # From the model, not from the "start" event: in a kernel that event's handler may not
            # have run yet on the IO loop when this text is shown.
            self.resolution = list(model.metadata.get("resolution") or self.resolution)
            stop = model.metadata.get("stop_reason", "done")
            best = model.metadata.get("best_epoch")
            text = f"finished ({stop}); best epoch {None if best is None else best + 1}"
            if out:
                text += f"; model saved to {out}"
            warn = "".join(f"<li>{html.escape(w)}</li>" for w in self.warnings)
            text = (_note(text) + (f"<ul style='color:#a60'>{warn}</ul>" if warn else "")
                    + _resolution_html(self.resolution))
            self.model = model  # before the thread ends: wait() returns it
        except TrainingCancelled:  # Cancel before the first step: not a failure, but there is no model
            model = None
            text = _note("cancelled before the first training step (while the run was being prepared): "
                         "no model was trained")
        except Exception as e:  # shown in the panel, never as a traceback under the cell
            model, self.error = None, e
            text = _error(f"training failed: {e}")
        finally:
            # Plain attributes are set here; every widget update (message, buttons, plot, the
            # annotator's overlay) goes to the kernel's IO loop: comm messages from this thread race
            # the kernel's own (shared/STYLE.md). Outside a kernel _finish runs at once, in this thread.
            with self._finish_lock:
                self._pending = (model, text)
            call_in_kernel(self._finish)

    def _finish(self) -> None:
        """Show the end of a run: the model on the annotator/session, the message, the buttons.

        Runs on the kernel's IO loop (or on the caller's thread outside a kernel). The outcome is taken
        once: a blocking :meth:`run` applies it before returning, and the queued call finds nothing.
        """
        with self._finish_lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        model, text = pending
        try:
            if model is not None:
                target = self.annotator if self.annotator is not None else self.session
                if target is not None:
                    target.set_model(model)
        except Exception as e:  # the model is trained (and saved) but cannot be shown
            self.error = e
            text = _error(f"training failed: {e}")
        finally:
            if text is not None:
                self.message.value = text
            self.plot.flush()
            self.start_button.disabled, self.cancel_button.disabled = False, True

    def _on_event(self, ev: dict) -> None:
        kind = ev.get("event")
        now = time.monotonic()
        if kind == "prepare":  # before the first step (forest pseudo-labels can take a while): say what runs
            self.status.value = _note(f"preparing: {ev.get('phase')} · elapsed {_clock(ev.get('elapsed_s', 0))}")
            return
        if kind == "start":
            self.resolution = list(ev.get("resolution") or [])
            self._epochs = ev.get("epochs", self._epochs)
            self._steps = ev.get("steps_per_epoch")
            self.progress.max = max(1, self._epochs or 1)
            return
        if kind == "batch":
            if now - self._last_status < _STATUS_INTERVAL:
                return
            done = ev["epoch"] + (ev["batch"] + 1) / max(1, self._steps or 1)
        elif kind == "epoch":
            done = ev["epoch"] + 1
            if ev.get("best"):
                self._best = (ev["epoch"] + 1, ev.get("val_loss"), ev.get("val_miou"))
        elif kind == "end":
            self.progress.value = self.progress.max if ev.get("stop_reason") == "epochs" else self.progress.value
            return
        else:
            return
        self._last_status = now
        self.progress.value = min(self.progress.max, done)
        elapsed = ev.get("elapsed_s", now - self._t_start)
        eta = elapsed / max(done, 1e-9) * (self.progress.max - done)
        text = f"epoch {min(int(done) + 1, int(self.progress.max))}/{int(self.progress.max)} · " \
               f"elapsed {_clock(elapsed)} · ETA {_clock(eta)}"
        if self._best is not None:
            ep, vl, vm = self._best
            text += f" · best: epoch {ep} (val loss {vl:.3f}, mIoU {vm:.3f})"
        self.status.value = _note(text)
