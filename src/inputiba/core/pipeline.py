"""The stage sequencer: InputIBA's three stages on one batch, for any kind of input.

Images and text run the same three stages; they differ only in how the network is cut and
what the input is. A modality describes one batch to the sequencer with a
:class:`StageAdapter` (where the network is split, what the GAN generates and its critic, the
prior and the noise of the input bottleneck), and :func:`run_stages` runs:

1. the feature bottleneck on the layer activation R (:func:`~inputiba.core.bottleneck.fit_feature_bottleneck`);
2. the WGAN that finds an input mask whose effect at R matches it (:func:`~inputiba.core.gan.fit_gan_mask`);
3. the input bottleneck with the GAN's mask as prior (``gan_epochs=0``: stage 2 is skipped and the
   generator's initial mask is the prior) (:func:`~inputiba.core.bottleneck.fit_input_bottleneck`),

timing each stage. Every sample of the batch has its own parameters, target and random stream.
An ensemble's runs of one sample (consecutive rows) can share one stage-1 run
(:attr:`StageAdapter.feature_members`).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from inputiba.core.bottleneck import (
    BottleneckResult,
    fit_feature_bottleneck,
    fit_input_bottleneck,
)
from inputiba.core.config import InputIBAConfig
from inputiba.core.gan import GanResult, fit_gan_mask
from inputiba.core.rng import SampleRNG
from inputiba.errors import ModelError

__all__ = ["StageAdapter", "StageResults", "run_stages", "run_feature_stage"]

Statistics = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class StageAdapter(ABC):
    """One batch of B samples as the stages see it; a modality subclasses it.

    Attributes to set in the subclass's constructor:
        features: (B, *F) the layer activation R of the batch, computed once.
        feature_statistics: (mean, std, active), each (*F): the layer's statistics (std
            floored), on R's device and dtype.
        feature_valid: None, or a (B, ...) mask broadcastable to R of the elements that exist
            (1; padding 0): padding passes unchanged and costs nothing.
        inputs: (B, *I) what the input bottleneck acts on (normalised images, token embeddings).
        input_noise: (mean, std) of the input bottleneck's noise, broadcastable to a sample.
        alpha_shape: per-sample shape of the input bottleneck's alpha (None: the sample shape).
        input_valid: None, or a (B, *alpha_shape) mask of the input elements that exist.
        gan_inputs: (B, *G) the inputs in the space the GAN's generator masks.
        noise_param_shape: per-sample shape of the generator's noise mean/scale (None: one per
            input channel).
        feature_members: K >= 1: each group of K consecutive rows (an ensemble's runs of one
            sample) shares one stage-1 run, the group's first row's (target, random stream).
            :meth:`feature_tail`'s rows then count the draws of the B / K groups' first rows
            only. Every other attribute keeps all B rows.
    """

    features: torch.Tensor
    feature_statistics: Statistics
    feature_valid: torch.Tensor | None = None
    inputs: torch.Tensor
    input_noise: tuple[torch.Tensor | float, torch.Tensor | float] = (0.0, 1.0)
    alpha_shape: tuple[int, ...] | None = None
    input_valid: torch.Tensor | None = None
    gan_inputs: torch.Tensor
    noise_param_shape: tuple[int, ...] | None = None
    feature_members: int = 1

    @abstractmethod
    def feature_tail(self, z: torch.Tensor, rows: slice) -> torch.Tensor:
        """Logits for ``rows`` of the (B * draws, *F) sample-major bottleneck outputs ``z``."""

    @abstractmethod
    def gan_features(self, inputs: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
        """Features at R (M, *F) of generator inputs (M, *G); ``samples`` (M,) are their
        sample indices. Gradients must flow to ``inputs``."""

    @abstractmethod
    def forward(self, z: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
        """Logits (M, K) of noisy inputs (M, *I) of the samples ``samples`` (M,)."""

    @abstractmethod
    def critic(self, rng: SampleRNG) -> nn.Module:
        """B independent critics of (B, N, *F) features, initialised from ``rng``."""

    @abstractmethod
    def theta_init(self, feature: BottleneckResult) -> torch.Tensor:
        """(B, *G) the generator's initial mask logits, from the stage-1 result."""

    @abstractmethod
    def prior(self, gan_mask: torch.Tensor) -> torch.Tensor:
        """The input bottleneck's prior mask, broadcastable to :attr:`inputs`, from the
        generator's mask (B, *G)."""


