"""The exceptions and the warning class of inputiba: one base class to catch them all.

Every error the package raises on purpose derives from :class:`InputIBAError` and also from the
built-in exception it used to be (``ValueError``, ``KeyError``, ``TypeError``, ``RuntimeError``,
``FileNotFoundError``, ``ImportError``), so existing ``except ValueError`` clauses keep working
(``tests/test_errors.py`` checks that no ``raise`` of a bare built-in error is left)::

    try:
        explainer = InputIBA(model, "features.71")
    except inputiba.InputIBAError as exc:   # LayerNotFoundError: lists close layer names
        print(exc)
"""

from __future__ import annotations

__all__ = [
    "InputIBAError",
    "ConfigError",
    "RunConfigError",
    "UnknownSettingError",
    "LayerNotFoundError",
    "ImageReadError",
    "ExplainError",
    "WeightsError",
    "ModelNotFoundError",
    "TargetError",
    "InputError",
    "StatisticsError",
    "OutputDirError",
    "ImageSizeError",
    "TextInputError",
    "NoRegionError",
    "DataError",
    "DataNotFoundError",
    "ArgumentTypeError",
    "ModelError",
    "MissingExtraError",
    "AssetError",
    "UnknownNameError",
    "InputIBAWarning",
]


class InputIBAError(Exception):
    """Base class of every error inputiba raises on purpose."""


class ConfigError(InputIBAError, ValueError):
    """A setting with a wrong name, type or value (the message names it and its valid range)."""


class UnknownSettingError(ConfigError, TypeError):
    """A setting name that does not exist (the message suggests the closest one)."""


class RunConfigError(ConfigError):
    """A run configuration file that cannot be used (the message names the key and the file)."""


class _MessageKeyError(KeyError):
    """A ``KeyError`` whose ``str`` is its message (``KeyError`` quotes it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class LayerNotFoundError(InputIBAError, _MessageKeyError):
    """A dotted layer name that does not exist in the model (the message lists close names)."""


class ImageReadError(InputIBAError, ValueError):
    """An image file that is missing, unreadable or corrupt; the message names the file."""


class ExplainError(InputIBAError, ValueError):
    """A problem with a run as a whole (model, weights, layer, target, estimation source,
    output folder), found before any work is done."""


class ModelNotFoundError(ExplainError, FileNotFoundError):
    """A model name or checkpoint path that names nothing (the message lists what is valid)."""


class TargetError(ExplainError):
    """A target class that is out of range, unknown by name, not a class index, or given in
    the wrong number for the batch."""


class InputError(InputIBAError, ValueError):
    """Inputs the explainer cannot take (shape, dtype, NaN, empty batch, a model that fails
    on them); the message says what is wrong."""


class StatisticsError(InputIBAError, RuntimeError):
    """Layer statistics missing (not estimated or set) where an explanation needs them."""


class WeightsError(ExplainError):
    """A weights file that is not one (foreign or damaged file, pickled objects) or does not
    fit the model; the message names the file."""


class OutputDirError(ExplainError):
    """An output folder that is a file or cannot be written; found before any work starts."""


class ImageSizeError(InputIBAError, ValueError):
    """An image too small for the model (the message names the smallest size it can take)."""


class TextInputError(InputIBAError, ValueError):
    """A text that cannot be explained (empty, or nothing left after tokenisation)."""


class NoRegionError(InputIBAError, ValueError):
    """A localisation metric was given no object region (no box of the target class)."""


class DataError(InputIBAError, ValueError):
    """A data file or folder that cannot be used: empty, unreadable or malformed (maps, box
    annotations, subset lists, dataset folders); the message names it."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data file or folder that does not exist; the message names it."""


class ArgumentTypeError(InputIBAError, TypeError):
    """An argument of the wrong kind: a model that is not an ``nn.Module``, float token ids, a
    model or layer output or a data batch of a type that cannot be read."""


class ModelError(ExplainError, RuntimeError):
    """A model and layer the method cannot work with: the layer is not called in the forward
    pass or is called several times, its output has the wrong shape or is too small, the model
    takes several inputs, or the loss has no gradient at the layer."""


class MissingExtraError(ExplainError, ImportError):
    """An optional dependency that is not installed (the message names the pip extra)."""


class AssetError(InputIBAError, RuntimeError):
    """A packaged asset (weights, photos, text) that could not be installed from the package
    index."""


class UnknownNameError(ConfigError, _MessageKeyError):
    """A name that names nothing in a fixed list (a built-in photo); the message lists the
    valid names."""


class InputIBAWarning(UserWarning):
    """Something the user should know about a run that still goes ahead."""
