"""Attribution methods behind one interface, to compare InputIBA with the paper's baselines.

Every explainer is built on a classifier and called Captum-style on a batch::

    explainer = get_explainer("gradcam", model, layer="_blocks.15")
    maps = explainer.attribute(x, target=None)            # (B, 1, H, W) float in [0, 1]
    res = explainer.attribute(x, target=[285, 967], return_raw=True)
    res.map, res.raw, res.targets                          # raw: the method's own signed output

Map convention (the same for every method, so that metrics compare like with like):

* ``attribute`` returns a float32 tensor of shape (B, 1, H, W), at the input's resolution,
  non-negative, **divided per sample by its maximum** (so each map's maximum is 1; a map that is
  zero everywhere stays zero). ``normalize=False`` at construction skips that division.
* The non-negative map is made from the method's raw output by a documented rule:
  pixel-gradient methods (Integrated Gradients, Guided Backprop, DeepSHAP) sum the absolute
  value over colour channels (``reduction="abs"``; ``"positive"`` keeps only the positive part
  of the channel sum); Grad-CAM applies ReLU at the layer's resolution, then upsamples
  bilinearly to the input (not kept at 7x7: the original code's mistake 6); IBA upsamples its
  capacity in bits; InputIBA and Extremal Perturbation are masks in [0, 1] already (several
  extremal areas are averaged); random is U(0, 1) noise.
* ``raw_attribute`` (or ``return_raw=True``) gives the signed raw output: (B, C, H, W) for the
  pixel-gradient methods, (B, 1, h, w) at the layer's resolution before ReLU for Grad-CAM,
  (B, len(areas), H, W) masks for Extremal Perturbation, (B, 1, H, W) otherwise. Never cast a
  signed map to uint8 (mistake 6): :func:`map_to_uint8` refuses anything outside [0, 1].

Targets: ``None`` explains each sample's predicted class; an int is used for the whole batch;
a sequence or (B,) tensor gives one class per sample. The model runs in eval mode with frozen
parameters during attribution (:func:`inputiba.core.layers.frozen_eval`). An explainer built with
``seed=`` gives identical maps on every call (it forks the global RNG, leaving it untouched).

Captum provides Grad-CAM, Integrated Gradients, Guided Backprop and DeepSHAP (DeepLiftShap);
Extremal Perturbation is implemented in :mod:`inputiba.methods.extremal`; InputIBA and IBA wrap
:class:`inputiba.InputIBA` and :class:`inputiba.IBA`.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from inputiba.core.functional import resize_map
from inputiba.core.layers import _probe_with_hooks, frozen_eval, get_layer
from inputiba.core.targets import resolve_targets as _targets_from_logits
from inputiba.methods.extremal import extremal_perturbation
from inputiba.modalities.image import check_image_batch

__all__ = [
    "Attribution",
    "Explainer",
    "InputIBAExplainer",
    "IBAExplainer",
    "GradCAM",
    "IntegratedGradients",
    "GuidedBackprop",
    "DeepSHAP",
    "ExtremalPerturbation",
    "RandomExplainer",
    "EXPLAINERS",
    "available_explainers",
    "get_explainer",
    "normalize_map",
    "reduce_channels",
    "resolve_targets",
    "model_logits",
    "fresh_nonlinearities",
    "last_spatial_layer",
    "map_to_uint8",
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
    raise TypeError(f"Cannot read logits from a model output of type {type(output).__name__}")


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
    raise ValueError(f"reduction must be 'abs' or 'positive', got {reduction!r}")


def normalize_map(m: torch.Tensor) -> torch.Tensor:
    """Divide each sample's non-negative map by its maximum (all-zero maps stay zero).

    Args:
        m: (B, ...) non-negative tensor.

    Returns:
        Tensor of ``m``'s shape in [0, 1]; each sample's maximum is 1 unless it is all zero.
    """
    if (m < 0).any():
        raise ValueError("normalize_map expects a non-negative map; reduce signed maps first")
    peak = m.reshape(m.shape[0], -1).amax(dim=1).reshape(-1, *([1] * (m.dim() - 1)))
    return torch.where(peak > 0, m / peak.clamp(min=torch.finfo(m.dtype).tiny), torch.zeros_like(m))


def map_to_uint8(m: torch.Tensor | np.ndarray) -> np.ndarray:
    """A map in [0, 1] as uint8 0..255 for images. Refuses signed or out-of-range values.

    The original code cast signed attributions to uint8, wrapping negative values around
    (mistake 6); save raw attributions as float ``.npy`` instead.
    """
    arr = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
    if not np.isfinite(arr).all():
        raise ValueError("map has non-finite values")
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError(
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
    order = [name for name, (count, spatial) in calls.items() if count == 1 and spatial]
    if not order:
        raise ValueError(
            f"{type(model).__name__} has no module with a (B, C, h, w) output; pass layer=..."
        )
    return order[-1]


def _call_counts(model: nn.Module, inputs: torch.Tensor) -> dict[str, tuple[int, bool]]:
    """Module name -> (calls in one forward pass, whether its last output was spatial 4-d),
    in order of the last call."""
    calls: dict[str, tuple[int, bool]] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            spatial = (
                isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-2:].numel() > 1
            )
            count = calls.pop(name, (0, False))[0] + 1
            calls[name] = (count, spatial)

        handles.append(module.register_forward_hook(hook))
    _probe_with_hooks(model, inputs, handles)
    return calls


# ---------------------------------------------------------------------------------------------
# fresh nonlinearities for DeepLift / Guided Backprop


class _ReLU6AsReLUs(nn.Module):
    """``relu6(x) = relu(x) - relu(x - 6)`` with two ReLU modules, so that Captum's DeepLift and
    Guided Backprop (which only know ``nn.ReLU``) apply their rules to it exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.low = nn.ReLU()
        self.high = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.low(x) - self.high(x - 6.0)


