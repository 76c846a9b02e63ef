"""inputiba: InputIBA attribution for PyTorch classifiers (Zhang et al., NeurIPS 2021)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
