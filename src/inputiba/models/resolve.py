"""Model resolution for the workflows: a name, a factory spec or a module becomes the model in
eval mode, its preprocessing, class names and default layer (:func:`resolve_model`)."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from inputiba.errors import ExplainError, InputIBAWarning
from inputiba.models.image import import_factory
from inputiba.models.image import load_weights as _load_weights


@dataclass
class ResolvedModel:
    """A classifier ready to explain.

    Attributes:
        model: the network, in eval mode, on its device.
        preprocess: PIL image -> (C, H, W) float tensor.
        name: how the model was named (for records and caching).
        class_names: the class names, or ``None`` when unknown.
        input_size: (H, W) the preprocess produces.
    """

    model: nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    name: str
    class_names: list[str] | None = None
    input_size: tuple[int, int] = (224, 224)
    num_classes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def default_preprocess() -> Callable[[Any], torch.Tensor]:
    """The preprocessing of models that bring none: resize the whole image (no crop) to
    224 x 224 and normalise with the ImageNet mean and std (:class:`inputiba.models.image.Preprocess`).
    """
    from inputiba.models.image import Preprocess

    return Preprocess()


def _resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if image.shape[:2] == tuple(size):
        return image
    pil = Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR,
                                        reducing_gap=3.0)
    return np.asarray(pil)


def _import_factory(spec: str) -> Callable[..., Any]:
    """:func:`inputiba.models.image.import_factory`, its errors as :class:`ExplainError`."""
    try:
        return import_factory(spec)
    except ValueError as exc:
        raise ExplainError(str(exc)) from None


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """:func:`inputiba.models.image.load_weights`, its errors as :class:`ExplainError`."""
    try:
        _load_weights(model, path)
    except (ValueError, OSError) as exc:
        raise ExplainError(str(exc)) from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else (text or type(exc).__name__)


def resolve_model(
    model: str | nn.Module,
    weights: str | os.PathLike[str] | None = None,
    preprocess: Callable[[Any], torch.Tensor] | None = None,
    class_names: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> ResolvedModel:
    """Turn a model name, factory spec or module into a :class:`ResolvedModel`.

    Args:
        model: a built-in name (``"efficientnet-lite0"``), a torchvision name or ``"timm:<name>"``
            (loaded by :func:`inputiba.models.image.load_model`), ``"module:factory"`` or
            ``"file.py:factory"``
            (the factory returns a model, ``(model, preprocess)`` or
            ``(model, preprocess, class_names)``), or an ``nn.Module``.
        weights: a weights file loaded into the model (strictly).
        preprocess: overrides the model's preprocessing (default: the loader's, else
            :func:`default_preprocess`).
        class_names: overrides the class names (default: ImageNet's for 1000-class models).
        device: where to run.

    Raises:
        ExplainError: unknown model, failing factory, weights that do not fit.
    """
    pre = None
    names = None
    if isinstance(model, nn.Module):
        net, label = model, type(model).__name__
        if weights is not None:
            load_weights(net, weights)
    elif isinstance(model, str) and ":" in model and not os.path.exists(model):
        factory = _import_factory(model)
        try:
            out = factory()
        except Exception as exc:  # noqa: BLE001
            raise ExplainError(f"Model factory {model!r} failed: {_one_line(exc)}") from None
        if isinstance(out, tuple):
            net = out[0]
            pre = out[1] if len(out) > 1 else None
            names = list(out[2]) if len(out) > 2 and out[2] is not None else None
        else:
            net = out
        if not isinstance(net, nn.Module):
            raise ExplainError(f"Model factory {model!r} returned {type(net).__name__}, "
                               "not a torch.nn.Module")
        label = model
        if weights is not None:
            load_weights(net, weights)
    elif isinstance(model, str):
        from inputiba.models.image import load_model

        label = model
        try:
            net, pre = load_model(model, weights=None if weights is None else os.fspath(weights))
        except Exception as exc:  # noqa: BLE001 - one line naming the culprit
            msg = _one_line(exc)
            culprit = str(weights) if weights is not None else model
            if culprit not in msg:
                msg = f"Cannot load {'weights file ' if weights else 'model '}{culprit!r}: {msg}"
            raise ExplainError(msg) from None
        if weights is None and model.lower() != "efficientnet-lite0":
            warnings.warn(
                f"Model {model!r} has random weights: pass a weights file (--weights FILE) to "
                "explain a trained model",
                InputIBAWarning,
                stacklevel=3,
            )
    else:
        raise ExplainError(f"model must be a name, 'module:factory' or an nn.Module, "
                           f"not {type(model).__name__}")
    pre = preprocess or pre or default_preprocess()
    net = net.to(device).eval()
    try:
        probe = pre(np.zeros((240, 320, 3), dtype=np.uint8))
    except Exception as exc:  # noqa: BLE001
        raise ExplainError(f"The preprocessing of model {label!r} failed on a test image: "
                           f"{_one_line(exc)}") from None
    if not isinstance(probe, torch.Tensor) or probe.dim() != 3:
        raise ExplainError(f"The preprocessing of model {label!r} must return a (C, H, W) "
                           f"tensor, got {getattr(probe, 'shape', type(probe).__name__)}")
    with torch.no_grad():
        try:
            logits = net(probe.unsqueeze(0).to(device))
        except Exception as exc:  # noqa: BLE001
            raise ExplainError(f"Model {label!r} failed on a {tuple(probe.shape)} input: "
                               f"{_one_line(exc)}") from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ExplainError(f"Model {label!r} must return (batch, classes) logits, got "
                           f"{getattr(logits, 'shape', type(logits).__name__)}")
    n_classes = int(logits.shape[1])
    size = (int(probe.shape[1]), int(probe.shape[2]))
    if not _keeps_geometry(pre, size):
        warnings.warn(
            f"The preprocessing of model {label!r} crops or warps a {size[0]}x{size[1]} image; "
            "maps are mapped back as if it used the whole image. Pass a preprocess that only "
            "resizes and normalises for exact geometry.",
            InputIBAWarning,
            stacklevel=3,
        )
    if class_names is not None:
        names = list(class_names)
    if names is None and n_classes == 1000:
        with contextlib.suppress(Exception):
            from inputiba.models.image import imagenet_class_names

            names = list(imagenet_class_names())
    if names is not None and len(names) != n_classes:
        raise ExplainError(f"{len(names)} class names given for a model with {n_classes} classes")
    return ResolvedModel(net, pre, label, names, size, n_classes)


def _keeps_geometry(preprocess: Callable[[Any], torch.Tensor], size: tuple[int, int]) -> bool:
    """Whether ``preprocess`` maps an image of the model's input size pixel to pixel (only a
    per-channel affine normalisation), checked with constant and ramp images."""
    h, w = size
    try:
        lo = _prepare(preprocess, np.zeros((h, w, 3), dtype=np.uint8), size).float()
        hi = _prepare(preprocess, np.full((h, w, 3), 255, dtype=np.uint8), size).float()
        ramp = np.zeros((h, w, 3), dtype=np.uint8)
        ramp[..., 0] = np.linspace(0, 255, w).round().astype(np.uint8)[None, :]
        ramp[..., 1] = np.linspace(0, 255, h).round().astype(np.uint8)[:, None]
        got = _prepare(preprocess, ramp, size).float()
    except Exception:  # noqa: BLE001 - cannot tell; do not warn
        return True
    if got.shape != lo.shape or got.shape[0] < 2 or tuple(got.shape[1:]) != (h, w):
        return False
    expect = lo + (hi - lo) * torch.from_numpy(ramp).permute(2, 0, 1).float() / 255.0
    scale = (hi - lo).abs().amax().clamp_min(1e-6)
    return bool(((got - expect).abs()[:2].amax() / scale) < 0.05)


def _prepare(preprocess: Callable[[Any], torch.Tensor], image: np.ndarray,
             size: tuple[int, int]) -> torch.Tensor:
    """``preprocess`` applied to the image resized (whole, no crop) to the model's input size."""
    with warnings.catch_warnings():
        # PIL -> numpy -> torch.from_numpy inside preprocessors warns that PIL's buffer is
        # read-only; the tensor is never written to, so this is noise for the user.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return preprocess(_pil(_resize_rgb(image, size)))


def _pil(arr: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(arr)
