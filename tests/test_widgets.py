"""Widgets driven from Python, the way ipycanvas / ipyevents / button clicks would drive them."""

import json
import threading

import numpy as np
import pytest

from pixlab.annotation import AnnotationSession
from pixlab.training.config import PRESETS, TrainConfig, advise, field_info
from pixlab.image.io import Image
from pixlab.widgets import BrushAnnotator, ChannelPicker, LossPlot, TrainForm, TrainPanel


def _rgb(shape=(60, 80), seed=0):
    return (np.random.default_rng(seed).random(shape + (3,)) * 255).astype(np.uint8)


def _record(layer):
    """Replace a canvas layer's put_image_data with a recorder of (shape, x, y)."""
    calls = []
    layer.put_image_data = lambda data, x=0, y=0: calls.append((data.shape, x, y))
    return calls


def _annotator(image=None, **kw):
    kw.setdefault("canvas_size", (80, 60))
    kw.setdefault("preview", False)
    kw.setdefault("channel_picker", False)
    kw.setdefault("autosave", False)
    return BrushAnnotator(_rgb() if image is None else image, ["bg", "fg", "other"], **kw)


# ---------------------------------------------------------------------------------------------- brush
def test_mouse_drag_paints_the_stroke_and_draws_only_each_segment():
    a = _annotator(brush_size=3)
    assert a.view.scale == 1 and a.view.canvas_rect() == (0, 60, 0, 80)
    calls = _record(a.canvas[2])
    a.current_class = 2
    a.on_mouse_down(10, 20)
    for x in range(11, 41):
        a.on_mouse_move(x, 20)
    a.on_mouse_up(40, 20)
    lab = a.session.labels
    assert (lab[20, 10:41] == 2).all() and lab[20, 45] == 0 and lab[25, 20] == 0
    # Every event sent a small patch around its segment, never the whole label layer.
    assert len(calls) == 31
    assert all(shape[0] <= 4 and shape[1] <= 5 for shape, _, _ in calls[1:])
    assert len(a.stroke_times) == 30
    # The whole drag is one undo step.
    a.undo()
    assert not lab.any()
    a.redo()
    assert (lab[20, 10:41] == 2).all()


def test_zoomed_in_painting_hits_the_full_resolution_pixel_under_the_pointer():
    img = _rgb((600, 800))
    a = _annotator(img, brush_size=1)
    assert a.view.scale == 10                          # whole image on an 80x60 canvas
    a.zoom(40, at=(30, 40))                            # 4 canvas pixels per image pixel
    assert a.view.scale == pytest.approx(0.25)
    y, x = a.view.canvas_to_image(17, 23)
    a.on_mouse_down(23, 17)
    a.on_mouse_up(23, 17)
    lab = a.session.labels
    assert lab.shape == (600, 800)
    assert np.argwhere(lab).tolist() == [[int(np.floor(y + 0.5)), int(np.floor(x + 0.5))]]


def test_zoomed_out_brush_keeps_its_screen_size_and_paints_at_full_resolution():
    a = _annotator(_rgb((600, 800)), brush_size=4)
    assert a.view.scale == 10 and a.radius == 20       # 4 screen px = 40 image px
    a.on_mouse_down(40, 30)
    a.on_mouse_up(40, 30)
    y, x = a.view.canvas_to_image(30, 40)
    yy, xx = np.mgrid[:600, :800]
    np.testing.assert_array_equal(a.session.labels == 1, (yy - y) ** 2 + (xx - x) ** 2 <= 400)


def test_brushing_outside_the_image_shows_a_message_and_changes_nothing():
    a = _annotator(_rgb((30, 80)))                     # letterboxed: rows 0-14 of the canvas are not image
    a.on_mouse_down(40, 2)
    a.on_mouse_move(50, 3)
    a.on_mouse_up(50, 3)
    assert not a.session.labels.any()
    assert "outside image" in a.message.value
    assert not a.session.can_undo


