"""Stage 0: a layer's per-element statistics (mean, std, active neurons).

:class:`LayerStatistics` accumulates with Chan's parallel update (batched Welford) in float64,
so a batch of any size is one vectorised update and large activations do not lose precision.
:func:`estimate_layer_statistics` drives it over an iterable of batches.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from inputiba.core.layers import frozen_eval, get_layer, layer_output
from inputiba.errors import ArgumentTypeError, DataError, InputError

__all__ = [
    "LayerStatistics",
    "estimate_layer_statistics",
    "accumulate_statistics",
    "batch_inputs",
    "MIN_RECOMMENDED_SAMPLES",
]

#: Below this many samples the statistics are noisy; IBA recommends 10,000, the paper uses 1,000.
MIN_RECOMMENDED_SAMPLES = 100


class LayerStatistics:
    """Running mean, variance and non-zero count per element of a layer's output.

    Args:
        shape: the shape of one sample's features (C x H x W for images, D for tokens).
        device: where the accumulators live.

    Examples:
        >>> stats = LayerStatistics((4,))
        >>> stats.update(torch.tensor([[1., 0, 2, 3], [3., 0, 2, 5]]))
        >>> stats.mean
        tensor([2., 0., 2., 4.])
    """

    def __init__(self, shape: tuple[int, ...], device: torch.device | str = "cpu") -> None:
        self.shape = tuple(shape)
        self.n = 0
        self._mean = torch.zeros(self.shape, dtype=torch.float64, device=device)
        self._m2 = torch.zeros(self.shape, dtype=torch.float64, device=device)
        self._nonzero = torch.zeros(self.shape, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, features: torch.Tensor) -> None:
        """Add a batch of samples, ``features`` of shape (N, *shape)."""
        if tuple(features.shape[1:]) != self.shape:
            raise InputError(
                f"features of shape {tuple(features.shape[1:])} do not match the statistics' "
                f"shape {self.shape}"
            )
        nb = features.shape[0]
        if nb == 0:
            return
        f = features.detach().to(self._mean.device, torch.float64)
        mean_b = f.mean(0)
        m2_b = ((f - mean_b) ** 2).sum(0)
        n = self.n + nb
        delta = mean_b - self._mean
        self._mean += delta * (nb / n)
        self._m2 += m2_b + delta**2 * (self.n * nb / n)
        self._nonzero += (f != 0).sum(0)
        self.n = n

    @property
    def mean(self) -> torch.Tensor:
        """Mean per element (float32)."""
        return self._mean.float()

    @property
    def std(self) -> torch.Tensor:
        """Sample standard deviation per element (float32, unbiased, not floored)."""
        if self.n < 2:
            return torch.zeros_like(self._mean, dtype=torch.float32)
        return (self._m2 / (self.n - 1)).sqrt().float()

    def active(self, threshold: float = 0.01) -> torch.Tensor:
        """Boolean mask: elements non-zero in more than ``threshold`` of the samples."""
        if self.n == 0:
            return torch.zeros(self.shape, dtype=torch.bool, device=self._mean.device)
        return (self._nonzero / self.n) > threshold

    def to(self, device: torch.device | str) -> LayerStatistics:
        """Move the accumulators (in place) and return self."""
        self._mean = self._mean.to(device)
        self._m2 = self._m2.to(device)
        self._nonzero = self._nonzero.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "n": self.n,
            "mean": self._mean.cpu(),
            "m2": self._m2.cpu(),
            "nonzero": self._nonzero.cpu(),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> LayerStatistics:
        stats = cls(tuple(state["shape"]))
        stats.n = int(state["n"])
        stats._mean = state["mean"].to(torch.float64)
        stats._m2 = state["m2"].to(torch.float64)
        stats._nonzero = state["nonzero"].to(torch.float64)
        return stats

    def save(self, path: str | os.PathLike[str], **meta: Any) -> None:
        """Save to ``path`` (a ``torch.save`` file); ``meta`` (e.g. model and layer) is kept."""
        state = self.state_dict()
        state["meta"] = meta
        tmp = f"{os.fspath(path)}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LayerStatistics:
        """Load statistics written by :meth:`save`."""
        state = torch.load(path, map_location="cpu", weights_only=False)
        stats = cls.from_state_dict(state)
        stats.meta = state.get("meta", {})
        return stats

    def __repr__(self) -> str:
        return f"LayerStatistics(shape={self.shape}, n={self.n})"


def batch_inputs(batch: Any) -> torch.Tensor:
    """The input tensor of a batch: a tensor, an (input, label, ...) pair, or a dict.

    Dicts are read at ``"input"``, ``"inputs"``, ``"image"``, ``"images"`` or ``"pixel_values"``.
    """
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, Mapping):
        for key in ("input", "inputs", "image", "images", "pixel_values"):
            if key in batch:
                return batch[key]
    raise ArgumentTypeError(
        f"Cannot find the input tensor in a batch of type {type(batch).__name__}; yield tensors, "
        "(input, label) pairs, or dicts with an 'input' key"
    )


def accumulate_statistics(
    model: nn.Module,
    batches: Iterable[Any],
    features_of: Callable[[Any, int | None], tuple[int, dict[str, torch.Tensor]]],
    n_samples: int | None = None,
    progress: bool = True,
    unit: str = "sample",
    desc: str = "estimate statistics",
) -> dict[str, LayerStatistics]:
    """Drive :class:`LayerStatistics` over ``batches``: the loop that images and text share.

    Args:
        model: the classifier (in eval mode meanwhile, without gradients; restored after).
        batches: any iterable.
        features_of: ``features_of(batch, remaining) -> (count, {name: samples})``: runs the
            model on at most ``remaining`` (None: all) of the batch's ``count`` units (images,
            texts) and returns each layer's samples as (N, *shape) tensors (for text, N counts
            the real tokens of those texts).
        n_samples: stop after this many units (None: all batches).
        progress: tqdm bar.
        unit: the bar's unit, also named in the too-few-samples warning.
        desc: the bar's label.

    Returns:
        dict[str, LayerStatistics]: the statistics by layer name, on the CPU.

    Raises:
        ValueError: no samples were seen.
    """
    stats: dict[str, LayerStatistics] = {}
    seen = 0
    bar = tqdm(total=n_samples, desc=desc, unit=unit, disable=not progress)
    with frozen_eval(model), torch.no_grad():
        for batch in batches:
            remaining = None if n_samples is None else n_samples - seen
            count, samples = features_of(batch, remaining)
            if count == 0:
                break
            for name, f in samples.items():
                if name not in stats:
                    stats[name] = LayerStatistics(tuple(f.shape[1:]), device=f.device)
                stats[name].update(f)
            seen += count
            bar.update(count)
            if n_samples is not None and seen >= n_samples:
                break
    bar.close()
    if not stats or seen == 0:
        raise DataError(f"No {unit}s to estimate the statistics from: the batches were empty")
    if seen < MIN_RECOMMENDED_SAMPLES:
        warnings.warn(
            f"Layer statistics estimated from only {seen} {unit}s; at least "
            f"{MIN_RECOMMENDED_SAMPLES} are recommended (the paper uses 1,000).",
            stacklevel=3,
        )
    return {name: s.to("cpu") for name, s in stats.items()}


def estimate_layer_statistics(
    model: nn.Module,
    layer: str,
    batches: Iterable[Any],
    n_samples: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> LayerStatistics:
    """Estimate the statistics of ``layer``'s output over ``batches``.

    Only the network up to ``layer`` runs. The model is in eval mode meanwhile and restored.

    Args:
        model: the classifier.
        layer: dotted name of the layer.
        batches: an iterable of tensors, (input, label) pairs, or dicts (see :func:`batch_inputs`).
        n_samples: stop after this many samples (``None``: use all batches).
        device: where to run; default the model's device.
        progress: show a tqdm progress bar.

    Returns:
        The statistics (on the CPU).

    Raises:
        ValueError: no samples were seen.
    """
    module = get_layer(model, layer)
    if device is None:
        device = _model_device(model)

    def features_of(batch: Any, remaining: int | None) -> tuple[int, dict[str, torch.Tensor]]:
        x = batch_inputs(batch).to(device)[:remaining]
        if x.shape[0] == 0:
            return 0, {}
        return x.shape[0], {layer: layer_output(model, module, x)}

    return accumulate_statistics(model, batches, features_of, n_samples, progress,
                                 desc=f"estimate {layer}")[layer]


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")
