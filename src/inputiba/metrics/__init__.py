"""Evaluation metrics (placeholder, classes follow)."""

from . import functional

__all__ = ["functional"]