_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu_}
_RELU6_FUNCTIONS = {F.relu6}
_NONLINEAR_MODULES = (nn.ReLU, nn.ReLU6, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus)
_UNSUPPORTED_MODULES = (nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish, nn.Hardtanh, nn.Hardsigmoid)


def _fresh_module(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.ReLU6):
        return _ReLU6AsReLUs()
    if isinstance(module, nn.ReLU):
        return nn.ReLU()
    new = copy.deepcopy(module)
    if hasattr(new, "inplace"):
        new.inplace = False
    return new


def fresh_nonlinearities(model: nn.Module) -> nn.Module:
    """A copy of ``model`` where every *call* of a nonlinearity has its own, non-inplace module.

    Captum's DeepLift/DeepLiftShap and Guided Backprop override the backward pass of
    ``nn.ReLU`` (and a few other) *modules*. A module called twice in one forward pass (e.g.
    ``self.relu`` reused in a ResNet block, or EfficientNet's shared ``_swish``) and functional
    calls (``F.relu``, ``torch.relu``, ``x.relu()``) break that silently. This traces the model
    with :mod:`torch.fx` and gives each call site a fresh module; ``ReLU6`` becomes
    ``relu(x) - relu(x - 6)`` with two ReLUs. The original model is not modified.

    Raises:
        ValueError: the model cannot be traced *and* reuses a nonlinearity module (the message
            names the reused modules); untraceable models without reuse are returned as a deep
            copy with a warning that functional ReLUs cannot be checked.
    """
    model = copy.deepcopy(model).eval()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - untraceable: fall back to checking for reuse
        reused = _reused_nonlinearities(model)
        if reused:
            raise ValueError(
                f"{type(model).__name__} calls the nonlinearity module(s) {', '.join(reused)} "
                "more than once per forward pass, which breaks DeepLift/Guided Backprop, and it "
                f"cannot be traced with torch.fx to fix that ({type(exc).__name__}: "
                f"{str(exc)[:120]}). Give every activation call its own nn.ReLU module."
            ) from exc
        warnings.warn(
            f"{type(model).__name__} cannot be traced with torch.fx; functional ReLU calls (if "
            "any) are invisible to DeepLift/Guided Backprop and get plain gradients.",
            stacklevel=2,
        )
        return model
    modules = dict(gm.named_modules())
    unsupported: set[str] = set()
    count = 0
    for node in list(gm.graph.nodes):
        new: nn.Module | None = None
        if node.op == "call_module":
            mod = modules[node.target]
            if isinstance(mod, _NONLINEAR_MODULES):
                new = _fresh_module(mod)
            elif isinstance(mod, _UNSUPPORTED_MODULES):
                unsupported.add(type(mod).__name__)
        elif node.op == "call_function" and node.target in _RELU_FUNCTIONS:
            new = nn.ReLU()
        elif node.op == "call_function" and node.target in _RELU6_FUNCTIONS:
            new = _ReLU6AsReLUs()
        elif node.op == "call_method" and node.target in ("relu", "relu_"):
            new = nn.ReLU()
        if new is None:
            continue
        name = f"_fresh_nonlinearity_{count}"
        count += 1
        gm.add_submodule(name, new)
        with gm.graph.inserting_after(node):
            replacement = gm.graph.call_module(name, (node.args[0],))
        node.replace_all_uses_with(replacement)
        gm.graph.erase_node(node)
    if unsupported:
        warnings.warn(
            f"Captum's DeepLift/Guided Backprop have no rule for {', '.join(sorted(unsupported))}; "
            "plain gradients pass through them.",
            stacklevel=2,
        )
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return gm.eval()