def test_eraser_pan_and_keyboard_shortcuts():
    a = _annotator(brush_size=5)
    a.handle_event({"type": "keydown", "key": "2"})
    assert a.current_class == 2
    a.on_mouse_down(20, 20)
    a.on_mouse_up(20, 20)
    assert a.session.labels[20, 20] == 2
    a.handle_event({"type": "keydown", "key": "e"})
    assert a.tool.value == "eraser"
    a.on_mouse_down(20, 20)
    a.on_mouse_up(20, 20)
    assert a.session.labels[20, 20] == 0
    a.handle_event({"type": "keydown", "key": "z", "ctrlKey": True})
    assert a.session.labels[20, 20] == 2
    a.handle_event({"type": "keydown", "key": "y", "ctrlKey": True})
    assert a.session.labels[20, 20] == 0
    a.handle_event({"type": "keydown", "key": "Z", "ctrlKey": True, "shiftKey": False})
    a.handle_event({"type": "keydown", "key": "z", "metaKey": True, "shiftKey": True})   # redo on a Mac
    assert a.session.labels[20, 20] == 0
    a.handle_event({"type": "keydown", "key": "b"})
    assert a.tool.value == "brush"
    a.handle_event({"type": "keydown", "key": "9"})     # no class 9: ignored
    assert a.current_class == 2
    size = a.brush_size.value
    a.handle_event({"type": "keydown", "key": "]"})
    assert a.brush_size.value > size
    a.handle_event({"type": "keydown", "key": "+"})
    assert a.view.scale == pytest.approx(0.5)
    a.handle_event({"type": "keydown", "key": "0"})
    assert a.view.scale == 1
    a.handle_event({"type": "wheel", "deltaY": -100, "relativeX": 10, "relativeY": 10})
    assert a.view.scale < 1
    a.handle_event({"type": "keydown", "key": "p"})
    assert a.tool.value == "pan"
    before = a.view.canvas_to_image(30, 40)
    a.on_mouse_down(40, 30)
    a.on_mouse_move(50, 35)
    a.on_mouse_up(50, 35)
    assert a.view.canvas_to_image(35, 50) == pytest.approx(before)   # the grabbed point followed the mouse
    assert a.session.labels[20, 20] == 0               # panning does not paint


def test_class_editing_through_the_widget_and_deletion_refused_with_a_message():
    a = _annotator()
    a.class_name.value = "debris"
    a.class_colour.value = "#123456"
    a.add_class(colour="#123456")
    assert a.session.class_names[-1] == "debris" and a.current_class == 4
    assert [o[1] for o in a.class_select.options] == [1, 2, 3, 4]
    a.rename_class("dust")
    a.recolour_class("#ff0000")
    assert a.session.class_names[3] == "dust" and a.session.colours[3] == [255, 0, 0]
    a.on_mouse_down(10, 10)
    a.on_mouse_up(10, 10)
    a.delete_class()                                   # default: refuse, pixels exist
    assert "dust" in a.session.class_names and "migrate_to" in a.message.value
    a.delete_mode.value = 1                            # move them to "bg"
    a.delete_class()
    assert a.session.class_names == ["bg", "fg", "other"] and a.session.labels[10, 10] == 1
    a.add_class("bg")                                  # duplicate: message, no exception
    assert "already exists" in a.message.value


def test_counts_table_and_warnings_update_after_strokes():
    a = _annotator(brush_size=3)
    a.on_mouse_down(10, 10)
    a.on_mouse_up(10, 10)
    assert "1. bg" in a.counts.value and "strokes" in a.counts.value
    assert "the guide recommends at least 15" in a.counts.value
    calls = _record(a.canvas[2])
    imported = np.zeros((60, 80), np.uint8)
    imported[30:40, 30:50] = 3
    a.session.set_labels(imported)                     # e.g. from QuPath GeoJSON: the view follows
    assert calls and "<td align='right'>200</td>" in a.counts.value


