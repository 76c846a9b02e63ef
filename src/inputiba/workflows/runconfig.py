"""Run configuration files: YAML validated into typed settings, and the shipped configurations.

A run configuration holds everything a run depends on: the model (name, weights, bottleneck
layer, preprocessing), the estimation set, the preset and every InputIBA setting, the output
layout and the seed. An unknown or misspelt key anywhere is a :class:`RunConfigError` naming
the key, the closest valid one and the file.

Example file (every section and key is optional; omitted ones take the defaults)::

    task: image                 # image | text
    model:
      name: vgg16               # as for inputiba.models.resolve.resolve_model
      weights: vgg16.pth        # a file, a torchvision weights name (download), or null
      layer: features.17
      preprocessing: {size: 224, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
    estimation: {source: imagenet_val_sample/, n_samples: 1000}
    preset: paper
    inputiba: {input_steps: 60}  # any InputIBAConfig field, over the preset
    output: {dir: inputiba-out, layout: flat}
    seed: 0

:func:`load_run_config` reads a file or a shipped configuration's name
(:func:`shipped_configs`); :meth:`RunConfig.resolved` fills in every InputIBA setting;
:func:`write_run_config` writes the resolved configuration (with the package version), which
:func:`load_run_config` reads back to reproduce the run.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from inputiba.core.config import (
    DEFAULT_PRESET,
    DEFAULT_TEXT_PRESET,
    PRESETS,
    InputIBAConfig,
    resolve_config,
)
from inputiba.data.io import save_text
from inputiba.errors import RunConfigError

__all__ = [
    "RunConfigError",
    "Preprocessing",
    "ModelSettings",
    "EstimationSettings",
    "OutputSettings",
    "RunConfig",
    "load_run_config",
    "parse_run_config",
    "write_run_config",
    "shipped_configs",
    "config_path",
    "CONFIG_FILENAME",
]

#: The resolved configuration's file name in every run's output folder.
CONFIG_FILENAME = "config.yaml"
TASKS = ("image", "text")
LAYOUTS = ("flat", "class")


@dataclass
class Preprocessing:
    """Image preprocessing: resize to ``size`` (int or [H, W]) and normalise with mean/std."""

    size: int | list[int] = 224
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])

    def build(self) -> Any:
        """The :class:`inputiba.models.image.Preprocess` callable for these settings."""
        from inputiba.models.image import Preprocess

        size = self.size if isinstance(self.size, int) else tuple(self.size)
        return Preprocess(size, tuple(self.mean), tuple(self.std))


@dataclass
class ModelSettings:
    """The classifier: ``name`` (see :func:`inputiba.models.resolve.resolve_model`), ``weights``
    (file path, torchvision weights name, or None: packaged/random), ``layer`` (the feature
    bottleneck's layer; None: the model's default) and ``preprocessing`` (None: the model's
    own)."""

    name: str = "efficientnet-lite0"
    weights: str | None = None
    layer: str | None = None
    preprocessing: Preprocessing | None = None


@dataclass
class EstimationSettings:
    """Where the layer statistics come from: ``source`` (a folder of images or a saved
    statistics file; None: the built-in stand-in) and ``n_samples`` (None: all)."""

    source: str | None = None
    n_samples: int | None = None


@dataclass
class OutputSettings:
    """``dir``: the output folder; ``layout``: ``flat`` or ``class`` (explain-dataset)."""

    dir: str = "inputiba-out"
    layout: str = "flat"


@dataclass
class RunConfig:
    """A whole run's settings. ``inputiba`` holds InputIBA settings over ``preset``'s values
    (names checked against :class:`inputiba.core.config.InputIBAConfig`). Without a ``preset``
    (``None``, or a file without the key) an image run gets
    :data:`~inputiba.core.config.DEFAULT_PRESET` and a text run
    :data:`~inputiba.core.config.DEFAULT_TEXT_PRESET` (what ``TextInputIBA`` uses)."""

    task: str = "image"
    model: ModelSettings = field(default_factory=ModelSettings)
    estimation: EstimationSettings = field(default_factory=EstimationSettings)
    preset: str | None = None  # None: the task's default (a str after __init__)
    inputiba: dict[str, Any] = field(default_factory=dict)
    output: OutputSettings = field(default_factory=OutputSettings)
    seed: int = 0
    source: str | None = None  # the file it was read from (not written)

    def __post_init__(self) -> None:
        if self.preset is None:
            self.preset = DEFAULT_TEXT_PRESET if self.task == "text" else DEFAULT_PRESET

    def resolved(self) -> InputIBAConfig:
        """Every InputIBA setting: the preset's, then :attr:`inputiba`; ``seed`` is always
        :attr:`seed` (the top-level key). Text runs start from the text side's defaults
        (``inputiba.modalities.text.TEXT_DEFAULTS``) when it is installed."""
        overrides = {**self.inputiba, "seed": self.seed}
        if self.task == "text":
            try:
                from inputiba.modalities.text import TEXT_DEFAULTS
            except ImportError:  # the text side is not installed: the image defaults
                TEXT_DEFAULTS = {}  # noqa: N806
            base = InputIBAConfig().replace(**TEXT_DEFAULTS).replace(**PRESETS[self.preset])
            return resolve_config(base, **overrides)
        return resolve_config(self.preset, **overrides)

    def to_dict(self, resolved: bool = True) -> dict[str, Any]:
        """Plain data for YAML; ``resolved``: every InputIBA setting, not just the overrides."""
        d = dataclasses.asdict(self)
        d.pop("source")
        if resolved:
            d["inputiba"] = self.resolved().to_dict()
            d["inputiba"].pop("seed")  # the top-level key
        return d

    def with_overrides(self, **changes: Any) -> RunConfig:
        """A copy with dotted keys changed, e.g. ``{"model.layer": "layer3", "seed": 1}``;
        ``None`` values are skipped (so unset command-line flags change nothing)."""
        d = self.to_dict(resolved=False)
        for key, value in changes.items():
            if value is None:
                continue
            *parents, leaf = key.split(".")
            node = d
            for p in parents:
                if node.get(p) is None:
                    node[p] = {}
                node = node[p]
            node[leaf] = value
        return parse_run_config(d, source=self.source)


def _hint(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(valid)})"


def _where(source: str | None) -> str:
    return f" in {source}" if source else ""


_TYPES: dict[type, dict[str, tuple[type, ...]]] = {
    Preprocessing: {"size": (int, list), "mean": (list,), "std": (list,)},
    ModelSettings: {"name": (str,), "weights": (str, type(None)), "layer": (str, type(None)),
                    "preprocessing": (dict, type(None))},
    EstimationSettings: {"source": (str, type(None)), "n_samples": (int, type(None))},
    OutputSettings: {"dir": (str,), "layout": (str,)},
}


def _section(cls: type, data: Any, path: str, source: str | None) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RunConfigError(f"{path!r} must be a mapping, got {type(data).__name__}"
                             f"{_where(source)}")
    valid = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in valid:
            raise RunConfigError(f"Unknown key '{path}.{key}'{_hint(str(key), valid)}"
                                 f"{_where(source)}")
        types = _TYPES[cls][key]
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise RunConfigError(f"'{path}.{key}' must be {names}, got {value!r}{_where(source)}")
        kwargs[key] = value
    return cls(**kwargs)


def parse_run_config(data: Any, source: str | None = None) -> RunConfig:
    """Validate plain data (as read from YAML) into a :class:`RunConfig`.

    Raises:
        RunConfigError: unknown key (with a close-match hint), wrong type or value; the
            message names the key and ``source``.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RunConfigError(f"A run configuration must be a mapping{_where(source)}")
    data = dict(data)
    data.pop("inputiba_version", None)  # written for the record; not a setting
    valid = [f.name for f in fields(RunConfig) if f.name != "source"]
    for key in data:
        if key not in valid:
            raise RunConfigError(f"Unknown key {key!r}{_hint(str(key), valid)}{_where(source)}")
    model_data = data.get("model") or {}
    model = _section(ModelSettings, model_data, "model", source)
    if model.preprocessing is not None:
        model.preprocessing = _section(Preprocessing, model.preprocessing,
                                       "model.preprocessing", source)
        for k in ("mean", "std"):
            v = getattr(model.preprocessing, k)
            if len(v) not in (1, 3) or not all(isinstance(x, (int, float)) for x in v):
                raise RunConfigError(f"'model.preprocessing.{k}' must be 1 or 3 numbers, got "
                                     f"{v!r}{_where(source)}")
    estimation = _section(EstimationSettings, data.get("estimation"), "estimation", source)
    if estimation.n_samples is not None and estimation.n_samples < 1:
        raise RunConfigError(f"'estimation.n_samples' must be at least 1{_where(source)}")
    output = _section(OutputSettings, data.get("output"), "output", source)
    if output.layout not in LAYOUTS:
        raise RunConfigError(f"'output.layout' must be one of {', '.join(LAYOUTS)}, got "
                             f"{output.layout!r}{_where(source)}")
    task = data.get("task", "image")
    if task not in TASKS:
        raise RunConfigError(f"'task' must be one of {', '.join(TASKS)}, got {task!r}"
                             f"{_where(source)}")
    preset = data.get("preset")  # None: the task's default (RunConfig)
    if preset is not None and preset not in PRESETS:
        raise RunConfigError(f"Unknown preset {preset!r}{_hint(str(preset), list(PRESETS))}"
                             f"{_where(source)}")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise RunConfigError(f"'seed' must be an integer, got {seed!r}{_where(source)}")
    settings = data.get("inputiba") or {}
    if not isinstance(settings, dict):
        raise RunConfigError(f"'inputiba' must be a mapping{_where(source)}")
    if "seed" in settings:  # the run's seed has one place: the top-level key
        settings = dict(settings)
        inner = settings.pop("seed")
        if "seed" in data and data["seed"] != inner:
            raise RunConfigError(f"'seed: {data['seed']}' and 'inputiba.seed: {inner}' disagree; "
                                 f"keep the top-level 'seed'{_where(source)}")
        if isinstance(inner, bool) or not isinstance(inner, int):
            raise RunConfigError(f"'inputiba.seed' must be an integer, got {inner!r}"
                                 f"{_where(source)}")
        seed = inner
    names = [f.name for f in fields(InputIBAConfig)]
    for key in settings:
        if key not in names:
            raise RunConfigError(f"Unknown key 'inputiba.{key}'{_hint(str(key), names)}"
                                 f"{_where(source)}")
    cfg = RunConfig(task=task, model=model, estimation=estimation, preset=preset,
                    inputiba=dict(settings), output=output, seed=seed, source=source)
    try:
        cfg.resolved()
    except (TypeError, ValueError) as exc:  # pragma: no cover - names checked above
        raise RunConfigError(f"{exc}{_where(source)}") from None
    return cfg


