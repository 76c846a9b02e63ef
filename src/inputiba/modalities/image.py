"""InputIBA on images: the adapter that cuts a CNN at a layer, and the user-facing classes
:class:`InputIBA` (stages 1-3) and :class:`IBA` (stage 1 alone).

The classes own the model, the layer, the statistics and the hooks; the stages are the core's
(:func:`inputiba.core.pipeline.run_stages`), told by :class:`ImageStages` what is image-specific:

* stage 1 runs only the network after the layer (:class:`~inputiba.core.layers.LayerSplit`),
  on a private copy with batch norms folded into the convolutions
  (:func:`~inputiba.core.fusion.fold_batchnorm`);
* stage 2's generator masks the normalised image, one noise mean and scale per colour channel,
  starting from the stage-1 capacity upsampled to the image; its critics are
  :class:`~inputiba.core.gan.ImageCritic` (grouped convolutions: one per sample);
* stage 3's noise is N(``input_mean``, ``input_std``) in normalised pixel space and its lambda is
  smoothed spatially; the map is ``sigmoid(alpha)`` averaged over the colour channels.

Both classes follow Captum's convention ``attribute(inputs, target=None)`` and return maps
shaped like the inputs' spatial grid.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from inputiba.core.bottleneck import BottleneckResult, row_chunks
from inputiba.core.config import InputIBAConfig, check_setting, resolve_config
from inputiba.core.functional import capacity_map, normalized_logits, reduce_members
from inputiba.core.gan import ImageCritic
from inputiba.core.layers import (
    LayerSplit,
    get_layer,
    layer_output,
    to_channels_last,
)
from inputiba.core.pipeline import StageAdapter, run_feature_stage, run_stages
from inputiba.core.precision import network_pass
from inputiba.core.rng import SampleRNG
from inputiba.core.statistics import LayerStatistics
from inputiba.core.targets import TargetType
from inputiba.modalities.image_base import (
    _compiled_passes,
    _LayerAttribution,
    check_image_batch,
)

__all__ = ["IBA", "InputIBA", "InputIBAResult", "ImageStages", "check_image_batch"]


#: The image critic's width caps per ``gan_critic`` setting: "capped" (this project's
#: default) or "original" (no cap: 2C, 4C, C channels as the 2021 code).
CRITIC_WIDTHS: dict[str, tuple[int, int, int]] = {
    "capped": (256, 512, 128),
    "original": (2**31, 2**31, 2**31),
}


class ImageStages(StageAdapter):
    """A batch of images as the stages see it (:class:`~inputiba.core.pipeline.StageAdapter`).

    Computes the layer activation R once (the network's head, per fixed chunk of rows: the
    head's context may hold the chunk's size) for the ``draws`` copies of each image that
    stage 1 evaluates per step.

    Args:
        explainer: the :class:`IBA` / :class:`InputIBA` (model, layer, settings, statistics).
        net: the network the loops run (the folded copy or the model).
        split: its split at
            the layer.
        x: (B, C, H, W) normalised images on the model's device (channels-last if configured).
        feature_members: K: groups of K consecutive rows of ``x`` (an ensemble's runs of one
            image) share one stage-1 run (:attr:`~inputiba.core.pipeline.StageAdapter.feature_members`);
            the head then runs on every K-th image only.
    """

    def __init__(self, explainer: _LayerAttribution, net: nn.Module, split: LayerSplit,
                 x: torch.Tensor, feature_members: int = 1) -> None:
        cfg = explainer.config
        self.net, self.split, self.cl = net, split, cfg.channels_last
        self.critic_widths = CRITIC_WIDTHS[cfg.gan_critic]
        self.theta_from = cfg.gan_theta_init
        self.layer_module = get_layer(net, explainer.layer)
        self.feature_members = k = feature_members
        draws = cfg.feat_draws
        x_rep = to_channels_last(x[::k].repeat_interleave(draws, dim=0), self.cl)
        self._contexts: dict[int, Any] = {}
        parts = []
        with torch.no_grad():
            for rows in row_chunks(x_rep.shape[0], cfg.max_batch):
                r_rows, self._contexts[rows.start] = split.head(x_rep[rows])
                parts.append(r_rows)
        self.features = torch.cat(parts)[::draws].repeat_interleave(k, dim=0)
        self.feature_statistics = explainer._stats_tensors(self.features)
        self.inputs = self.gan_inputs = x
        self.input_noise = (cfg.input_mean, cfg.input_std)
        # the three kinds of network pass the loops make (config: precision, compile)
        dev = x.device.type
        tail: Any = split.tail
        head: Any = self._head_eager
        full: Any = net
        if cfg.compile:
            tail, compiled_head, full = _compiled_passes(net, split)
            head = compiled_head or head
        self._tail = network_pass(tail, cfg.precision, dev)
        self._head = network_pass(head, cfg.precision, dev)
        self._full = network_pass(full, cfg.precision, dev)

    def _head_eager(self, inputs: torch.Tensor) -> torch.Tensor:
        return layer_output(self.net, self.layer_module, inputs)

    def feature_tail(self, z: torch.Tensor, rows: slice) -> torch.Tensor:
        return self._tail(z, self._contexts[rows.start])

    def gan_features(self, inputs: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
        return self._head(to_channels_last(inputs, self.cl))

    def forward(self, z: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
        return self._full(to_channels_last(z, self.cl))

    def critic(self, rng: SampleRNG) -> nn.Module:
        r = self.features
        critic = ImageCritic(r.shape[0], r.shape[1], tuple(r.shape[-2:]),
                             max_channels=self.critic_widths).to(r.device, r.dtype)
        return critic.init_per_sample(rng)

    def theta_init(self, feature: BottleneckResult) -> torch.Tensor:
        # "capacity": the capacity in bits per pixel, as the original code
        b, c, h, w = self.inputs.shape
        cap = capacity_map(feature.kl, (h, w))
        if self.theta_from == "normalized":
            cap = normalized_logits(cap)
        return cap.expand(b, c, h, w)

    def prior(self, gan_mask: torch.Tensor) -> torch.Tensor:
        return gan_mask


@dataclass
class InputIBAResult:
    """Everything :meth:`InputIBA.attribute` computes, with ``return_details=True``.

    Attributes:
        attribution: (B, 1, H, W) the InputIBA map in [0, 1] (channel mean of sigmoid(alpha)).
        feature_map: (B, 1, H, W) stage-1 capacity in bits, upsampled (bits per pixel).
        feature_capacity: (B, 1, h, w) stage-1 capacity in bits at the layer's resolution.
        gan_mask: (B, 1, H, W) the WGAN's input mask (channel mean) in [0, 1].
        input_capacity: (B, 1, H, W) stage-3 KL summed over channels, in bits.
        targets: (B,) the explained classes.
        probabilities: (B,) their probabilities.
        losses: per stage, dicts of (B, steps) tensors.
        seconds: wall time per stage (``setup``: preparing the network, then ``feature``,
            ``gan``, ``input``).
        config: the settings used.
    """

    attribution: torch.Tensor
    feature_map: torch.Tensor
    feature_capacity: torch.Tensor
    gan_mask: torch.Tensor
    input_capacity: torch.Tensor
    targets: torch.Tensor
    probabilities: torch.Tensor
    losses: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    config: InputIBAConfig | None = None


class IBA(_LayerAttribution):
    """Information Bottleneck Attribution (Schulz et al., ICLR 2020) at a hidden layer.

    InputIBA's stage 1, usable on its own. The activation at the layer is computed once per
    sample; only the network after it runs inside the optimisation loop.

    Args:
        model: the classifier (put in eval mode during attribution; weights never change).
        layer: dotted name of the layer, e.g. ``"features.17"`` or ``"_blocks.5"``.
        statistics: :class:`LayerStatistics` or a path saved with it (else call :meth:`estimate`).
        beta: weight of the information loss (IBA's default 10).
        steps: optimisation steps (10).
        lr: Adam learning rate on the bottleneck's logits (1).
        draws: noise draws per step (10).
        sigma: smoothing of the bottleneck over the feature grid, in feature cells (1; 0: off).
        progress: show progress bars.

    Examples:
        >>> iba = IBA(model, "_blocks.5")                          # doctest: +SKIP
        >>> iba.estimate(loader, n_samples=1000)                   # doctest: +SKIP
        >>> bits = iba.attribute(x, target=285)                    # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        statistics: LayerStatistics | str | os.PathLike[str] | None = None,
        *,
        beta: float = 10.0,
        steps: int = 10,
        lr: float = 1.0,
        draws: int = 10,
        sigma: float = 1.0,
        min_std: float = 0.01,
        active_threshold: float = 0.01,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        cfg = resolve_config("paper", feat_beta=beta, feat_steps=steps, feat_lr=lr,
                             feat_draws=draws, feat_sigma=sigma, min_std=min_std,
                             active_threshold=active_threshold, seed=seed)
        super().__init__(model, layer, statistics, cfg, progress)

    def attribute(
        self,
        inputs: torch.Tensor,
        target: TargetType = None,
        *,
        upsample: bool = True,
        seed: int | Sequence[int] | None = None,
        return_details: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, BottleneckResult]:
        """IBA's capacity map in bits.

        Args:
            inputs: (B, C, H, W) normalised inputs.
            target: None (predicted class), an int, or one per sample.
            upsample: return (B, 1, H, W) (bits rescaled per input pixel) instead of the
                layer's (B, 1, h, w).
            seed: per-sample seeds (int: ``seed + i``; default the config's seed).
            return_details: also return the :class:`BottleneckResult`.
        """
        with self._running():
            x, t, _, rng = self._prepare(inputs, target, seed)
            net, split = self._network(x[:1])
            res = run_feature_stage(ImageStages(self, net, split, x), t, rng, self.config,
                                    self.progress)
        out = capacity_map(res.kl, tuple(x.shape[-2:]) if upsample else None)
        return (out, res) if return_details else out

    __call__ = attribute


class InputIBA(_LayerAttribution):
    """InputIBA (Zhang et al., NeurIPS 2021): input-resolution maps of predictive information.

    Three stages per batch of samples, each sample with its own parameters and target:
    (1) IBA at ``layer``; (2) a WGAN that finds an input mask whose effect at ``layer``
    matches the stage-1 bottleneck; (3) a bottleneck on the input with the GAN mask as prior.

    Args:
        model: the classifier (eval mode during attribution; weights never change; every hook
            is removed afterwards, also when an exception interrupts the run).
        layer: dotted name of the bottleneck layer, e.g. ``"features.17"`` (VGG16) or
            ``"_blocks.5"`` (EfficientNet-Lite0).
        statistics: :class:`LayerStatistics` or a path saved with it (else call :meth:`estimate`).
        preset: a name of :data:`~inputiba.core.config.PRESETS` (None:
            :data:`~inputiba.core.config.DEFAULT_PRESET`): ``"paper"`` (the original settings)
            or ``"fast"`` (for CPUs); or an :class:`InputIBAConfig`.
        progress: show progress bars per stage.
        **overrides: any field of :class:`InputIBAConfig`, e.g. ``input_steps=30``.

    Examples:
        >>> from inputiba import InputIBA
        >>> from inputiba.models.image import load_model
        >>> model, prep = load_model("efficientnet-lite0")                   # doctest: +SKIP
        >>> explainer = InputIBA(model, "_blocks.5", preset="fast")          # doctest: +SKIP
        >>> explainer.estimate(loader, n_samples=1000)                       # doctest: +SKIP
        >>> maps = explainer.attribute(prep.batch(images), target=None)     # doctest: +SKIP
        >>> maps.shape                                                       # doctest: +SKIP
        torch.Size([2, 1, 224, 224])
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        statistics: LayerStatistics | str | os.PathLike[str] | None = None,
        *,
        preset: str | InputIBAConfig | None = None,
        progress: bool = False,
        **overrides: Any,
    ) -> None:
        super().__init__(model, layer, statistics, resolve_config(preset, **overrides), progress)

    def attribute(
        self,
        inputs: torch.Tensor,
        target: TargetType = None,
        *,
        seed: int | Sequence[int] | None = None,
        ensemble: int | None = None,
        return_details: bool = False,
    ) -> torch.Tensor | InputIBAResult:
        """Explain ``inputs`` for ``target``.

        Args:
            inputs: (B, C, H, W) inputs, normalised as the model expects.
            target: None (each sample's predicted class), an int for all samples, or one
                class per sample (list or (B,) tensor).
            seed: per-sample seeds (int: ``seed + i``; default the config's ``seed``); a
                sample's map depends only on its own input, target and seed.
            ensemble: K >= 1 (default: the config's ``ensemble``, 1 unless a preset or
                override sets it): each sample's map combines K maps with independent seeds
                (their mean, or as the setting ``ensemble_reduce`` says: median or minimum),
                run as one batch of B * K (member ``k`` of sample ``i`` uses seed ``s_i + k``;
                an int ``seed`` gives ``s_i = seed + i * K``, a sequence gives the ``s_i``;
                see :func:`~inputiba.core.rng.ensemble_seeds`). It costs about K times one map
                and averages out the optimisation's noise.
            return_details: return an :class:`InputIBAResult` with the intermediate maps,
                losses and timings instead of the map alone (with ``ensemble`` K > 1, its
                maps are the members' means and its losses have B * K rows, sample-major).

        Returns:
            (B, 1, H, W) float tensor in [0, 1] on the inputs' device, or an
            :class:`InputIBAResult`.

        Raises:
            InputError: inputs of the wrong shape or dtype, with NaN, empty, of another size
                than the statistics', or that the model fails on.
            TargetError: a target out of range, not a class index, or the wrong number.
            StatisticsError: no statistics (call :meth:`estimate` or set them).
            ConfigError: ``ensemble`` not an integer >= 1. (The errors above are
                :class:`~inputiba.errors.InputIBAError`, and ``ValueError`` or
                ``RuntimeError``.)
        """
        k = check_setting("ensemble", self.config.ensemble if ensemble is None else ensemble)

        def members_mean(maps: torch.Tensor) -> torch.Tensor:  # (B * K, ...) -> (B, ...)
            return reduce_members(maps, k)

        with self._running():
            x, t, probs, rng = self._prepare(inputs, target, seed, members=k)
            t0 = time.perf_counter()
            net, split = self._network(x[:1])
            batch = ImageStages(self, net, split, x,
                                feature_members=k if self.config.ensemble_shared_stage1 else 1)
            setup = time.perf_counter() - t0
            res = run_stages(batch, t, rng, self.config, self.progress)
        attribution = reduce_members(torch.sigmoid(res.input.alpha).mean(1, keepdim=True), k,
                                     self.config.ensemble_reduce)
        if not return_details:
            return attribution.to(inputs.device if isinstance(inputs, torch.Tensor) else "cpu")
        h, w = x.shape[-2:]
        return InputIBAResult(
            attribution=attribution,
            feature_map=members_mean(capacity_map(res.feature.kl, (h, w))),
            feature_capacity=members_mean(capacity_map(res.feature.kl)),
            gan_mask=members_mean(res.gan.mask.mean(1, keepdim=True)),
            input_capacity=members_mean(capacity_map(res.input.kl)),
            targets=t[::k],
            probabilities=probs,
            losses=res.losses,
            seconds={"setup": setup, **res.seconds},
            config=self.config,
        )

    __call__ = attribute

    def explain_func(
        self, model: nn.Module, inputs: Any, targets: Any, **_: Any
    ) -> np.ndarray:
        """``explain_func(model, inputs, targets) -> (B, 1, H, W)`` numpy maps (Quantus style).

        When ``model`` is not this explainer's model (a randomised copy in a sanity check),
        everything is derived from that model (:meth:`with_model`): the layer statistics
        (re-estimated), and all three stages, with this explainer's settings.
        """
        explainer = self
        if model is not None and model is not self.model:
            explainer = self.with_model(model)
        x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor) else inputs)
        tgt = None if targets is None else torch.as_tensor(np.asarray(targets)).long().view(-1)
        return explainer.attribute(x.float(), tgt).detach().cpu().numpy()
