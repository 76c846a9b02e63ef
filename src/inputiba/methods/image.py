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

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from inputiba.core.config import DEFAULT_PRESET
from inputiba.core.functional import resize_map
from inputiba.core.layers import get_layer
from inputiba.errors import ConfigError, InputError, ModelError
from inputiba.methods.base import (
    Attribution,
    Explainer,
    _call_counts,
    last_spatial_layer,
    map_to_uint8,
    model_logits,
    normalize_map,
    reduce_channels,
    resolve_targets,
)
from inputiba.methods.extremal import extremal_perturbation
from inputiba.methods.nonlinearities import fresh_nonlinearities

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
        preset: a name of :data:`~inputiba.core.config.PRESETS` (default
            :data:`~inputiba.core.config.DEFAULT_PRESET`); other keyword arguments override fields of
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
        preset: str = DEFAULT_PRESET,
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
            count, shape = _call_counts(self.model, x[:1]).get(self.layer, (0, None))
            if count != 1:
                raise ModelError(
                    f"Grad-CAM layer {self.layer!r} is called {count} times per forward pass; "
                    "choose a layer that runs exactly once (e.g. a block, not a shared "
                    "activation module)"
                )
            if shape is None or len(shape) != 4:
                raise ModelError(
                    f"Grad-CAM needs a layer with a (B, C, h, w) output; layer {self.layer!r} "
                    f"gives {shape or 'no single tensor'}: choose a convolutional block"
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
        internal_batch_size: interpolated inputs per forward pass (memory bound; at least the
            batch). The maps do not depend on it; on a 2-core CPU 16 ran in half the time of 64
            (``inputiba compare``'s timings in the project's results) at a fraction of its
            memory.
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
        internal_batch_size: int = 16,
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
        max_batch: at most this many (sample, reference) pairs per pass (memory bound: Captum
            runs every sample against every reference at once; at least one sample per pass).
            The maps do not depend on it.
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
        max_batch: int = 8,
    ):
        super().__init__(model, reduction=reduction, seed=seed, normalize=normalize)
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        if background is not None and (background.dim() != 4 or background.shape[0] < 1):
            raise InputError(
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
            raise InputError(
                f"background images {tuple(background.shape[1:])} do not match the inputs "
                f"{tuple(x.shape[1:])}"
            )
        if background.shape[0] == 1:  # DeepLiftShap needs at least two references
            background = background.repeat(2, 1, 1, 1)
        per_pass = max(1, self.max_batch // background.shape[0])
        explainer = DeepLiftShap(self._fresh())
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(backward hooks|reused|inplace).*")
            return torch.cat([
                explainer.attribute(x[i:i + per_pass], baselines=background,
                                    target=targets[i:i + per_pass], **kwargs)
                for i in range(0, x.shape[0], per_pass)
            ])


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
        raise ConfigError(
            f"Unknown attribution method {name!r}.{hint} Available: {', '.join(EXPLAINERS)}"
        )
    if key in _NEEDS_LAYER and layer is None:
        raise ConfigError(f"method {key!r} needs a layer (e.g. layer='_blocks.5')")
    cls = EXPLAINERS[key]
    return cls(model, layer, **kwargs)  # type: ignore[call-arg]