def shipped_configs() -> dict[str, Path]:
    """The configurations shipped with the package: name (file stem) -> path."""
    root = resources.files("inputiba") / "configs"
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


def config_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A configuration file's path: an existing file, or a shipped configuration's name.

    Raises:
        RunConfigError: neither (the shipped names are listed, closest first).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_configs()
    key = path.stem if path.suffix in (".yaml", ".yml") else str(name_or_path)
    if key in shipped and not path.parent.parts:
        return shipped[key]
    names = sorted(shipped)
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise RunConfigError(f"No configuration file {str(name_or_path)!r}; {hint}"
                         f"shipped configurations: {', '.join(names)}")


def load_run_config(name_or_path: str | os.PathLike[str]) -> RunConfig:
    """Read and validate a YAML run configuration (a file or a shipped configuration's name).

    Raises:
        RunConfigError: missing file, invalid YAML, unknown key, wrong value.
    """
    import yaml

    path = config_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RunConfigError(f"Invalid YAML in {path}: {exc}") from None
    return parse_run_config(data, source=str(path))


def write_run_config(cfg: RunConfig, out_dir: str | os.PathLike[str]) -> Path:
    """Write the fully resolved configuration (plus the package version) as
    ``out_dir/config.yaml``; returns its path."""
    import yaml

    from inputiba import __version__

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = {"inputiba_version": __version__, **cfg.to_dict(resolved=True)}
    path = out / CONFIG_FILENAME
    header = ("# The fully resolved configuration of this run; reproduce it with\n"
              f"#   --config {path}\n")
    save_text(path, header + yaml.safe_dump(data, sort_keys=False))
    return path
