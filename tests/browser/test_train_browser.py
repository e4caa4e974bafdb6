"""Notebook 02 in real JupyterLab + Chromium: the form, Start, the live Bokeh loss plot, Cancel.

The real ``notebooks/02_train.ipynb`` with injected parameters for a tiny network; epochs and the time
limit are then typed into the form in the browser. The loss plot is read inside the page from the
BokehJS document (the ColumnDataSource lengths the browser actually holds), and compared with the
kernel-side data (jupyter_bokeh 4.1 echo bug: the kernel used to hold twice the browser's points).
"""

from __future__ import annotations

import json
import re
import time

import pytest

from labtools import REPO, Notebook, poll

CLASSES = ["background", "nuclei"]
EPOCHS, TIME_LIMIT = 500, 240  # typed into the form; Cancel stops training long before either

# Lengths of the loss plot's data sources as BokehJS holds them in the page: epochs (the source with
# a val_miou column) and batches (the one with a smoothed column), in the newest document that has them.
BOKEH_LENGTHS = """() => {
  if (!window.Bokeh || !Bokeh.documents) return null;
  let found = null;
  for (const doc of Bokeh.documents) {
    const res = {};
    for (const m of doc.all_models) {
      const d = m.data;
      if (d === undefined || d === null || typeof d !== 'object') continue;
      const keys = d instanceof Map ? [...d.keys()] : Object.keys(d);
      const col = k => (d instanceof Map ? d.get(k) : d[k]);
      if (keys.includes('val_miou')) res.epochs = col('epoch').length;
      else if (keys.includes('smoothed')) res.batches = col('step').length;
    }
    if (res.epochs !== undefined && res.batches !== undefined) found = res;
  }
  return found;
}"""


def _field(page, name: str):
    label = page.locator("label.widget-label", has_text=re.compile(rf"^{re.escape(name)}$"))
    return page.locator(".widget-inline-hbox", has=label).locator("input").first


def test_form_start_live_loss_plot_cancel_saves_the_best_model(lab, page):
    import pixlab
    from pixlab.datasets import strokes_from_mask, synthetic_fluorescence
    from pixlab.image.io import write_ome_tiff
    from pixlab.app.runner import Project

    # A project as notebook 01 leaves it: one image and its brush labels (+ class names) in labels/.
    img, truth = synthetic_fluorescence(shape=(128, 128), n_channels=2, n_nuclei=12, seed=1)
    image = lab.root / "nuclei.ome.tif"
    write_ome_tiff(image, img.read(), channel_names=img.channel_names)
    run_dir = lab.root / "train-run"
    project = Project(run_dir)
    project.set_images([image])
    session = project.session(CLASSES, autosave=False)
    session.set_labels(strokes_from_mask(truth, strokes_per_class=6, radius=2, length=(6, 12), seed=1))
    session.close()
    params = {"run_dir": str(run_dir), "architecture": "tiny_unet", "pretrained": False, "tile_size": 64,
              "batch_size": 4, "recipe": "standard", "device": "cpu", "epochs": 3, "time_limit_s": 30.0,
              "train_overrides": {"patches_per_epoch": 8, "early_stopping": False}}
    lab.add_notebook(REPO / "notebooks" / "02_train.ipynb", "02_train.ipynb", params)
    nb = Notebook(lab, page, "02_train.ipynb", "train").open()
    try:
        nb.run_all()
        assert nb.errors() == []
        start = page.locator("button", has_text="Start training").first
        start.wait_for(state="visible")

        # The form: open its "training" section, type epochs and the time limit.
        page.locator(".jupyter-widget-Collapse-header", has_text=re.compile(r"^\s*training\s*$")).first.click()
        epochs = _field(page, "epochs")
        epochs.wait_for(state="visible")
        epochs.fill(str(EPOCHS))
        epochs.press("Tab")
        limit = _field(page, "time_limit_s")
        limit.fill(str(TIME_LIMIT))
        limit.press("Tab")
        poll(lambda: nb.eval("[form.config.epochs, form.config.time_limit_s]") == [EPOCHS, TIME_LIMIT],
              timeout=20, what="the typed values to reach the form's config")
        limit.scroll_into_view_if_needed()
        nb.screenshot("form-filled")

        start.scroll_into_view_if_needed()
        start.click()
        poll(lambda: nb.eval("panel.running"), timeout=30, what="training to start")
        # The plot gains points while training runs.
        first = poll(lambda: (n := page.evaluate(BOKEH_LENGTHS)) and n["epochs"] >= 1 and n, timeout=120,
                      what="a first epoch point in the browser's loss plot")
        start.scroll_into_view_if_needed()
        nb.screenshot("training-live-plot")
        later = poll(lambda: (n := page.evaluate(BOKEH_LENGTHS)) and n["epochs"] > first["epochs"]
                      and n["batches"] > first["batches"] and n, timeout=120, what="more points in the loss plot")
        assert nb.eval("panel.running"), "training ended on its own; the test needs it running to cancel it"
        nb.screenshot("training-more-points")

        page.locator("button", has_text="Cancel").first.click()
        poll(lambda: nb.eval("not panel.running and panel.model is not None"), timeout=120,
              what="training to stop after Cancel")
        page.get_by_text(re.compile(r"finished \(cancelled\)")).first.wait_for(state="visible", timeout=30_000)
        start.scroll_into_view_if_needed()
        nb.screenshot("cancelled")

        # The best model so far was saved as a bundle in the project.
        model_dir = run_dir / "model"
        assert sorted(p.name for p in model_dir.iterdir()) == ["metadata.json", "model.safetensors"]
        meta = json.loads((model_dir / "metadata.json").read_text())
        assert meta["stop_reason"] == "cancelled"
        assert meta["config"]["epochs"] == EPOCHS and meta["config"]["time_limit_s"] == TIME_LIMIT
        n_epochs = len(meta["history"])
        assert later["epochs"] <= n_epochs < EPOCHS
        model = pixlab.load_model(model_dir)
        assert model.metadata["best_epoch"] is not None and model.class_names == CLASSES

        # jupyter_bokeh echo fix: once the last stream has arrived, kernel and browser hold the same points.
        kernel = nb.eval("{k: len(v[next(iter(v))]) for k, v in panel.plot.data.items()}")
        assert kernel["epochs"] == n_epochs
        poll(lambda: page.evaluate(BOKEH_LENGTHS) == kernel, timeout=30,
              what=f"browser lengths {page.evaluate(BOKEH_LENGTHS)} to equal kernel lengths {kernel}")
        time.sleep(1.0)  # any late echo would arrive now and double the kernel's data
        assert nb.eval("{k: len(v[next(iter(v))]) for k, v in panel.plot.data.items()}") == kernel
        assert page.evaluate(BOKEH_LENGTHS) == kernel
    finally:
        nb.close()


def test_the_test_server_listens_on_loopback_only_and_requires_its_token(lab):
    import urllib.error

    import psutil

    with pytest.raises(urllib.error.HTTPError) as denied:
        lab.api("contents", token="")
    assert denied.value.code == 403
    with pytest.raises(urllib.error.HTTPError):
        lab.api("contents", token="0" * 48)
    assert isinstance(lab.api("contents"), dict)
    listening = [c.laddr for c in psutil.Process(lab.proc.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening and all(a.ip == "127.0.0.1" for a in listening), listening