def _reused_nonlinearities(model: nn.Module, size: int = 32) -> list[str]:
    """Nonlinearity modules called more than once in a forward pass (needs a probe input)."""
    calls: dict[str, int] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, _NONLINEAR_MODULES):

            def hook(*_a: Any, name: str = name) -> None:
                calls[name] = calls.get(name, 0) + 1

            handles.append(mod.register_forward_hook(hook))
    probe = _probe_input(model, size)
    try:
        if probe is not None:
            with torch.no_grad():
                model(probe)
    except Exception:  # noqa: BLE001 - the probe shape may not fit; then we cannot tell
        calls.clear()
    finally:
        for h in handles:
            h.remove()
    return sorted(n for n, c in calls.items() if c > 1)


def _probe_input(model: nn.Module, size: int) -> torch.Tensor | None:
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            p = next(model.parameters())
            return torch.zeros(1, mod.in_channels, size, size, device=p.device, dtype=p.dtype)
    return None


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
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
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


# ---------------------------------------------------------------------------------------------
# the methods


class InputIBAExplainer(Explainer):
    """InputIBA (Zhang et al. 2021) through :class:`inputiba.InputIBA`.

    Raw output: the attribution mask (B, 1, H, W) in [0, 1] (``sigmoid(alpha)`` averaged over
    channels). The layer statistics must be estimated (:meth:`estimate`) or given.

    Args:
        model: the classifier.
        layer: dotted name of the feature-bottleneck layer (e.g. ``"_blocks.5"``).
        statistics: a ``LayerStatistics`` or a path to saved ones.
        preset: ``"fast"`` or ``"paper"``; other keyword arguments override fields of
            :class:`inputiba.InputIBAConfig`.
        seed: the core's per-sample seed (``seed + i`` for sample ``i``); default the preset's.
    """

    name = "inputiba"

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        *,
        statistics: Any = None,
        preset: str = "fast",
        seed: int | None = None,
        normalize: bool = True,
        **kwargs: Any,
    ):
        from inputiba.modalities.image import InputIBA

        super().__init__(model, seed=None, normalize=normalize)
        if seed is not None:
            kwargs["seed"] = seed
        self.explainer = InputIBA(model, layer, statistics, preset=preset, **kwargs)
        self.layer = layer

    def estimate(self, *args: Any, **kwargs: Any) -> Any:
        """Estimate the layer statistics (forwards to ``InputIBA.estimate``)."""
        return self.explainer.estimate(*args, **kwargs)

    @property
    def statistics(self) -> Any:
        """The wrapped explainer's layer statistics."""
        return self.explainer.statistics

    @statistics.setter
    def statistics(self, value: Any) -> None:
        self.explainer.statistics = value

    def with_model(self, model: nn.Module) -> Explainer:
        """Same settings on another model: statistics re-estimated and all stages rerun on it
        (``InputIBA.with_model``)."""
        new = copy.copy(self)
        new.model = model
        new.explainer = self.explainer.with_model(model)
        return new

    def _raw(self, x: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.explainer.attribute(x, target=targets, **kwargs)


class IBAExplainer(InputIBAExplainer):
    """IBA (Schulz et al. 2020), InputIBA's stage 1 alone, through :class:`inputiba.IBA`.

    Raw output: the capacity map in bits per pixel, (B, 1, H, W), upsampled from the layer.
    Keyword arguments go to :class:`inputiba.IBA` (``beta``, ``steps``, ``lr``, ...).
    """

    name = "iba"

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        *,
        statistics: Any = None,
        seed: int | None = None,
        normalize: bool = True,
        **kwargs: Any,
    ):
        from inputiba.modalities.image import IBA

        Explainer.__init__(self, model, seed=None, normalize=normalize)
        if seed is not None:
            kwargs["seed"] = seed
        self.explainer = IBA(model, layer, statistics, **kwargs)
        self.layer = layer

    def _raw(self, x: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.explainer.attribute(x, targets, upsample=True, **kwargs)


class GradCAM(Explainer):
    """Grad-CAM (Selvaraju et al. 2017) with Captum's ``LayerGradCam``.

    ``cam = sum_c mean_uv(d logit / d A_c) * A_c`` at the layer; the map is ``ReLU(cam)``
    upsampled bilinearly to the input (align_corners=False). Raw: ``cam`` (B, 1, h, w), signed.

    Args:
        layer: dotted layer name; ``None`` picks :func:`last_spatial_layer` at the first call.
    """

    name = "gradcam"

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        *,
        seed: int | None = None,
        normalize: bool = True,
    ):
        super().__init__(model, seed=seed, normalize=normalize)
        if layer is not None:
            get_layer(model, layer)
        self.layer = layer
        self._checked: set[str] = set()

    def with_model(self, model: nn.Module) -> Explainer:
        new = copy.copy(self)
        new.model = model
        new._checked = set()
        return new

    def _raw(self, x: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        from captum.attr import LayerGradCam

        if self.layer is None:
            self.layer = last_spatial_layer(self.model, x)
        if self.layer not in self._checked:
            count = _call_counts(self.model, x[:1]).get(self.layer, (0, False))[0]
            if count != 1:
                raise ValueError(
                    f"Grad-CAM layer {self.layer!r} is called {count} times per forward pass; "
                    "choose a layer that runs exactly once (e.g. a block, not a shared "
                    "activation module)"
                )
            self._checked.add(self.layer)
        cam = LayerGradCam(self.model, get_layer(self.model, self.layer))
        return cam.attribute(x, target=targets, relu_attributions=False, **kwargs)

    def _to_map(self, raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return resize_map(raw.clamp(min=0), tuple(x.shape[-2:]))


class IntegratedGradients(Explainer):
    """Integrated Gradients (Sundararajan et al. 2017) with Captum.

    Raw: (B, C, H, W) signed attributions, which sum to ``logit(x) - logit(baseline)``.

    Args:
        baseline: value or tensor broadcastable to the inputs (0 = the mean image when
            inputs are normalised).
        n_steps: integration points (Gauss-Legendre).
        internal_batch_size: interpolated inputs per forward pass (memory bound).
        reduction: ``"abs"`` or ``"positive"`` (see :func:`reduce_channels`).
    """

    name = "integrated_gradients"

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        *,
        baseline: float | torch.Tensor = 0.0,
        n_steps: int = 50,
        internal_batch_size: int = 64,
        reduction: str = "abs",
        seed: int | None = None,
        normalize: bool = True,
    ):
        super().__init__(model, seed=seed, normalize=normalize)
        reduce_channels(torch.zeros(1, 1, 1, 1), reduction)  # validate early
        self.reduction = reduction
        self.baseline = baseline
        self.n_steps = n_steps
        self.internal_batch_size = internal_batch_size

    def _raw(self, x: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        from captum.attr import IntegratedGradients as CaptumIG

        baseline = self.baseline
        if isinstance(baseline, torch.Tensor):
            baseline = baseline.to(x).expand_as(x)
        return CaptumIG(self.model).attribute(
            x,
            baselines=baseline,
            target=targets,
            n_steps=kwargs.pop("n_steps", self.n_steps),
            internal_batch_size=max(
                kwargs.pop("internal_batch_size", self.internal_batch_size), x.shape[0]
            ),
            **kwargs,
        )


class GuidedBackprop(Explainer):
    """Guided Backprop (Springenberg et al. 2015) with Captum, on a copy of the model whose
    every ReLU call has its own module (:func:`fresh_nonlinearities`).

    Raw: (B, C, H, W) signed gradients. ``reduction`` as in :class:`IntegratedGradients`.
    """

    name = "guided_backprop"

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        *,
        reduction: str = "abs",
        seed: int | None = None,
        normalize: bool = True,
    ):
        super().__init__(model, seed=seed, normalize=normalize)
        reduce_channels(torch.zeros(1, 1, 1, 1), reduction)
        self.reduction = reduction

    def _fresh(self) -> nn.Module:
        # rebuilt at every call (cheap next to the attribution): a model changed in place,
        # e.g. randomised by a sanity check, is never explained through a stale copy
        fresh = fresh_nonlinearities(self.model)
        for p in fresh.parameters():
            p.requires_grad_(False)
        return fresh

    def _raw(self, x: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        from captum.attr import GuidedBackprop as CaptumGBP

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*backward hooks.*")
            return CaptumGBP(self._fresh()).attribute(x, target=targets, **kwargs)


class DeepSHAP(GuidedBackprop):
    """DeepSHAP: Captum's ``DeepLiftShap`` (DeepLift rescale rule averaged over a background).

    Runs on a copy of the model with a fresh module per nonlinearity call
    (:func:`fresh_nonlinearities`): a reused ReLU would otherwise silently give wrong
    multipliers. Raw: (B, C, H, W) signed; per sample they sum to
    ``logit(x) - mean_b logit(background_b)`` (up to numerical error).

    Args:
        background: (N, C, H, W) reference inputs (e.g. real images of the dataset, the
            recommended choice). Default: ``n_background`` draws of N(0, 1) in the normalised
            input space (InputIBA's noise model), drawn per call under the explainer's seed.
        n_background: size of the default background.
        reduction: as in :class:`IntegratedGradients`.
    """

    name = "deepshap"

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        *,
        background: torch.Tensor | None = None,
        n_background: int = 8,
        reduction: str = "abs",
        seed: int | None = 0,
        normalize: bool = True,
    ):
        super().__init__(model, reduction=reduction, seed=seed, normalize=normalize)
        if background is not None and (background.dim() != 4 or background.shape[0] < 1):
            raise ValueError(
                f"background must be (N, C, H, W) with N >= 1, got {tuple(background.shape)}"
            )
        self.background = background
        self.n_background = n_background

    def _raw(self, x: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        from captum.attr import DeepLiftShap

        background = self.background
        if background is None:
            background = torch.randn(self.n_background, *x.shape[1:], device=x.device)
        background = background.to(x)
        if background.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"background images {tuple(background.shape[1:])} do not match the inputs "
                f"{tuple(x.shape[1:])}"
            )
        if background.shape[0] == 1:  # DeepLiftShap needs at least two references
            background = background.repeat(2, 1, 1, 1)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(backward hooks|reused|inplace).*")
            return DeepLiftShap(self._fresh()).attribute(
                x, baselines=background, target=targets, **kwargs
            )


class ExtremalPerturbation(Explainer):
    """Extremal Perturbation (Fong, Patrick, Vedaldi 2019), see :mod:`inputiba.methods.extremal`.

    Raw: (B, len(areas), H, W) masks in [0, 1], one per area; the map is their mean.

    Args:
        model: the classifier.
        layer: unused (the method needs no layer).
        areas: fractions of the image kept, optimised together.
        seed: as in :class:`Explainer`.
        normalize: as in :class:`Explainer`.
        **kwargs: the options of :func:`inputiba.methods.extremal.extremal_perturbation`
            (``steps``, ``lr``, ``stride``, ``sigma``, ``perturbation``, ``sigma_max``,
            ``levels``, ``lambda_start``, ``lambda_end``, ``batch_size``, ``progress``).
    """

    name = "extremal_perturbation"

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        *,
        areas: Sequence[float] = (0.05, 0.1, 0.2),
        seed: int | None = None,
        normalize: bool = True,
        **kwargs: Any,
    ):
        super().__init__(model, seed=seed, normalize=normalize)
        self.areas = tuple(areas)
        self.options = kwargs

    def _raw(self, x: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        options = {**self.options, **kwargs}
        areas = options.pop("areas", self.areas)
        return extremal_perturbation(self.model, x, targets, areas, **options)

    def _to_map(self, raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return raw.mean(dim=1, keepdim=True)


class RandomExplainer(Explainer):
    """Random maps, U(0, 1) per pixel, independent of the model (the paper's floor).

    Deterministic under ``seed`` (default 0).
    """

    name = "random"

    def __init__(
        self,
        model: nn.Module,
        layer: str | None = None,
        *,
        seed: int | None = 0,
        normalize: bool = True,
    ):
        super().__init__(model, seed=seed, normalize=normalize)

    def _raw(self, x: torch.Tensor, targets: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        b, _, h, w = x.shape
        return torch.rand(b, 1, h, w, device=x.device)


#: Registry name -> explainer class (names as the CLI's ``--method``).
EXPLAINERS: dict[str, type[Explainer]] = {
    cls.name: cls
    for cls in (
        InputIBAExplainer,
        IBAExplainer,
        GradCAM,
        IntegratedGradients,
        GuidedBackprop,
        DeepSHAP,
        ExtremalPerturbation,
        RandomExplainer,
    )
}

_NEEDS_LAYER = ("inputiba", "iba")


def available_explainers() -> list[str]:
    """The registry's names, in the paper's order."""
    return list(EXPLAINERS)


def get_explainer(name: str, model: nn.Module, layer: str | None = None, **kwargs: Any) -> Explainer:
    """Build the explainer called ``name`` on ``model``.

    Args:
        name: one of :func:`available_explainers` (``-`` and ``_`` are interchangeable,
            case-insensitive).
        model: the classifier.
        layer: the layer for InputIBA/IBA (required) and Grad-CAM (default: the last spatial
            layer); ignored by the other methods.
        **kwargs: passed to the explainer's constructor (e.g. ``seed``, ``statistics``,
            ``preset``, ``areas``, ``n_steps``).

    Raises:
        ValueError: unknown name (with close matches) or missing layer.
    """
    key = name.strip().lower().replace("-", "_")
    aliases = {"ig": "integrated_gradients", "grad_cam": "gradcam", "gbp": "guided_backprop",
               "ep": "extremal_perturbation", "deeplift_shap": "deepshap", "input_iba": "inputiba"}
    key = aliases.get(key, key)
    if key not in EXPLAINERS:
        import difflib

        close = difflib.get_close_matches(key, list(EXPLAINERS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown attribution method {name!r}.{hint} Available: {', '.join(EXPLAINERS)}"
        )
    if key in _NEEDS_LAYER and layer is None:
        raise ValueError(f"method {key!r} needs a layer (e.g. layer='_blocks.5')")
    cls = EXPLAINERS[key]
    return cls(model, layer, **kwargs)  # type: ignore[call-arg]

