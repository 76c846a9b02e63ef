"""inputiba: InputIBA attribution for PyTorch classifiers (Zhang et al., NeurIPS 2021).

The attribution classes are imported here; the one-call workflows (``explain_images``,
``explain_texts``, ``explain_dataset``, ``evaluate_maps``, ``compare_methods``) and the model
loaders are imported on first use.

Examples:
    >>> from inputiba import InputIBA, load_model
    >>> model, preprocess = load_model("efficientnet-lite0")          # doctest: +SKIP
    >>> explainer = InputIBA(model, "_blocks.5", preset="fast")       # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from inputiba import _compat
from inputiba.core.config import DEFAULT_PRESET, DEFAULT_TEXT_PRESET, PRESETS, InputIBAConfig
from inputiba.core.layers import get_layer, layer_names
from inputiba.core.statistics import LayerStatistics, estimate_layer_statistics
from inputiba.errors import (
    ConfigError,
    ExplainError,
    ImageReadError,
    InputIBAError,
    InputIBAWarning,
    LayerNotFoundError,
)
from inputiba.modalities.image import IBA, InputIBA, InputIBAResult

_compat.install()

#: Public names imported on first use: name -> module.
_LAZY = {
    "TextInputIBA": "inputiba.modalities.text",
    "TextInputIBAResult": "inputiba.modalities.text",
    "load_model": "inputiba.models.image",
    "load_text_model": "inputiba.models.text_training",
    "get_explainer": "inputiba.methods",
    "available_explainers": "inputiba.methods",
    "explain_images": "inputiba.workflows.explain",
    "explain_texts": "inputiba.workflows.text",
    "explain_dataset": "inputiba.workflows.dataset",
    "evaluate_maps": "inputiba.metrics.evaluate",
    "compare_methods": "inputiba.workflows.compare",
}

__all__ = [
    "__version__",
    "InputIBA",
    "IBA",
    "InputIBAResult",
    "InputIBAConfig",
    "PRESETS",
    "DEFAULT_PRESET",
    "DEFAULT_TEXT_PRESET",
    "LayerStatistics",
    "estimate_layer_statistics",
    "get_layer",
    "layer_names",
    "InputIBAError",
    "ConfigError",
    "ExplainError",
    "ImageReadError",
    "LayerNotFoundError",
    "InputIBAWarning",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'inputiba' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
