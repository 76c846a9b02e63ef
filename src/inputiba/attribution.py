"""The attribution classes: :class:`IBA` (stage 1 alone) and :class:`InputIBA` (stages 1-3).

They own the model, the layer, the statistics and the hooks; the math lives in
:mod:`inputiba.bottleneck` and :mod:`inputiba.gan`. Both follow Captum's convention
``attribute(inputs, target=None)`` and return maps shaped like the inputs' spatial grid.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ._malloc import keep_freed_memory
from ._rng import SampleRNG, sample_seeds
from .bottleneck import (
    BottleneckResult,
    fit_feature_bottleneck,
    fit_input_bottleneck,
    row_chunks,
)
from .config import InputIBAConfig, resolve_config
from .estimator import LayerStatistics, _model_device, estimate_layer_statistics
from .functional import capacity_map, target_probability
from .fusion import fold_batchnorm
from .gan import ImageCritic, fit_gan_mask
from .layers import (
    LayerSplit,
    channels_last,
    frozen_eval,
    get_layer,
    layer_output,
    to_channels_last,
)

__all__ = ["IBA", "InputIBA", "InputIBAResult", "resolve_targets"]

TargetType = int | Sequence[int] | torch.Tensor | None


def resolve_targets(logits: torch.Tensor, target: TargetType) -> torch.Tensor:
    """(B,) long targets: the predicted class for None, an int for all, or one per sample.

    Raises:
        ValueError: wrong number of targets, or a target outside the model's classes.
    """
    b, k = logits.shape[0], logits.shape[-1]
    n_classes = 2 if k == 1 else k
    if target is None:
        if k == 1:
            return (logits.view(-1) > 0).long()
        return logits.argmax(-1)
    t = torch.as_tensor(target, device=logits.device).long().view(-1)
    if t.numel() == 1:
        t = t.expand(b).clone()
    if t.numel() != b:
        raise ValueError(f"Got {t.numel()} targets for a batch of {b} samples")
    bad = t[(t < 0) | (t >= n_classes)]
    if bad.numel():
        raise ValueError(
            f"Target {int(bad[0])} is out of range: the model has {n_classes} classes "
            f"(0..{n_classes - 1})"
        )
    return t


def _check_inputs(inputs: torch.Tensor) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor):
        inputs = torch.as_tensor(np.asarray(inputs))
    if inputs.dim() == 3:
        raise ValueError(
            f"inputs must be a batch (B, C, H, W); got shape {tuple(inputs.shape)} - "
            "add a batch dimension with inputs[None]"
        )
    if inputs.dim() != 4:
        raise ValueError(f"inputs must be a (B, C, H, W) tensor, got shape {tuple(inputs.shape)}")
    if inputs.shape[0] == 0:
        raise ValueError("inputs is an empty batch")
    if not torch.is_floating_point(inputs):
        raise ValueError(f"inputs must be a float tensor (normalised images), got {inputs.dtype}")
    if not torch.isfinite(inputs).all():
        raise ValueError("inputs contain NaN or infinite values")
    return inputs


class _LayerAttribution:
    """Shared by IBA and InputIBA: model, layer, statistics, split, targets."""

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        statistics: LayerStatistics | str | os.PathLike[str] | None,
        config: InputIBAConfig,
        progress: bool,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.layer = layer
        self.module = get_layer(model, layer)
        self.config = config
        self.progress = progress
        self._split: LayerSplit | None = None
        self.statistics = statistics  # type: ignore[assignment]

    @property
    def statistics(self) -> LayerStatistics | None:
        """The layer's statistics (estimated with :meth:`estimate`, or loaded)."""
        return self._statistics

    @statistics.setter
    def statistics(self, value: LayerStatistics | str | os.PathLike[str] | None) -> None:
        if value is not None and not isinstance(value, LayerStatistics):
            value = LayerStatistics.load(value)
        self._statistics = value
        # (batches, n_samples) of the estimate, set by :meth:`estimate` when the batches can be
        # iterated again; statistics set by hand have no batches to re-estimate from
        self._estimation: tuple[Iterable[Any], int | None] | None = None

    def estimate(
        self, batches: Iterable[Any], n_samples: int | None = 1000, progress: bool = True
    ) -> LayerStatistics:
        """Stage 0: estimate the layer's statistics from ``batches`` and keep them.

        Args:
            batches: iterable of tensors, (input, label) pairs or dicts, normalised like
                the inputs to explain. A re-iterable one (a list, a DataLoader) is kept, so
                that :meth:`with_model` can estimate another model's statistics from it.
            n_samples: stop after this many samples (the paper uses 1,000).
            progress: progress bar.
        """
        self.statistics = estimate_layer_statistics(
            self.model, self.layer, batches, n_samples=n_samples, progress=progress
        )
        self._estimation = None if isinstance(batches, Iterator) else (batches, n_samples)
        return self.statistics

    def with_model(self, model: nn.Module) -> _LayerAttribution:
        """The same method, layer and settings on another model (e.g. a randomised copy).

        Its layer statistics are estimated on ``model`` from the batches of the last
        :meth:`estimate` (the bottleneck's noise must match that model's layer). When those
        batches cannot be iterated again (a generator) or the statistics were loaded, the new
        explainer shares this one's statistics, with a warning.
        """
        new = type(self).__new__(type(self))
        _LayerAttribution.__init__(new, model, self.layer, None, self.config, self.progress)
        if self._estimation is not None:
            batches, n_samples = self._estimation
            new.estimate(batches, n_samples=n_samples, progress=False)
        elif self.statistics is not None:
            warnings.warn(
                f"The explainer for another model uses the statistics of {self.layer!r} in the "
                "original model: estimate() was not given re-iterable batches (a list or a "
                "DataLoader) to estimate the new model's",
                stacklevel=2,
            )
            new.statistics = self.statistics
        return new

    def _require_statistics(self) -> LayerStatistics:
        if self._statistics is None:
            raise RuntimeError(
                "No layer statistics: call .estimate(batches) first, or set .statistics to a "
                "LayerStatistics (or a file saved with LayerStatistics.save)"
            )
        return self._statistics

    def _to_model(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.device]:
        """``inputs`` on the model's device (channels-last if configured), and that
        device; on a CPU, also keeps freed memory for reuse (``config.keep_freed_memory``)."""
        device = _model_device(self.model)
        if self.config.keep_freed_memory and device.type == "cpu":
            keep_freed_memory()
        return to_channels_last(inputs.to(device), self.config.channels_last), device

    def _network(self, probe: torch.Tensor) -> tuple[nn.Module, LayerSplit]:
        """The network the optimisation loops run, and its split at the layer.

        With ``config.fold_batchnorm``, a private copy of the (frozen, eval-mode) model with
        batch norms folded into convolutions (:func:`~inputiba.fusion.fold_batchnorm`), made
        anew per call so that it always reflects the model's current weights; otherwise (or
        when nothing folds) the model itself, whose split is cached.
        """
        net = self.model
        if self.config.fold_batchnorm:
            net, _ = fold_batchnorm(self.model, probe, keep=(self.layer,))
        if net is not self.model:
            if self.config.channels_last:
                net = net.to(memory_format=torch.channels_last)
            return net, LayerSplit(net, self.layer)
        if self._split is None:
            self._split = LayerSplit(self.model, self.layer)
        return net, self._split

    def _stats_tensors(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        stats = self._require_statistics()
        if tuple(r.shape[1:]) != stats.shape:
            raise ValueError(
                f"Layer {self.layer!r} gives features of shape {tuple(r.shape[1:])} but the "
                f"statistics were estimated for {stats.shape}: estimate them on inputs of the "
                "same size"
            )
        mean = stats.mean.to(r.device, r.dtype)
        std = stats.std.to(r.device, r.dtype).clamp_min(self.config.min_std)
        active = stats.active(self.config.active_threshold).to(r.device, r.dtype)
        return mean, std, active

    def _feature_stage(
        self, split: LayerSplit, x: torch.Tensor, target: torch.Tensor, rng: SampleRNG,
        sigma: float, beta: float, steps: int, lr: float, draws: int,
    ) -> tuple[torch.Tensor, BottleneckResult]:
        max_batch = self.config.max_batch
        x_rep = to_channels_last(x.repeat_interleave(draws, dim=0), self.config.channels_last)
        # the head runs once, per fixed chunk of rows (its context may hold the chunk's size)
        contexts, parts = {}, []
        with torch.no_grad():
            for rows in row_chunks(x_rep.shape[0], max_batch):
                r_rows, contexts[rows.start] = split.head(x_rep[rows])
                parts.append(r_rows)
        r = torch.cat(parts)[::draws]
        mean, std, active = self._stats_tensors(r)
        res = fit_feature_bottleneck(
            lambda z, rows: split.tail(z, contexts[rows.start]), r, target, mean, std, active,
            rng, beta=beta, steps=steps, lr=lr, draws=draws, sigma=sigma,
            init_alpha=self.config.init_alpha, max_batch=max_batch, progress=self.progress,
        )
        return r, res


@dataclass
class InputIBAResult:
    """Everything :meth:`InputIBA.attribute` computes, with ``return_details=True``.

    Attributes:
        attribution: (B, 1, H, W) the InputIBA map in [0, 1] (channel mean of sigmoid(alpha)).
        feature_map: (B, 1, H, W) stage-1 capacity in bits, upsampled (bits per pixel).
        feature_capacity: (B, 1, h, w) stage-1 capacity in bits at the layer's resolution.
        gan_mask: (B, 1, H, W) the WGAN's input mask (channel mean) in [0, 1].
        input_capacity: (B, 1, H, W) stage-3 KL summed over channels, in bits.
        targets: (B,) the explained classes. probabilities: (B,) their probabilities.
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
        beta, steps, lr, draws, sigma: IBA's settings (IBA's own defaults: beta 10, 10 steps,
            lr 1, 10 draws, smoothing sigma 1 feature cell).
        progress: show progress bars.

    Example:
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
        inputs = _check_inputs(inputs)
        cfg = self.config
        x, device = self._to_model(inputs)
        cl = cfg.channels_last
        with frozen_eval(self.model), channels_last(self.model, cl):
            with torch.no_grad():
                logits = self.model(x)
            t = resolve_targets(logits, target)
            rng = SampleRNG(sample_seeds(cfg.seed if seed is None else seed, x.shape[0]), device)
            _, split = self._network(x[:1])
            _, res = self._feature_stage(split, x, t, rng, cfg.feat_sigma, cfg.feat_beta,
                                         cfg.feat_steps, cfg.feat_lr, cfg.feat_draws)
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
        preset: ``"paper"`` (the original settings, the default) or ``"fast"`` (for CPUs), or an
            :class:`InputIBAConfig`.
        progress: show progress bars per stage.
        **overrides: any field of :class:`InputIBAConfig`, e.g. ``input_steps=30``.

    Example:
        >>> from inputiba import InputIBA
        >>> from inputiba.models import load_model
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
        preset: str | InputIBAConfig = "paper",
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
        return_details: bool = False,
    ) -> torch.Tensor | InputIBAResult:
        """Explain ``inputs`` for ``target``.

        Args:
            inputs: (B, C, H, W) inputs, normalised as the model expects.
            target: None (each sample's predicted class), an int for all samples, or one
                class per sample (list or (B,) tensor).
            seed: per-sample seeds (int: ``seed + i``; default the config's ``seed``); a
                sample's map depends only on its own input, target and seed.
            return_details: return an :class:`InputIBAResult` with the intermediate maps,
                losses and timings instead of the map alone.

        Returns:
            (B, 1, H, W) float tensor in [0, 1] on the inputs' device, or an
            :class:`InputIBAResult`.
        """
        inputs = _check_inputs(inputs)
        cfg = self.config
        x, device = self._to_model(inputs)
        cl = cfg.channels_last
        b, c, h, w = x.shape
        seconds: dict[str, float] = {}
        with frozen_eval(self.model), channels_last(self.model, cl):
            with torch.no_grad():
                logits = self.model(x)
            t = resolve_targets(logits, target)
            probs = target_probability(logits, t)
            rng = SampleRNG(sample_seeds(cfg.seed if seed is None else seed, b), device)

            t0 = time.perf_counter()
            net, split = self._network(x[:1])
            layer = get_layer(net, self.layer)
            seconds["setup"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            r, feat = self._feature_stage(split, x, t, rng, cfg.feat_sigma, cfg.feat_beta,
                                          cfg.feat_steps, cfg.feat_lr, cfg.feat_draws)
            seconds["feature"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            mean, std, active = self._stats_tensors(r)
            theta0 = capacity_map(feat.kl, (h, w)).expand(b, c, h, w)
            critic = ImageCritic(b, r.shape[1], tuple(r.shape[-2:])).to(device, r.dtype)
            critic.init_per_sample(rng)
            gan = fit_gan_mask(
                lambda inp, _samples: layer_output(net, layer, to_channels_last(inp, cl)),
                x, r, feat.kl if cfg.gan_real == "capacity" else feat.lamb, critic, rng,
                theta_init=theta0, real_noise=cfg.gan_real,
                feature_mean=mean, feature_std=std, active=active,
                dataset_size=cfg.gan_dataset_size, subset_size=cfg.gan_subset_size,
                batch_size=cfg.gan_batch_size, epochs=cfg.gan_epochs,
                critic_lr=cfg.gan_critic_lr, clip=cfg.gan_clip,
                critic_iters=cfg.gan_critic_iters, lr_mean=cfg.gan_lr_mean,
                lr_scale=cfg.gan_lr_scale, lr_theta=cfg.gan_lr_theta, max_batch=cfg.max_batch,
                progress=self.progress,
            )
            seconds["gan"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            inp = fit_input_bottleneck(
                lambda z, _samples: net(to_channels_last(z, cl)), x, t, gan.mask, rng,
                mean=cfg.input_mean, std=cfg.input_std, beta=cfg.input_beta,
                steps=cfg.input_steps, lr=cfg.input_lr, draws=cfg.input_draws,
                sigma=cfg.input_sigma, init_alpha=cfg.init_alpha, max_batch=cfg.max_batch,
                progress=self.progress,
            )
            seconds["input"] = time.perf_counter() - t0

        attribution = torch.sigmoid(inp.alpha).mean(1, keepdim=True)
        if not return_details:
            return attribution.to(inputs.device)
        return InputIBAResult(
            attribution=attribution,
            feature_map=capacity_map(feat.kl, (h, w)),
            feature_capacity=capacity_map(feat.kl),
            gan_mask=gan.mask.mean(1, keepdim=True),
            input_capacity=capacity_map(inp.kl),
            targets=t,
            probabilities=probs,
            losses={"feature": feat.losses, "gan": gan.losses, "input": inp.losses},
            seconds=seconds,
            config=cfg,
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
