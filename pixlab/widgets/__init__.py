"""Jupyter widgets: thin views over pixlab's core (JupyterLab 4 / ipywidgets 8).

- :class:`ChannelPicker` - channels, display ranges and colours, composite preview.
- :class:`BrushAnnotator` - brush, polygon, box and point labels with zoom/pan, undo, autosave, an
  instant preview and "accept the prediction" (:class:`ShapeTools`); its :class:`GuidePanel` shows
  where to brush next, diagnostic maps and possible label mistakes. :class:`PolygonTool` offers
  ipyannotations' polygon/box/point annotators on a snapshot of the view.
- :class:`TrainForm` - every TrainConfig field, presets, advisor, profiles.
- :class:`LossPlot` - live Bokeh training curves (static matplotlib copy for papermill).
- :class:`TrainPanel` - start/cancel training in the background with progress and the loss plot.

Every handler is a plain method, so each widget can be driven from Python without a browser.
"""

from pixlab.widgets.brush import BrushAnnotator, PolygonTool
from pixlab.widgets.channels import ChannelPicker
from pixlab.widgets.form import TrainForm
from pixlab.widgets.guide import GuidePanel
from pixlab.widgets.lossplot import LossPlot, ensure_bokehjs
from pixlab.widgets.shape_tools import ShapeTools
from pixlab.widgets.train_panel import TrainPanel

__all__ = ["ChannelPicker", "BrushAnnotator", "GuidePanel", "PolygonTool", "ShapeTools", "TrainForm", "LossPlot", "TrainPanel",
           "ensure_bokehjs"]
