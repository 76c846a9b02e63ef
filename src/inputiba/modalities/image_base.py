"""What IBA and InputIBA share: the input check, the model, the layer and its statistics, the
folded (and optionally compiled) network split at the layer, and the per-call preparation of
inputs, targets and seeds (:class:`_LayerAttribution`)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from inputiba.core.config import InputIBAConfig
from inputiba.core.functional import target_probability
from inputiba.core.fusion import fold_batchnorm
from inputiba.core.layers import (
    LayerSplit,
    channels_last,
    frozen_eval,
    get_layer,
    to_channels_last,
)
from inputiba.core.memory import keep_freed_memory
from inputiba.core.precision import compiled
from inputiba.core.rng import SampleRNG, ensemble_seeds
from inputiba.core.statistics import LayerStatistics, _model_device, estimate_layer_statistics
from inputiba.core.targets import TargetType, resolve_targets
from inputiba.errors import ArgumentTypeError, InputError, ModelError, StatisticsError


def check_image_batch(inputs: Any) -> torch.Tensor:
    """``inputs`` as a finite float (B, C, H, W) tensor, or an InputError (a ValueError) saying what is wrong."""
    if not isinstance(inputs, torch.Tensor):
        inputs = torch.as_tensor(np.asarray(inputs))
    if inputs.dim() == 3:
        raise InputError(
            f"inputs must be a batch (B, C, H, W); got shape {tuple(inputs.shape)} - "
            "add a batch dimension with inputs[None]"
        )
    if inputs.dim() != 4:
        raise InputError(f"inputs must be a (B, C, H, W) tensor, got shape {tuple(inputs.shape)}")
    if inputs.shape[0] == 0:
        raise InputError("inputs is an empty batch")
    if not torch.is_floating_point(inputs):
        raise InputError(f"inputs must be a float tensor (normalised images), got {inputs.dtype}")
    if not torch.isfinite(inputs).all():
        raise InputError("inputs contain NaN or infinite values")
    return inputs


def model_forward(model: nn.Module, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """``model(x)``; a model that fails on the inputs (wrong channels, size, dtype) is an
    :class:`InputError` naming the input shape (out-of-memory errors pass unchanged)."""
    try:
        return model(x, **kwargs)
    except torch.cuda.OutOfMemoryError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        text = " ".join(str(exc).split())
        raise InputError(f"The model failed on inputs of shape {tuple(x.shape)}: "
                         f"{type(exc).__name__}: {text[:300]}") from exc


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
            raise ArgumentTypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.layer = layer
        self.module = get_layer(model, layer)
        self.config = config
        self.progress = progress
        self._split: LayerSplit | None = None
        # with config.compile: (weights key, network, split), reused while the weights hold
        self._compiled_network: tuple[Any, nn.Module, LayerSplit] | None = None
        self.statistics = statistics  # type: ignore[assignment]

    @property
    def statistics(self) -> LayerStatistics | None:
        """The layer's statistics (estimated with :meth:`estimate`, or loaded)."""
        return self._statistics

    @statistics.setter
    def statistics(self, value: LayerStatistics | str | os.PathLike[str] | None) -> None:
        if value is not None and not isinstance(value, LayerStatistics):
            value = LayerStatistics.load(value)
        if value is not None and len(value.shape) != 3:
            raise ModelError(
                f"Layer {self.layer!r} gives features of shape {tuple(value.shape)} per sample; "
                "image explainers need a layer with a (C, h, w) feature map, e.g. a "
                "convolutional block"
            )
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
            raise StatisticsError(
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
        batch norms folded into convolutions (:func:`~inputiba.core.fusion.fold_batchnorm`), made
        anew per call so that it always reflects the model's current weights; otherwise (or
        when nothing folds) the model itself, whose split is cached.

        With ``config.compile``, the folded copy (and its compiled passes) is kept and reused
        while the model's weights are unchanged (:func:`_weights_key`), so that compilation
        is paid once, not per call.
        """
        key = None
        if self.config.compile:
            key = _weights_key(self.model, probe)
            if self._compiled_network is not None and self._compiled_network[0] == key:
                return self._compiled_network[1], self._compiled_network[2]
        net = self.model
        if self.config.fold_batchnorm:
            net, _ = fold_batchnorm(self.model, probe, keep=(self.layer,))
        if net is not self.model:
            if self.config.channels_last:
                net = net.to(memory_format=torch.channels_last)
            split = LayerSplit(net, self.layer)
        else:
            if self._split is None:
                self._split = LayerSplit(self.model, self.layer)
            split = self._split
        if key is not None:
            self._compiled_network = (key, net, split)
        return net, split

    def _stats_tensors(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        stats = self._require_statistics()
        if tuple(r.shape[1:]) != stats.shape:
            raise InputError(
                f"Layer {self.layer!r} gives features of shape {tuple(r.shape[1:])} but the "
                f"statistics were estimated for {stats.shape}: estimate them on inputs of the "
                "same size"
            )
        mean = stats.mean.to(r.device, r.dtype)
        std = stats.std.to(r.device, r.dtype).clamp_min(self.config.min_std)
        active = stats.active(self.config.active_threshold).to(r.device, r.dtype)
        return mean, std, active

    def _prepare(self, inputs: Any, target: TargetType, seed: int | Sequence[int] | None,
                 members: int = 1
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, SampleRNG]:
        """(x on the model's device, targets, their (B,) probabilities, random streams); call
        inside :meth:`_running`.

        With ``members`` K > 1, x and the targets are repeated K times per sample
        (sample-major, (B * K, ...)) with one random stream per run
        (:func:`~inputiba.core.rng.ensemble_seeds`).
        """
        x, device = self._to_model(check_image_batch(inputs))
        with torch.no_grad():
            logits = model_forward(self.model, x)
        t = resolve_targets(logits, target)
        probs = target_probability(logits, t)
        seeds = ensemble_seeds(self.config.seed if seed is None else seed, x.shape[0], members)
        if members > 1:
            x = to_channels_last(x.repeat_interleave(members, dim=0), self.config.channels_last)
            t = t.repeat_interleave(members)
        return x, t, probs, SampleRNG(seeds, device)

    def _running(self) -> Any:
        """The model in eval mode (and channels-last if configured) for the run, restored after."""
        from contextlib import ExitStack

        stack = ExitStack()
        stack.enter_context(frozen_eval(self.model))
        stack.enter_context(channels_last(self.model, self.config.channels_last))
        return stack


def _weights_key(model: nn.Module, probe: torch.Tensor) -> tuple[Any, ...]:
    """What a kept copy of ``model`` must match to be reused: every parameter and buffer's
    identity, version (bumped by in-place changes) and sum (catches ``.data`` rebinding), and
    the input's shape, dtype and device."""
    tensors = [*model.parameters(), *model.buffers()]
    with torch.no_grad():
        sums = [float(t.double().sum()) if t.is_floating_point() else 0.0 for t in tensors]
    return (tuple((id(t), t._version) for t in tensors), tuple(sums),
            tuple(probe.shape[1:]), probe.dtype, probe.device)


def _compiled_passes(net: nn.Module, split: LayerSplit) -> tuple[Any, Any, Any]:
    """(tail, head, full network) compiled with ``torch.compile``, kept on ``split`` so that a
    reused network (:meth:`_LayerAttribution._network`) is not compiled again. The head returns
    R alone. An untraced split's hooks stay eager (only the full network is compiled)."""
    cached = getattr(split, "_inputiba_compiled", None)
    if cached is None:
        tail: Any = split.tail
        head: Any = None
        if split.traced:
            tail, head_and_context = compiled(split.tail), compiled(split.head)
            head = lambda inp: head_and_context(inp)[0]  # noqa: E731
        cached = (tail, head, compiled(net))
        split._inputiba_compiled = cached  # type: ignore[attr-defined]
    return cached