def test_image_switcher_and_a_mismatched_labels_file(tmp_path):
    from PIL import Image as PILImage

    from pixlab.labels.masks import save_labels

    PILImage.fromarray(_rgb((40, 50), 1)).save(tmp_path / "one.png")
    PILImage.fromarray(_rgb((30, 20), 2)).save(tmp_path / "two.png")
    PILImage.fromarray(_rgb((30, 20), 3)).save(tmp_path / "three.png")
    (tmp_path / "labels").mkdir()
    save_labels(tmp_path / "labels" / "three.labels.png", np.zeros((5, 5), np.uint8))
    a = BrushAnnotator(tmp_path, ["bg", "fg"], canvas_size=(100, 80), preview=False, channel_picker=True)
    assert a.session.names == ["one", "three", "two"]
    assert "three" in a.counts.value and "shape (5, 5)" in a.counts.value    # reported up front
    a.on_mouse_down(50, 40)
    a.on_mouse_up(50, 40)
    a.select_image("two")
    assert a.session.index == 2 and a.session.labels.shape == (30, 20) and a.view.image_shape == (30, 20)
    a.select_image("three")                            # wrong-shaped labels file: message, stay on "two"
    assert a.session.index == 2 and a.image_select.value == 2
    assert "shape (5, 5)" in a.message.value
    a.session.select("one")                            # switching from Python updates the widget too
    assert a.image_select.value == 0 and a.view.image_shape == (40, 50)
    a.session.flush()
    again = BrushAnnotator(tmp_path / "one.png", canvas_size=(100, 80), preview=False, channel_picker=False)
    np.testing.assert_array_equal(again.session.labels, a.session.labels_of("one"))
    assert again.session.class_names == ["bg", "fg"]


def test_preview_overlay_is_drawn_after_strokes(fluo_sample):
    img, labels, truth, names = fluo_sample
    a = BrushAnnotator(img, names, canvas_size=(img.shape[2], img.shape[1]), preview=True,
                       channel_picker=True, autosave=False)
    calls = _record(a.canvas[1])
    a.session.set_labels(labels)                      # most strokes set directly, the last one by mouse
    ys, xs = np.nonzero(labels == 2)
    a.current_class = 2
    a.on_mouse_down(xs[0], ys[0])
    a.on_mouse_up(xs[0], ys[0])
    result = a.wait_preview()
    assert result.probs is not None and result.source == "features"
    assert calls and calls[-1][0] == (img.shape[1], img.shape[2], 4)
    assert "preview (features)" in a.status.value

    class FakeModel:
        def predict(self, image):
            return np.stack([np.zeros(image.shape[1:], np.float32), np.ones(image.shape[1:], np.float32)])

    a.set_model(FakeModel())
    assert a.preview_source.value == "model" and not a.preview_source.disabled
    assert a.wait_preview().source == "model"
    a.preview_source.value = "features"
    assert a.wait_preview().source == "features"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside ipyannotations 0.5.1
def test_polygon_tool_fills_polygons_drawn_with_ipyannotations():
    from ipyevents import Event

    from pixlab.widgets import PolygonTool

    a = _annotator()
    tool = PolygonTool(a)        # ipyannotations is part of pixlab[lab]: without it this fails, never skips
    assert not any(isinstance(c, Event) for c in tool.polygons.children)   # no view-less widget in the layout
    n = tool.submit([{"type": "polygon", "label": "fg", "points": [(10, 10), (30, 10), (30, 20), (10, 20)]}])
    assert n == 1 and a.session.labels[15, 20] == 2 and a.session.labels[5, 5] == 0
    a.undo()
    assert not a.session.labels.any()


