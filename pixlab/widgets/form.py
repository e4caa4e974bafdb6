"""TrainForm: the hyperparameter form, generated from ``TrainConfig``'s field metadata.

Nothing here names a TrainConfig field: controls come from :func:`pixlab.training.config.field_info` (type,
default, help, group, choices), so a new field appears in the form without form code. Validation is
TrainConfig's own; its ValueError is shown next to the field it names.
"""

from __future__ import annotations

import html
import json
import re

import ipywidgets as widgets

from pixlab.training import config as _config

__all__ = ["TrainForm"]

_FIELD_IN_MESSAGE = re.compile(r"TrainConfig\.(\w+)")
_WIDE = {"description_width": "150px"}


def _error(text: str) -> str:
    return f"<span style='color:#b00'>{html.escape(str(text))}</span>"


def _allows_none(info: dict) -> bool:
    return "None" in str(info["type"]) or info["default"] is None


def _kind(info: dict) -> str:
    """How a field is edited: choice, bool, int, float, or text (parsed as YAML where the type is open)."""
    t = str(info["type"]).replace(" ", "")
    if info.get("choices"):
        return "choice"
    return {"bool": "bool", "int": "int", "float": "float", "str": "str"}.get(t, "text")


def _to_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value)


class TrainForm(widgets.VBox):
    """A form for every :class:`~pixlab.TrainConfig` field, with presets, an advisor and profiles.

    Parameters
    ----------
    config : TrainConfig, optional
        Initial values (default: the guide's first-run defaults).

    Attributes
    ----------
    controls : dict of str to widget
        One input per field, by field name.
    errors : dict of str to ipywidgets.HTML
        The inline message next to each field.
    message : ipywidgets.HTML
        The current validation or I/O message ("" when all is well).
    preset, image_type, n_tiles, vram_gb, n_channels, magnification : widgets
        Preset menu and advisor inputs.
    reasons : ipywidgets.HTML
        Why the advisor chose what it did.
    """

    def __init__(self, config=None):
        self.fields = {f["name"]: f for f in _config.field_info()}
        self.controls: dict[str, widgets.Widget] = {}
        self.errors: dict[str, widgets.HTML] = {}
        self._quiet = False
        self.message = widgets.HTML()
        groups: dict[str, list] = {g: [] for g in _config.GROUPS}
        for name, info in self.fields.items():
            control = self._make_control(info)
            control.observe(self._on_change, names="value")
            self.controls[name] = control
            self.errors[name] = widgets.HTML()
            groups.setdefault(info.get("group") or "advanced", []).append(
                widgets.HBox([control, self.errors[name]]))
        groups = {g: rows for g, rows in groups.items() if rows}
        self.sections = widgets.Accordion(children=[widgets.VBox(rows) for rows in groups.values()],
                                          titles=tuple(groups))
        self.sections.selected_index = 0

        # presets
        self.preset = widgets.Dropdown(options=[("(custom)", "")] + [(k, k) for k in _config.PRESETS],
                                       value="", description="Preset", style=_WIDE,
                                       tooltip="fill the form with one of the guide's presets")
        self.preset.observe(self._on_preset, names="value")

        # advisor
        self.image_type = widgets.Dropdown(options=list(_config.IMAGE_TYPES), value="fluorescence",
                                           description="Image type", style=_WIDE)
        self.n_tiles = widgets.IntText(value=100, description="Labelled tiles", style=_WIDE,
                                       tooltip="number of labelled training tiles at the chosen tile size")
        self.vram_gb = widgets.FloatText(value=0.0, description="GPU memory (GB)", style=_WIDE,
                                         tooltip="0 = no GPU (train on the CPU)")
        self.n_channels = widgets.IntText(value=0, description="Channels", style=_WIDE,
                                          tooltip="input channels; 0 = the usual count for the image type")
        self.magnification = widgets.FloatText(value=20.0, description="Magnification", style=_WIDE,
                                               tooltip="objective magnification (H&E: histology encoders "
                                               "were trained at ~20x)")
        self.advise_button = widgets.Button(description="Recommend", icon="magic",
                                            tooltip="fill the form following the guide's tables")
        self.advise_button.on_click(lambda _: self.advise())
        self.reasons = widgets.HTML()
        advisor = widgets.VBox([self.image_type, self.n_tiles, self.vram_gb, self.n_channels,
                                self.magnification, self.advise_button, self.reasons])

        # profiles
        self.profile_path = widgets.Text(placeholder="profile.yaml or .json", description="Profile",
                                         style=_WIDE)
        self.save_button = widgets.Button(description="Save", icon="save")
        self.load_button = widgets.Button(description="Load", icon="folder-open")
        self.model_path = widgets.Text(placeholder="model folder", description="Model", style=_WIDE)
        self.model_button = widgets.Button(description="Load settings from model",
                                           layout=widgets.Layout(width="auto"))
        self.save_button.on_click(lambda _: self.save_profile())
        self.load_button.on_click(lambda _: self.load_profile())
        self.model_button.on_click(lambda _: self.load_from_model())
        files = widgets.VBox([widgets.HBox([self.profile_path, self.save_button, self.load_button]),
                              widgets.HBox([self.model_path, self.model_button])])

        tools = widgets.Accordion(children=[advisor, files], titles=("Advisor", "Profiles"))
        tools.selected_index = None
        super().__init__([self.preset, tools, self.sections, self.message])
        self.set_config(config if config is not None else _config.TrainConfig())

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _make_control(info: dict):
        name, kind, value = info["name"], _kind(info), info["default"]
        common = dict(description=name, tooltip=info.get("help") or "", style=_WIDE)
        if kind == "choice":
            options = ([("(none)", None)] if _allows_none(info) else []) + [(c, c) for c in info["choices"]]
            return widgets.Dropdown(options=options, value=value, **common)
        if kind == "bool":
            return widgets.Checkbox(value=bool(value), indent=True, **common)
        if kind == "int":
            return widgets.IntText(value=int(value), **common)
        if kind == "float":
            return widgets.FloatText(value=float(value), **common)
        return widgets.Text(value=_to_text(value), **common)

    def _read(self, name: str):
        """A field's value from its control; ValueError naming the field if the text cannot be read."""
        info, control = self.fields[name], self.controls[name]
        kind = _kind(info)
        if kind != "text":
            return control.value
        text = control.value.strip()
        if text == "" and _allows_none(info):
            return None
        t = str(info["type"]).replace(" ", "")
        if t == "str|None":
            return text
        import yaml

        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ValueError(f"TrainConfig.{name}: cannot read {text!r}; write a number, a word, "
                             "a list like [1, 2] or a mapping like {{nuclei: 2}}") from None
        if t in ("int|None", "float|None"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"TrainConfig.{name}={text!r} must be a number or empty")
            if t == "int|None" and float(value) == int(value):
                value = int(value)
        return value

    def values(self) -> dict:
        """The form's raw values, field by field (not validated)."""
        return {name: self._read(name) for name in self.controls}

    @property
    def config(self):
        """The :class:`~pixlab.TrainConfig` the form describes; raises ValueError when a value is invalid."""
        return _config.TrainConfig.from_dict(self.values())

    @property
    def valid(self) -> bool:
        """Whether the form holds a valid configuration."""
        return self.validate()

    def validate(self) -> bool:
        """Check the form; show the problem next to its field and in ``message``. Returns validity."""
        for e in self.errors.values():
            e.value = ""
        try:
            self.config
        except ValueError as exc:
            text = str(exc)
            self.message.value = _error(text)
            match = _FIELD_IN_MESSAGE.search(text)
            if match and match.group(1) in self.errors:
                self.errors[match.group(1)].value = _error(text)
            return False
        self.message.value = ""
        return True

    def set_config(self, cfg) -> None:
        """Fill every control from a TrainConfig (or a dict of field values)."""
        data = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
        self._quiet = True
        try:
            with self.hold_trait_notifications():
                for name, control in self.controls.items():
                    if name not in data:
                        continue
                    value = data[name]
                    kind = _kind(self.fields[name])
                    control.value = _to_text(value) if kind == "text" else value
        finally:
            self._quiet = False
        self.validate()

    def _on_change(self, _change) -> None:
        if self._quiet:
            return
        if self.preset.value:
            self.preset.unobserve(self._on_preset, names="value")
            self.preset.value = ""  # edited by hand: no longer the preset
            self.preset.observe(self._on_preset, names="value")
        self.validate()

    # ------------------------------------------------------------------------------------------
    def _on_preset(self, change) -> None:
        if change["new"]:
            self.apply_preset(change["new"])

    def apply_preset(self, name: str) -> None:
        """Fill the form from a preset (see ``pixlab.training.config.PRESETS``)."""
        try:
            cfg = _config.preset(name)
        except ValueError as e:
            self.message.value = _error(str(e))
            return
        self.set_config(cfg)
        self.preset.unobserve(self._on_preset, names="value")
        self.preset.value = name.lower().replace("-", "_").replace(" ", "_")
        self.preset.observe(self._on_preset, names="value")

    def advise(self, image_type=None, n_tiles=None, vram_gb=None, n_channels=None, magnification=None):
        """Fill the form with the advisor's recommendation and list its reasons.

        Arguments default to the advisor inputs; ``vram_gb=0`` means no GPU, ``n_channels=0`` the usual
        count for the image type. Returns the reasons (list of str), or None on bad input.
        """
        image_type = self.image_type.value if image_type is None else image_type
        n_tiles = self.n_tiles.value if n_tiles is None else n_tiles
        vram = self.vram_gb.value if vram_gb is None else vram_gb
        chans = self.n_channels.value if n_channels is None else n_channels
        mag = self.magnification.value if magnification is None else magnification
        try:
            base = self.config
        except ValueError:
            base = None  # start from the defaults when the form is currently invalid
        try:
            cfg, reasons = _config.advise(image_type, int(n_tiles), vram or None, chans or None, mag or None, base)
        except ValueError as e:
            self.message.value = _error(str(e))
            return None
        self.set_config(cfg)
        self.reasons.value = "<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in reasons) + "</ul>"
        return reasons

    def save_profile(self, path=None) -> bool:
        """Save the form as a JSON/YAML profile (default path: the Profile box). Returns success."""
        path = path or self.profile_path.value.strip()
        if not path:
            self.message.value = _error("type a file name for the profile, e.g. profile.yaml")
            return False
        try:
            self.config.save(path)
        except (ValueError, OSError) as e:
            self.message.value = _error(str(e))
            return False
        self.message.value = f"saved {html.escape(str(path))}"
        return True

    def load_profile(self, path=None) -> bool:
        """Load a JSON/YAML profile into the form. Returns success."""
        path = path or self.profile_path.value.strip()
        try:
            cfg = _config.TrainConfig.load(path)
        except (ValueError, OSError) as e:
            self.message.value = _error(str(e))
            return False
        self.set_config(cfg)
        return True

    def load_from_model(self, path=None) -> bool:
        """Fill the form with the settings a saved model was trained with. Returns success."""
        path = path or self.model_path.value.strip()
        try:
            cfg = _config.TrainConfig.from_model(path)
        except (ValueError, OSError, KeyError) as e:
            self.message.value = _error(str(e))
            return False
        self.set_config(cfg)
        return True