@dataclass
class StageResults:
    """What the three stages return for one batch.

    Attributes:
        feature: stage 1 (:class:`~inputiba.core.bottleneck.BottleneckResult` at R).
        gan: stage 2 (:class:`~inputiba.core.gan.GanResult`).
        input: stage 3 (:class:`~inputiba.core.bottleneck.BottleneckResult` at the input).
        seconds: wall time per stage (``"feature"``, ``"gan"``, ``"input"``).
    """

    feature: BottleneckResult
    gan: GanResult
    input: BottleneckResult
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def losses(self) -> dict[str, dict[str, torch.Tensor]]:
        """Per stage, the (B, steps) loss histories."""
        return {"feature": self.feature.losses, "gan": self.gan.losses,
                "input": self.input.losses}


@contextmanager
def _timed(seconds: dict[str, float], key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    seconds[key] = time.perf_counter() - t0


def run_feature_stage(batch: StageAdapter, target: torch.Tensor, rng: SampleRNG,
                      cfg: InputIBAConfig, progress: bool = False) -> BottleneckResult:
    """Stage 1 alone (IBA) on ``batch``: the per-sample bottleneck at R, (B, ...) rows (with
    :attr:`StageAdapter.feature_members` K > 1, fitted on every K-th row and repeated)."""
    mean, std, active = batch.feature_statistics
    k = batch.feature_members
    if k == 1:
        return fit_feature_bottleneck(
            batch.feature_tail, batch.features, target, mean, std, active, rng, cfg.feature,
            valid=batch.feature_valid, max_batch=cfg.max_batch, progress=progress,
        )
    n = batch.features.shape[0]
    if n % k:
        raise ModelError(f"A batch of {n} rows cannot share stage 1 in groups of {k}")
    valid = None if batch.feature_valid is None else batch.feature_valid[::k]
    first = fit_feature_bottleneck(
        batch.feature_tail, batch.features[::k], target[::k], mean, std, active,
        rng.select(range(0, n, k)), cfg.feature, valid=valid, max_batch=cfg.max_batch,
        progress=progress,
    )
    return first.repeat_interleave(k)


def run_stages(batch: StageAdapter, target: torch.Tensor, rng: SampleRNG,
               cfg: InputIBAConfig, progress: bool = False) -> StageResults:
    """Run InputIBA's three stages on one batch.

    Args:
        batch: the modality's description of the batch.
        target: (B,) the class explained per sample.
        rng: per-sample random streams (stage 2's critics draw their weights from it first).
        cfg: the settings (stage groups :attr:`~InputIBAConfig.feature`,
            :attr:`~InputIBAConfig.gan`, :attr:`~InputIBAConfig.input`; ``max_batch``).
        progress: progress bars per stage.

    Returns:
        :class:`StageResults` with the three stages' results and their wall times.
    """
    seconds: dict[str, float] = {}
    with _timed(seconds, "feature"):
        feat = run_feature_stage(batch, target, rng, cfg, progress)
    with _timed(seconds, "gan"):
        gan_cfg = cfg.gan
        # gan_epochs 0 (no GAN): stage 3's prior is the generator's initial mask; no critic
        critic = batch.critic(rng) if gan_cfg.epochs > 0 else nn.Identity()
        gan = fit_gan_mask(
            batch.gan_features, batch.gan_inputs, batch.features,
            feat.kl if gan_cfg.real == "capacity" else feat.lamb, critic, rng, gan_cfg,
            theta_init=batch.theta_init(feat), noise_param_shape=batch.noise_param_shape,
            feature_statistics=batch.feature_statistics, max_batch=cfg.max_batch,
            progress=progress,
        )
    with _timed(seconds, "input"):
        mean, std = batch.input_noise
        inp = fit_input_bottleneck(
            batch.forward, batch.inputs, target, batch.prior(gan.mask), rng, cfg.input,
            mean=mean, std=std, alpha_shape=batch.alpha_shape, valid=batch.input_valid,
            max_batch=cfg.max_batch, progress=progress,
        )
    return StageResults(feat, gan, inp, seconds)
