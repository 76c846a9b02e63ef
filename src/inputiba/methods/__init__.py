"""Attribution methods behind one protocol (:class:`~inputiba.methods.base.AttributionMethod`).

One registry for both modalities::

    from inputiba.methods import available_explainers, get_explainer

    available_explainers()                      # image methods, in the paper's order
    get_explainer("gradcam", model, "layer4")   # an image explainer
    get_explainer("lime", text_model, "embedding", modality="text")

Image methods live in :mod:`inputiba.methods.image`, text methods in
:mod:`inputiba.methods.text`; the shared base, result type and map helpers in
:mod:`inputiba.methods.base`. InputIBA on text is :class:`inputiba.TextInputIBA` (it needs the
text model's token statistics; :func:`inputiba.explain_texts` builds it).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from inputiba.errors import ConfigError
from inputiba.methods.base import Attribution, AttributionMethod, Explainer, normalize_map
from inputiba.methods.image import EXPLAINERS
from inputiba.methods.image import get_explainer as _get_image_explainer
from inputiba.methods.text import (
    TEXT_EXPLAINERS,
    TextAttribution,
    TextExplainer,
    get_text_explainer,
)

__all__ = [
    "AttributionMethod",
    "Attribution",
    "Explainer",
    "TextAttribution",
    "TextExplainer",
    "EXPLAINERS",
    "TEXT_EXPLAINERS",
    "MODALITIES",
    "available_explainers",
    "get_explainer",
    "get_text_explainer",
    "normalize_map",
]

MODALITIES = ("image", "text")


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ConfigError(f"Unknown modality {modality!r}; choose from {', '.join(MODALITIES)}")


def available_explainers(modality: str = "image") -> list[str]:
    """The registered method names of a modality (``"image"`` or ``"text"``), in the paper's
    order for images."""
    _check_modality(modality)
    return list(EXPLAINERS if modality == "image" else TEXT_EXPLAINERS)


def get_explainer(
    name: str,
    model: nn.Module,
    layer: str | None = None,
    *,
    modality: str = "image",
    **kwargs: Any,
) -> AttributionMethod:
    """Build the method ``name`` on ``model``.

    Args:
        name: one of :func:`available_explainers` for the modality (case-insensitive, ``-`` and
            ``_`` interchangeable, aliases such as ``ig``).
        model: the classifier.
        layer: images: the layer of InputIBA/IBA (required) and Grad-CAM (default: the last
            spatial layer); text: the token-embedding layer (required).
        modality: ``"image"`` or ``"text"``.
        **kwargs: the method's constructor options (``seed``, ``statistics``, ``n_steps`` ...).

    Returns:
        An object with ``attribute(inputs, target=None)`` maps in [0, 1] shaped like the
        samples, ``explain_func`` and ``with_model``.

    Raises:
        ValueError: unknown modality or name (with close matches), or a missing layer.

    Example:
        >>> explainer = get_explainer("gradcam", model, "layer4")     # doctest: +SKIP
        >>> maps = explainer.attribute(x, target=None)                # (B, 1, H, W)
    """
    _check_modality(modality)
    if modality == "image":
        return _get_image_explainer(name, model, layer, **kwargs)
    if layer is None:
        raise ConfigError("text methods need the token-embedding layer (layer='embedding')")
    return get_text_explainer(name, model, layer, **kwargs)
