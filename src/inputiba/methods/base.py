"""What every attribution method shares: the result type, the map convention's helpers, and
the :class:`Explainer` base class of the image methods.

The protocol every method follows, image or text (:class:`AttributionMethod`)::

    maps = method.attribute(inputs, target=None)      # a map per sample, in [0, 1]
    res = method.attribute(inputs, target, return_raw=True)
    method.explain_func(model, inputs, targets)       # metric libraries' signature (numpy)
    method.with_model(other_model)                    # the same method on another model

The image convention (``(B, 1, H, W)`` float32, per-sample maximum 1) is described in
:mod:`inputiba.methods.image`; text methods return ``(B, L)`` token maps
(:mod:`inputiba.methods.text`).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from inputiba.core.functional import resize_map
from inputiba.core.layers import _probe_with_hooks, frozen_eval
from inputiba.core.targets import resolve_targets as _targets_from_logits
from inputiba.errors import ArgumentTypeError, ConfigError, InputError, ModelError
from inputiba.modalities.image_base import check_image_batch

__all__ = [
    "AttributionMethod",
    "Attribution",
    "Explainer",
    "model_logits",
    "resolve_targets",
    "reduce_channels",
    "normalize_map",
    "map_to_uint8",
    "last_spatial_layer",
]


@dataclass
class Attribution:
    """The result of ``attribute(..., return_raw=True)``.

    Attributes:
        map: (B, 1, H, W) float in [0, 1], the map convention of this module.
        raw: the method's own output (signed where the method is), see the module docstring.
        targets: (B,) long, the classes explained.
    """

    map: torch.Tensor
    raw: torch.Tensor
    targets: torch.Tensor


# ---------------------------------------------------------------------------------------------
# functional helpers


def model_logits(output: Any) -> torch.Tensor:
    """The logits of a model's output: the tensor itself, or ``output.logits`` (Hugging Face)."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ArgumentTypeError(f"Cannot read logits from a model output of type {type(output).__name__}")


def resolve_targets(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor | None,
    **forward_kwargs: Any,
) -> torch.Tensor:
    """One class per sample as a (B,) long tensor on the inputs' device.

    Runs the model once (no gradients) and applies :func:`inputiba.core.targets.resolve_targets`:
    ``None`` takes the arg-max class, an int is used for every sample, a sequence or tensor
    gives one class per sample.

    Raises:
        ValueError: wrong number of targets, or a class the model does not have.
    """
    with torch.no_grad():
        logits = model_logits(model(inputs, **forward_kwargs))
    return _targets_from_logits(logits, target).to(inputs.device)


def reduce_channels(raw: torch.Tensor, reduction: str = "abs") -> torch.Tensor:
    """(B, C, H, W) signed attribution -> (B, 1, H, W) non-negative.

    Args:
        raw: attribution per input element.
        reduction: ``"abs"``: sum over channels of ``|a|``; ``"positive"``: ReLU of the channel
            sum (evidence for the class only); ``"sum"`` is refused (signed).
    """
    if reduction == "abs":
        return raw.abs().sum(dim=1, keepdim=True)
    if reduction == "positive":
        return raw.sum(dim=1, keepdim=True).clamp(min=0)
    raise ConfigError(f"reduction must be 'abs' or 'positive', got {reduction!r}")


def normalize_map(m: torch.Tensor) -> torch.Tensor:
    """Divide each sample's non-negative map by its maximum (all-zero maps stay zero).

    Args:
        m: (B, ...) non-negative tensor.

    Returns:
        Tensor of ``m``'s shape in [0, 1]; each sample's maximum is 1 unless it is all zero.
    """
    if (m < 0).any():
        raise InputError("normalize_map expects a non-negative map; reduce signed maps first")
    peak = m.reshape(m.shape[0], -1).amax(dim=1).reshape(-1, *([1] * (m.dim() - 1)))
    return torch.where(peak > 0, m / peak.clamp(min=torch.finfo(m.dtype).tiny), torch.zeros_like(m))


def map_to_uint8(m: torch.Tensor | np.ndarray) -> np.ndarray:
    """A map in [0, 1] as uint8 0..255 for images. Refuses signed or out-of-range values.

    The original code cast signed attributions to uint8, wrapping negative values around
    (mistake 6); save raw attributions as float ``.npy`` instead.
    """
    arr = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
    if not np.isfinite(arr).all():
        raise InputError("map has non-finite values")
    if arr.min() < 0 or arr.max() > 1:
        raise InputError(
            f"map_to_uint8 needs values in [0, 1], got [{arr.min():.4g}, {arr.max():.4g}]; "
            "normalise (normalize_map) or save the raw attribution as float .npy"
        )
    return np.round(arr * 255).astype(np.uint8)


def last_spatial_layer(model: nn.Module, inputs: torch.Tensor) -> str:
    """Name of the last module, in execution order, called once per forward pass, whose output
    is a (B, C, h, w) map with h * w > 1.

    This is the usual Grad-CAM layer (the last convolutional block's output). Modules called
    several times (a shared activation, e.g. EfficientNet's ``_swish``) are skipped: their
    output is not one layer. Runs the model once on ``inputs[:1]`` with hooks.
    """
    calls = _call_counts(model, inputs[:1])
    order = [name for name, (count, shape) in calls.items()
             if count == 1 and shape is not None and len(shape) == 4 and shape[-2] * shape[-1] > 1]
    if not order:
        raise ModelError(
            f"{type(model).__name__} has no module with a (B, C, h, w) output; pass layer=..."
        )
    return order[-1]