# ---------------------------------------------------------------------------------------------- channels
def test_channel_picker_with_many_channels_drives_the_session():
    data = np.random.default_rng(0).integers(0, 1000, (42, 32, 32)).astype(np.uint16)
    img = Image(data, ["DAPI"] + [f"m{k}" for k in range(41)])
    s = AnnotationSession(img, ["bg", "fg"], autosave=False)
    p = ChannelPicker(s, thumbnail_size=16)
    assert len(p.rows.children) == 42 and len(set(p.colour_pickers[c].value for c in range(42))) == 42
    assert p.colour_pickers[0].value == "#0000ff"
    seen = []
    p.on_change(lambda picker: seen.append(picker.selected))
    p.select(["DAPI", "m3"])
    assert p.selected == [0, 4] and s.channels == ["DAPI", "m3"] and seen[-1] == [0, 4]
    p.set_range("m3", 0, 10)
    m3 = [int(p.colour_pickers[4].value[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    lo, hi = p.ranges[0]
    expected = (np.clip(data[4] / 10, 0, 1)[..., None] * m3
                + np.clip((data[0] - lo) / (hi - lo), 0, 1)[..., None] * [0, 0, 1])
    np.testing.assert_allclose(p.composite(), np.rint(np.clip(expected, 0, 1) * 255), atol=1)
    p.normalization.value = False
    assert s.per_channel is False
    p.select([])
    assert "at least one channel" in p.message.value
    assert s.channels == ["DAPI", "m3"]                # an empty selection is not passed on


def test_channel_picker_shows_brightfield_as_rgb():
    rgb = _rgb((40, 40))
    p = ChannelPicker(rgb)
    assert p.ranges == [(0.0, 255.0)] * 3
    np.testing.assert_array_equal(p.composite(), rgb)


# ---------------------------------------------------------------------------------------------- form
def _other_value(info):
    """A valid non-default value for a field, chosen from its metadata alone."""
    name, default = info["name"], info["default"]
    special = {"freeze_blocks": 2, "class_weights": [1.0, 2.5], "fixed_range": [0, 4095],
               "channels": ["DAPI", 2], "weights_path": "/tmp/w.safetensors", "encoder": "resnet50",
               "device": "cpu", "version": default, "patches_per_epoch": 64, "time_limit_s": 120.0}
    if name in special:
        return special[name]
    if info.get("choices"):
        return next(c for c in info["choices"] if c != default)
    if isinstance(default, bool):
        return not default
    lo, hi = info.get("min"), info.get("max")
    if isinstance(default, int):
        return default + 1 if hi is None or default + 1 <= hi else default - 1
    if isinstance(default, float):
        mid = ((lo or 0.0) + (hi if hi is not None else (lo or 0.0) + 2.0)) / 2
        return mid if mid != default else (mid + (lo or 0.0)) / 2
    return default


def test_form_has_a_control_for_every_field_and_round_trips_every_value():
    form = TrainForm()
    assert set(form.controls) == {f["name"] for f in field_info()}
    assert form.config == TrainConfig()
    changes = {f["name"]: _other_value(f) for f in field_info()}
    changes["tile_size"] = 256
    target = TrainConfig.from_dict({**TrainConfig().to_dict(), **changes, "normalization": "fixed_range"})
    form.set_config(target)
    assert form.valid and form.config == target
    for name, value in changes.items():                # each field went through its own control
        assert getattr(form.config, name) == getattr(target, name), name
    # Typing into the controls (not set_config) gives the same result.
    form2 = TrainForm()
    for name, control in form2.controls.items():
        control.value = form.controls[name].value
    assert form2.config == target
    assert form.controls["epochs"].tooltip == next(f["help"] for f in field_info() if f["name"] == "epochs")


def test_new_config_fields_get_controls_without_form_code(monkeypatch):
    import pixlab.training.config as config

    extra = [{"name": "mixup", "type": "float", "default": 0.2, "help": "new knob", "group": "augmentation",
              "choices": None, "min": 0.0, "max": 1.0},
             {"name": "sampler", "type": "str", "default": "a", "help": "x", "group": "experimental",
              "choices": ("a", "b"), "min": None, "max": None}]
    monkeypatch.setattr(config, "field_info", lambda: field_info() + extra)
    form = TrainForm.__new__(TrainForm)
    try:
        TrainForm.__init__(form)
    except ValueError:
        pass  # the fake fields are unknown to TrainConfig itself; only the controls matter here
    assert form.controls["mixup"].value == 0.2 and form.controls["mixup"].tooltip == "new knob"
    assert list(form.controls["sampler"].options) == [("a", "a"), ("b", "b")]
    assert "experimental" in form.sections.titles


def test_invalid_values_show_a_message_next_to_the_field():
    form = TrainForm()
    form.controls["epochs"].value = 0
    assert not form.valid
    assert "epochs" in form.message.value and "below the minimum" in form.errors["epochs"].value
    assert form.errors["batch_size"].value == ""
    with pytest.raises(ValueError):
        form.config
    form.controls["epochs"].value = 5
    form.controls["tile_size"].value = "500"  # int or 'auto': a text field read as YAML
    assert "divisible by 32" in form.errors["tile_size"].value
    form.controls["tile_size"].value = "auto"
    form.controls["class_weights"].value = "[1, 2"
    assert "class_weights" in form.message.value and not form.valid
    form.controls["class_weights"].value = "{nuclei: 2}"
    assert form.valid and form.config.class_weights == {"nuclei": 2}


def test_presets_and_advisor_fill_the_form():
    form = TrainForm()
    form.preset.value = "transfer_large"
    cfg = form.config
    assert (cfg.encoder, cfg.batch_size, cfg.learning_rate) == ("resnet50", 16, 5e-4)
    for name, value in PRESETS["transfer_large"].items():
        assert getattr(cfg, name) == value
    form.controls["epochs"].value = 7                  # edited by hand: no longer that preset
    assert form.preset.value == ""
    reasons = form.advise("he", 100, 8, 3)
    want, why = advise("he", 100, 8, 3, 20.0, TrainConfig().replace(**{**PRESETS["transfer_large"], "epochs": 7}))
    assert form.config == want and reasons == why and "<li>" in form.reasons.value
    form.advise("telescope", 10)
    assert "image_type" in form.message.value


def test_profiles_save_and_load(tmp_path):
    form = TrainForm(TrainConfig(epochs=12, freeze_blocks=[0, 1], class_weights={"a": 2.0}))
    for suffix in (".json", ".yaml"):
        path = tmp_path / f"p{suffix}"
        assert form.save_profile(str(path))
        other = TrainForm()
        assert other.load_profile(str(path)) and other.config == form.config
    assert not form.load_profile(str(tmp_path / "missing.yaml"))
    assert "not found" in form.message.value
    (tmp_path / "bad.json").write_text(json.dumps({"epoch": 3}))
    assert not form.load_profile(str(tmp_path / "bad.json"))
    assert "did you mean" in form.message.value


# ---------------------------------------------------------------------------------------------- loss plot
def _events(n_epochs=3, steps=4):
    yield {"event": "start", "epochs": n_epochs, "steps_per_epoch": steps}
    for e in range(n_epochs):
        for b in range(steps):
            yield {"event": "batch", "epoch": e, "batch": b, "train_loss": 1.0 / (1 + e * steps + b)}
        yield {"event": "epoch", "epoch": e, "train_loss": 0.5 / (e + 1), "val_loss": 0.6 / (e + 1),
               "val_miou": 0.3 + 0.1 * e, "best": True}
    yield {"event": "end", "stop_reason": "epochs"}


def test_loss_plot_collects_every_point_and_throttles_streams(monkeypatch):
    from bokeh.models import ColumnDataSource

    plot = LossPlot(flush_interval=60)
    streams = []
    original = ColumnDataSource.stream

    def counting(source, data, rollover=None, **kw):
        if source is plot.batches:
            streams.append(len(data["step"]))
        return original(source, data, rollover, **kw)

    monkeypatch.setattr(ColumnDataSource, "stream", counting)
    for ev in _events(3, 4):
        assert plot(ev) is None                        # never stops training
    d = plot.data
    assert d["epochs"]["epoch"] == [1, 2, 3] and d["epochs"]["val_miou"] == pytest.approx([0.3, 0.4, 0.5])
    assert len(d["batches"]["step"]) == 12 and d["batches"]["step"][3] == 1.0
    assert streams == [4, 4, 4]                        # one stream per epoch, not one per batch
    s = d["batches"]["smoothed"]
    assert s[0] == 1.0 and d["batches"]["train_loss"][-1] < s[-1] < s[0]


def _echo(widget, source, data):
    """The message jupyter_bokeh's browser side sends back after applying a stream (ColumnsStreamed)."""
    content = {"event": "jsevent", "kind": "ColumnsStreamed", "model": {"id": source.id},
               "data": {"type": "map", "entries": [[k, list(v)] for k, v in data.items()]}, "rollover": None}
    widget._sync_model(widget, content, [])


def test_echoed_streams_do_not_double_the_kernel_data():
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure
    from jupyter_bokeh import BokehModel

    plot = LossPlot()
    for ev in _events(2, 2):
        plot(ev)
    row = {"epoch": [3], "train_loss": [0.1], "val_loss": [0.2], "val_miou": [0.9]}
    plot.epochs.stream(row)
    _echo(plot.bokeh, plot.epochs, row)
    assert len(plot.data["epochs"]["epoch"]) == 3      # kernel length == browser length
    # The same echo on a plain jupyter_bokeh widget doubles the data: the bug being worked around.
    src = ColumnDataSource({"x": []})
    fig = figure()
    fig.line("x", "x", source=src)
    plain = BokehModel(fig)
    src.stream({"x": [1]})
    _echo(plain, src, {"x": [1]})
    assert len(src.data["x"]) == 2


def test_static_figure_has_the_same_curves():
    plot = LossPlot()
    for ev in _events(3, 4):
        plot(ev)
    fig = plot.to_matplotlib()
    ax, ax2 = fig.axes
    lengths = sorted(len(line.get_xdata()) for line in ax.get_lines() + ax2.get_lines())
    assert lengths == [3, 3, 3, 12]


# ---------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run through the panel (module-wide: it is the slow part)."""
    from pixlab.datasets import strokes_from_mask, synthetic_fluorescence

    img, truth = synthetic_fluorescence(shape=(96, 96), n_channels=2, n_nuclei=8, seed=1)
    labels = strokes_from_mask(truth, strokes_per_class=4, radius=2, length=(6, 12), seed=1)
    out = tmp_path_factory.mktemp("panel") / "model"
    a = BrushAnnotator(img, ["background", "nuclei"], canvas_size=(96, 96), preview=False,
                       channel_picker=False, autosave=False)
    a.session.set_labels(labels)
    cfg = TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=64, epochs=2, batch_size=4,
                      patches_per_epoch=8, recipe="standard", device="cpu")
    form = TrainForm(cfg)
    panel = TrainPanel(a, form=form, output_dir=out)
    model = panel.run(blocking=True)
    return panel, model, out, a


def test_blocking_run_returns_and_saves_the_model_and_plots_every_epoch(trained):
    panel, model, out, annotator = trained
    assert panel.error is None, panel.message.value
    assert model is not None and (out / "metadata.json").is_file()
    assert len(panel.plot.data["epochs"]["epoch"]) == 2 and len(panel.plot.data["batches"]["step"]) == 4
    assert panel.progress.value == panel.progress.max == 2
    assert "finished" in panel.message.value and str(out) in panel.message.value
    assert not panel.start_button.disabled and panel.cancel_button.disabled
    assert annotator.session.model is model            # the DL overlay replaces the feature preview
    assert annotator.preview_source.value == "model"


def test_load_settings_from_the_trained_model(trained):
    _, model, out, _ = trained
    form = TrainForm()
    assert form.load_from_model(str(out))
    assert form.config.architecture == "tiny_unet" and form.config.tile_size == 64
    assert not form.load_from_model(str(out.parent / "nope"))
    assert "not found" in form.message.value


def test_cancel_stops_and_keeps_the_best_model(tmp_path, tiny_cfg, fluo_sample):
    img, labels, _, names = fluo_sample
    panel = TrainPanel([(img, labels)], class_names=names, config=tiny_cfg.replace(epochs=50),
                       output_dir=tmp_path / "m")
    seen = []

    def cancel_after_first_epoch(ev, _orig=panel._on_event):
        seen.append(ev["event"])
        _orig(ev)
        if ev["event"] == "epoch":
            panel.cancel()

    panel._on_event = cancel_after_first_epoch
    thread = panel.run(blocking=False)
    assert thread is not None
    model = panel.wait(120)
    assert not panel.running and model is not None
    assert model.metadata["stop_reason"] == "cancelled" and len(model.history) == 1
    assert (tmp_path / "m" / "metadata.json").is_file()
    assert seen.count("epoch") == 1


def test_cancel_while_preparing_says_so_and_leaves_no_model(tmp_path, tiny_cfg, fluo_sample):
    # Cancel pressed while the run is prepared (before any step): the panel says what happened, shows
    # the phase it was in, and reports no error and no model.
    img, labels, _, names = fluo_sample
    panel = TrainPanel([(img, labels)], class_names=names, config=tiny_cfg, output_dir=tmp_path / "m")
    phases = []

    def cancel_at_the_network(ev, _orig=panel._on_event):
        _orig(ev)
        if ev["event"] == "prepare":
            phases.append(panel.status.value)
            if ev["phase"] == "building the network":
                panel.cancel()

    panel._on_event = cancel_at_the_network
    assert panel.run(blocking=True) is None
    assert panel.model is None and panel.error is None
    assert "cancelled before the first training step" in panel.message.value
    assert "preparing: building the network" in phases[-1]
    assert not (tmp_path / "m").exists()
    assert panel.start_button.disabled is False and panel.cancel_button.disabled is True


def test_training_problems_are_messages_not_tracebacks(tiny_cfg, fluo_sample):
    img, labels, _, names = fluo_sample
    form = TrainForm(tiny_cfg)
    form.controls["epochs"].value = 0
    s = AnnotationSession(img, names, autosave=False)
    panel = TrainPanel(s, form=form)
    assert panel.run() is None and "epochs" in panel.message.value
    form.controls["epochs"].value = 1
    assert panel.run() is None and "no image has labels" in panel.message.value
    only_bg = np.where(labels == 1, 1, 0).astype(np.uint8)
    s.set_labels(only_bg)
    assert panel.run() is None
    assert "training failed" in panel.message.value and "nuclei" in panel.message.value
    assert isinstance(panel.error, ValueError)


class _FakeKernelLoop:
    """The kernel's IO loop as call_in_kernel sees it: callbacks queue up until the test runs them."""

    def __init__(self):
        self.calls = []

    def add_callback(self, fn, *args):
        self.calls.append((fn, args))

    def run_pending(self):
        while self.calls:
            fn, args = self.calls.pop(0)
            fn(*args)


def _panel_in_a_fake_kernel(monkeypatch, tiny_cfg, fluo_sample):
    """A panel on a session, with a fake kernel loop and a record of the thread of every widget update."""
    from pixlab.widgets import kernel_loop

    loop = _FakeKernelLoop()
    monkeypatch.setattr(kernel_loop, "_kernel_loop", lambda: loop)
    img, labels, _, names = fluo_sample
    s = AnnotationSession(img, names, autosave=False)
    s.set_labels(labels)
    panel = TrainPanel(s, config=tiny_cfg.replace(epochs=1))
    threads = []  # (what, thread name)
    for name in ("message", "status", "progress", "start_button", "cancel_button"):
        getattr(panel, name).observe(lambda ch, name=name: threads.append((name, threading.current_thread().name)))
    set_model, flush = s.set_model, panel.plot.flush
    s.set_model = lambda m: (threads.append(("set_model", threading.current_thread().name)), set_model(m))
    panel.plot.flush = lambda: (threads.append(("flush", threading.current_thread().name)), flush())
    return panel, s, loop, threads


def test_end_of_run_widget_updates_go_through_the_kernel_loop(monkeypatch, tiny_cfg, fluo_sample):
    panel, s, loop, threads = _panel_in_a_fake_kernel(monkeypatch, tiny_cfg, fluo_sample)
    thread = panel.run(blocking=False)
    model = panel.wait(120)
    assert not thread.is_alive() and model is not None and panel.model is model  # attributes: at once
    assert [t for t in threads if t[1] != "MainThread"] == []   # no widget touched from the worker
    assert "training on" in panel.message.value and panel.start_button.disabled  # not shown yet
    assert s.model is None
    loop.run_pending()                                         # the kernel's IO loop runs them
    assert "finished" in panel.message.value
    assert not panel.start_button.disabled and panel.cancel_button.disabled
    assert s.model is model and panel.progress.value == panel.progress.max
    assert {"message", "set_model", "flush", "start_button"} <= {what for what, _ in threads}
    assert [t for t in threads if t[1] != "MainThread"] == []


def test_blocking_run_in_a_kernel_shows_the_result_before_returning(monkeypatch, tiny_cfg, fluo_sample):
    panel, s, loop, threads = _panel_in_a_fake_kernel(monkeypatch, tiny_cfg, fluo_sample)
    model = panel.run(blocking=True)
    assert model is not None and s.model is model and "finished" in panel.message.value
    assert not panel.start_button.disabled
    loop.run_pending()                                         # the queued end of run finds nothing left
    assert [what for what, _ in threads].count("set_model") == 1
    assert [t for t in threads if t[1] != "MainThread"] == []
