"""inputiba: InputIBA attribution for PyTorch classifiers (Zhang et al., NeurIPS 2021).

Example:
    >>> from inputiba import InputIBA
    >>> from inputiba.models import load_model
    >>> model, preprocess = load_model("efficientnet-lite0")          # doctest: +SKIP
    >>> explainer = InputIBA(model, "_blocks.5", preset="fast")       # doctest: +SKIP
"""

__version__ = "0.1.0"

from .attribution import IBA, InputIBA, InputIBAResult
from .config import PRESETS, InputIBAConfig
from .estimator import LayerStatistics, estimate_layer_statistics
from .layers import LayerNotFoundError, get_layer, layer_names

__all__ = [
    "__version__",
    "InputIBA",
    "IBA",
    "InputIBAResult",
    "InputIBAConfig",
    "PRESETS",
    "LayerStatistics",
    "estimate_layer_statistics",
    "LayerNotFoundError",
    "get_layer",
    "layer_names",
]