def _call_counts(
    model: nn.Module, inputs: torch.Tensor
) -> dict[str, tuple[int, tuple[int, ...] | None]]:
    """Module name -> (calls in one forward pass, the shape of its last output; None when
    that was not a tensor), in order of the last call."""
    calls: dict[str, tuple[int, tuple[int, ...] | None]] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
            count = calls.pop(name, (0, None))[0] + 1
            calls[name] = (count, shape)

        handles.append(module.register_forward_hook(hook))
    _probe_with_hooks(model, inputs, handles)
    return calls




@runtime_checkable
class AttributionMethod(Protocol):
    """The interface of every attribution method (image explainers, text explainers, and the
    InputIBA classes through their explainers)."""

    model: nn.Module

    def attribute(self, inputs: Any, target: Any = None, **kwargs: Any) -> Any:
        """Maps in [0, 1] shaped like the inputs' samples (or a result with ``return_raw``)."""
        ...

    def explain_func(self, model: nn.Module | None, inputs: Any, targets: Any,
                     **kwargs: Any) -> np.ndarray:
        """``(model, inputs, targets) -> numpy maps`` for metric libraries."""
        ...

    def with_model(self, model: nn.Module) -> AttributionMethod:
        """The same method and settings on another model."""
        ...

# ---------------------------------------------------------------------------------------------
# the interface


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


class Explainer:
    """Base class: one attribution method on one image classifier.

    Subclasses implement ``_raw(x, targets, **kw)`` (the method's own output) and, where the
    default (channel reduction + bilinear resize) does not fit, ``_to_map(raw, x)``.

    Args:
        model: the classifier, ``model(x) -> (B, classes)`` logits.
        seed: when set, every call runs under ``torch.manual_seed(seed)`` in a forked RNG.
        normalize: divide each map by its maximum (the module's convention).
    """

    name: ClassVar[str] = ""

    def __init__(self, model: nn.Module, *, seed: int | None = None, normalize: bool = True):
        if not isinstance(model, nn.Module):
            raise ArgumentTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.seed = seed
        self.normalize = normalize
        self.reduction = "abs"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={type(self.model).__name__}, seed={self.seed})"

    # -- public API --------------------------------------------------------------------------
    def attribute(
        self,
        inputs: torch.Tensor,
        target: int | Sequence[int] | torch.Tensor | None = None,
        *,
        return_raw: bool = False,
        **kwargs: Any,
    ) -> torch.Tensor | Attribution:
        """Attribution maps of a batch.

        Args:
            inputs: (B, C, H, W) normalised images (moved to the model's device).
            target: class(es) to explain; ``None``: the predicted class.
            return_raw: return an :class:`Attribution` (map, raw, targets) instead of the map.
            **kwargs: method-specific overrides (see each class).

        Returns:
            (B, 1, H, W) float32 map in [0, 1] (see the module docstring), or an
            :class:`Attribution`.
        """
        x, targets, raw = self._run(inputs, target, kwargs)
        m = self._to_map(raw, x).float()
        if tuple(m.shape[-2:]) != tuple(x.shape[-2:]):
            m = resize_map(m, tuple(x.shape[-2:]))
        m = m.clamp(min=0)  # bilinear of non-negative is non-negative; guard rounding only
        if self.normalize:
            m = normalize_map(m)
        m = m.detach()
        if return_raw:
            return Attribution(map=m, raw=raw.detach(), targets=targets)
        return m

    def raw_attribute(
        self,
        inputs: torch.Tensor,
        target: int | Sequence[int] | torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """The method's raw (possibly signed) attribution; shapes in the module docstring."""
        return self._run(inputs, target, kwargs)[2].detach()

    __call__ = attribute

    def with_model(self, model: nn.Module) -> Explainer:
        """The same method and settings on another model (e.g. a randomised copy)."""
        new = copy.copy(self)
        new.model = model
        return new

    def explain_func(
        self, model: nn.Module | None, inputs: Any, targets: Any, **_kw: Any
    ) -> np.ndarray:
        """Quantus-style ``explain_func(model, inputs, targets) -> (B, 1, H, W)`` numpy maps.

        A ``model`` other than this explainer's (a randomised copy in a sanity check) is
        explained with the same method and settings (:meth:`with_model`).
        """
        explainer = self if model is None or model is self.model else self.with_model(model)
        x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor) else inputs)
        t = None if targets is None else torch.as_tensor(np.asarray(targets)).long().view(-1)
        return explainer.attribute(x.float(), t).cpu().numpy()  # type: ignore[union-attr]

    # -- internals ---------------------------------------------------------------------------
    def _run(
        self, inputs: torch.Tensor, target: Any, kwargs: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        device = _model_device(self.model)
        x = check_image_batch(inputs).to(device)
        with frozen_eval(self.model), _seeded(self.seed, device), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*did not already require gradients.*")
            targets = resolve_targets(self.model, x, target)
            raw = self._raw(x, targets, **kwargs)
        return x, targets, raw

    def _raw(self, x: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        raise NotImplementedError

    def _to_map(self, raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if raw.shape[1] != 1:
            raw = reduce_channels(raw, self.reduction)
        return raw


