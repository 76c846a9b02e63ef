"""Stage 2: a Wasserstein GAN that moves the feature bottleneck to the input.

The generator's parameters are input-mask logits ``theta`` and a learnable noise mean and scale
per input channel; it outputs the layer-R features of the frozen classifier on
``m * x + (1 - m) * (scale * g + mean)``, ``m = sigmoid(theta)``, ``g ~ N(0, I)``. The critic
learns to tell those from "real" samples of the stage-1 bottleneck at R.

Batching: B samples train B independent generators *and* B independent critics at once. The
image critic is one network with grouped convolutions (``groups=B``) and batched linear layers,
so every sample's critic has its own weights, BatchNorm statistics and gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from inputiba.core.bottleneck import row_chunks
from inputiba.core.config import GanSettings
from inputiba.core.rng import SampleRNG
from inputiba.errors import ConfigError, InputError, ModelError, TextInputError

__all__ = [
    "GAN_DEFAULTS",
    "GanSettings",
    "GroupedLinear",
    "ImageCritic",
    "SequenceCritic",
    "GanResult",
    "MaskGenerator",
    "RealSamples",
    "fit_gan_mask",
    "REAL_SAMPLE_MODES",
]

REAL_SAMPLE_MODES = ("capacity", "lambda")

#: Stage 2's settings in the original configuration.
GAN_DEFAULTS = GanSettings()


class GroupedLinear(nn.Module):
    """B independent linear layers: (B, N, in) -> (B, N, out)."""

    def __init__(self, groups: int, in_features: int, out_features: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(groups, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def _conv_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


class ImageCritic(nn.Module):
    """B independent WGAN critics on C x H x W features (the original architecture, capped).

    Per critic: conv C->c1 k4 s2, BN, LeakyReLU(0.2); conv c1->c2 k4 s2, BN, LReLU;
    conv c2->c3 k3, BN, LReLU; linear -> hidden[0] -> hidden[1] -> 1. The original uses
    c1, c2, c3 = 2C, 4C, C (about 45M parameters for C = 512); here they are capped at
    ``max_channels`` (default 256, 512, 128), which keeps C <= 64 layers identical to it.

    Input (B, N, C, H, W), output (B, N) scores.
    """

    def __init__(
        self,
        groups: int,
        channels: int,
        size: tuple[int, int],
        max_channels: tuple[int, int, int] = (256, 512, 128),
        hidden: tuple[int, int] = (512, 256),
    ) -> None:
        super().__init__()
        c = channels
        c1, c2, c3 = min(2 * c, max_channels[0]), min(4 * c, max_channels[1]), min(c, max_channels[2])
        g = groups
        self.groups = g

        def block(cin: int, cout: int, k: int, s: int, p: int) -> list[nn.Module]:
            return [
                nn.Conv2d(g * cin, g * cout, k, s, p, groups=g),
                nn.BatchNorm2d(g * cout),
                nn.LeakyReLU(0.2),
            ]

        self.convs = nn.Sequential(*block(c, c1, 4, 2, 1), *block(c1, c2, 4, 2, 1), *block(c2, c3, 3, 1, 1))
        h, w = size
        h, w = _conv_out(_conv_out(h, 4, 2, 1), 4, 2, 1), _conv_out(_conv_out(w, 4, 2, 1), 4, 2, 1)
        if h < 1 or w < 1:
            raise ModelError(f"Feature map {size} is too small for the image critic (the critic needs at least 4x4)")
        self.c3, self.flat = c3, c3 * h * w
        self.fc1 = GroupedLinear(g, self.flat, hidden[0])
        self.fc2 = GroupedLinear(g, hidden[0], hidden[1])
        self.fc3 = GroupedLinear(g, hidden[1], 1)
        self.act = nn.LeakyReLU(0.2)

    @torch.no_grad()
    def init_per_sample(self, rng: SampleRNG) -> ImageCritic:
        """Re-draw every critic's weights from its own sample's random stream.

        PyTorch's default init of conv and linear layers (uniform within 1/sqrt(fan_in)),
        but critic ``b`` draws only from ``rng``'s stream ``b``, so it does not depend on the
        other samples of the batch.
        """
        g = self.groups
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                params = [m.weight.view(g, -1), m.bias.view(g, -1)]
            elif isinstance(m, GroupedLinear):
                fan_in = m.weight.shape[1]
                params = [m.weight.view(g, -1), m.bias.view(g, -1)]
            else:
                continue
            bound = 1 / math.sqrt(fan_in)
            for p in params:
                p.copy_((rng.rand(p.shape[1], dtype=p.dtype).to(p.device) * 2 - 1) * bound)
        return self

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        b, n = feats.shape[:2]
        x = feats.transpose(0, 1).reshape(n, b * feats.shape[2], *feats.shape[3:])
        x = self.convs(x)  # (N, B * c3, h, w)
        x = x.reshape(n, b, self.flat).transpose(0, 1)  # (B, N, flat); reshape: channels-last input
        x = self.act(self.fc1(x))
        x = self.act(self.fc2(x))
        return self.fc3(x).squeeze(-1)


class SequenceCritic(nn.Module):
    """B independent WGAN critics on feature sequences: an LSTM + a linear head each.

    Critic ``b`` reads its sample's real tokens, in order, from a (N, T, H) batch of feature
    sequences (padding is never read, whichever side it is on) and scores each from the LSTM's
    final hidden state.

    Args:
        groups: B, the number of samples (critics).
        features: H, the feature size.
        tokens: (B, T) mask of the real tokens (True/1), or (B,) real-token counts of
            right-padded sequences.
        hidden: LSTM units per critic.

    Input (B, N, T, H); output (B, N) scores.
    """

    def __init__(self, groups: int, features: int, tokens: torch.Tensor, hidden: int = 32) -> None:
        super().__init__()
        if tokens.dim() == 1:
            if tokens.shape != (groups,):
                raise InputError(f"lengths must have shape ({groups},), got {tuple(tokens.shape)}")
            positions = [torch.arange(int(n)) for n in tokens]
        elif tokens.dim() == 2 and tokens.shape[0] == groups:
            positions = [torch.nonzero(row).flatten() for row in tokens.cpu()]
        else:
            raise InputError(f"tokens must be a ({groups}, T) mask or ({groups},) lengths, got "
                             f"shape {tuple(tokens.shape)}")
        if any(len(pos) == 0 for pos in positions):
            raise TextInputError("every sequence needs at least one real token")
        # a prefix is read as a slice (no copy); other layouts by index
        self.positions = [slice(0, len(pos)) if bool((pos == torch.arange(len(pos))).all())
                          else pos for pos in positions]
        self.lstms = nn.ModuleList(
            nn.LSTM(features, hidden, batch_first=True) for _ in range(groups)
        )
        self.heads = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(groups))
        self.hidden = hidden

    @torch.no_grad()
    def init_per_sample(self, rng: SampleRNG) -> SequenceCritic:
        """PyTorch's default initialisation, critic ``b`` drawing from ``rng``'s stream ``b``.

        Every parameter is uniform in +-1/sqrt(hidden): the LSTM's default, and the linear
        head's (its fan-in is ``hidden``).
        """
        bound = 1 / math.sqrt(self.hidden)
        for group in (self.lstms, self.heads):
            for name, p0 in group[0].named_parameters():
                draws = (rng.rand(*p0.shape, dtype=p0.dtype) * 2 - 1) * bound
                for b, m in enumerate(group):
                    dict(m.named_parameters())[name].copy_(draws[b].to(p0.device))
        return self

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        scores = []
        for b, (lstm, head) in enumerate(zip(self.lstms, self.heads, strict=True)):
            pos = self.positions[b]
            seq = feats[b, :, pos] if isinstance(pos, slice) else feats[b][:, pos.to(feats.device)]
            _, (h_n, _c) = lstm(seq)
            scores.append(head(h_n[-1]).squeeze(-1))
        return torch.stack(scores)


@dataclass
class GanResult:
    """Stage-2 output.

    Attributes:
        mask: (B, *I) the generator's input mask ``sigmoid(theta)`` in [0, 1].
        theta, noise_mean, noise_scale: the generator's final parameters.
        losses: ``"critic"`` (B, critic steps) and ``"generator"`` (B, generator steps).
    """

    mask: torch.Tensor
    theta: torch.Tensor
    noise_mean: torch.Tensor
    noise_scale: torch.Tensor
    losses: dict[str, torch.Tensor]


class MaskGenerator(nn.Module):
    """B independent generators of masked inputs, one per sample.

    Generator ``b`` turns Gaussian noise ``g`` into ``m_b * x_b + (1 - m_b) * (scale_b * g +
    mean_b)`` with ``m_b = sigmoid(theta_b)``; its parameters are ``theta`` (B, *I), and the noise
    ``mean`` and ``scale`` (B, *P), one per input channel by default.

    Args:
        x: (B, *I) the inputs (detached).
        theta_init: (B, *I) initial mask logits (default zeros: m = 0.5).
        noise_param_shape: per-sample shape P of the noise mean/scale (default ``(C, 1, ...)``).
    """

    def __init__(self, x: torch.Tensor, theta_init: torch.Tensor | None = None,
                 noise_param_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        b, in_shape = x.shape[0], tuple(x.shape[1:])
        if noise_param_shape is None:
            noise_param_shape = (in_shape[0],) + (1,) * (len(in_shape) - 1)
        dev, dt = x.device, x.dtype
        theta = theta_init.detach().clone() if theta_init is not None else torch.zeros_like(x)
        self.register_buffer("x", x.detach(), persistent=False)
        self.theta = nn.Parameter(theta.to(dev, dt))
        self.noise_mean = nn.Parameter(torch.zeros(b, *noise_param_shape, device=dev, dtype=dt))
        self.noise_scale = nn.Parameter(torch.ones(b, *noise_param_shape, device=dev, dtype=dt))

    def mask(self) -> torch.Tensor:
        """(B, *I) the current input masks ``sigmoid(theta)``."""
        return torch.sigmoid(self.theta)

    def optimizer(self, settings: GanSettings) -> torch.optim.Optimizer:
        """RMSprop with the per-parameter learning rates of ``settings``."""
        return torch.optim.RMSprop([
            {"params": [self.noise_mean], "lr": settings.lr_mean},
            {"params": [self.noise_scale], "lr": settings.lr_scale},
            {"params": [self.theta], "lr": settings.lr_theta},
        ])

    def forward(self, g: torch.Tensor, rows: slice) -> torch.Tensor:
        """Masked inputs for ``rows`` of the flattened, sample-major noise ``g`` (B * n, *I).

        Built sample by sample within the rows, so no tensor of all B * n inputs is ever made.
        """
        n = g.shape[0] // self.x.shape[0]
        parts = []
        for k in range(rows.start // n, (rows.stop - 1) // n + 1):  # the samples in the chunk
            lo, hi = max(rows.start, k * n), min(rows.stop, (k + 1) * n)
            m = torch.sigmoid(self.theta[k])
            noise = self.noise_scale[k] * g[lo:hi] + self.noise_mean[k]
            parts.append(m * self.x[k] + (1 - m) * noise)
        return parts[0] if len(parts) == 1 else torch.cat(parts)


class RealSamples:
    """The critic's "real" samples at layer R: ``weight * R + (1 - weight) * noise``.

    * ``"capacity"`` (the original code): ``weight`` is the stage-1 KL per element (nats) and the
      noise is Gaussian with, for each of ``dataset_size / subset_size`` sub-sets, a mean
      ~ U(-2, 2) and a std ~ U(0, 5), drawn once here; the noise itself is new at every visit;
    * ``"lambda"`` (the paper's Z*): ``weight`` is the stage-1 lambda, the noise is
      N(feature_mean, feature_std^2), and the result is multiplied by ``active``.

    Args:
        r: (B, *F) the layer activation.
        weight: (B, *F) capacity or lambda.
        rng: per-sample random streams.
        settings: the GAN's settings.
        feature_statistics: (mean, std, active), each (*F); needed by ``"lambda"``.
    """

    def __init__(self, r: torch.Tensor, weight: torch.Tensor, rng: SampleRNG,
                 settings: GanSettings,
                 feature_statistics: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                 ) -> None:
        if settings.real not in REAL_SAMPLE_MODES:
            raise ConfigError(f"gan_real (the GAN's real samples) must be one of {REAL_SAMPLE_MODES}, got "
                             f"{settings.real!r}")
        if settings.real == "lambda" and feature_statistics is None:
            raise ConfigError("real samples 'lambda' need the layer's statistics")
        self.r, self.weight, self.rng, self.mode = r.detach(), weight.detach(), rng, settings.real
        self.stats = feature_statistics
        self.subset_size = settings.subset_size
        self.n_subsets = max(1, settings.dataset_size // settings.subset_size)
        # the sub-sets' means and stds are drawn once, as the original code's dataset does (in
        # both modes, so that the random streams do not depend on the mode)
        self.sub_mean = (rng.rand(self.n_subsets) * 4 - 2).to(r.device, r.dtype)
        self.sub_std = (rng.rand(self.n_subsets) * 5).to(r.device, r.dtype)

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, n, *F) real samples for the dataset indices ``idx`` (B, n)."""
        b, n = idx.shape
        feat_shape = tuple(self.r.shape[1:])
        eps = self.rng.randn(n, *feat_shape, dtype=self.r.dtype).to(self.r.device)
        if self.mode == "capacity":
            sub = (idx // self.subset_size).clamp_max(self.n_subsets - 1)
            shape = (b, n) + (1,) * len(feat_shape)
            noise = (self.sub_std.gather(1, sub).view(shape) * eps
                     + self.sub_mean.gather(1, sub).view(shape))
        else:
            mean, std, _active = self.stats  # type: ignore[misc]
            noise = eps * std + mean
        w = self.weight.unsqueeze(1)
        real = w * self.r.unsqueeze(1) + (1 - w) * noise
        if self.mode == "lambda":
            real = real * self.stats[2]  # type: ignore[index]
        return real


def fit_gan_mask(
    features_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    r: torch.Tensor,
    weight: torch.Tensor,
    critic: nn.Module,
    rng: SampleRNG,
    settings: GanSettings = GAN_DEFAULTS,
    *,
    theta_init: torch.Tensor | None = None,
    noise_param_shape: tuple[int, ...] | None = None,
    feature_statistics: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    max_batch: int | None = None,
    progress: bool = False,
) -> GanResult:
    """Train B generators against B critics; return the generators' input masks.

    With ``settings.epochs == 0`` nothing trains: the mask is ``sigmoid(theta_init)`` and no
    random numbers are drawn. Each epoch visits the ``settings.dataset_size`` real samples (:class:`RealSamples`) in a
    fresh random order in batches of ``settings.batch_size``; batch ``i`` trains the critic
    (RMSprop, weights clipped to ``+-settings.clip``) and, when ``i % settings.critic_iters ==
    0``, the generator (:class:`MaskGenerator`, RMSprop with per-parameter learning rates).

    Args:
        features_of: ``features_of(inputs, samples)`` maps generator inputs (M, *I) to
            layer-R features (M, *F); ``samples`` (M,) holds the sample index of each row (for
            models whose forward needs per-sample data, such as token ids). Gradients must flow
            to the inputs (only the network up to R should run).
        x: (B, *I) inputs.
        r: (B, *F) the layer activation of ``x``.
        weight: (B, *F) capacity or lambda from stage 1 (see :class:`RealSamples`).
        critic: maps (B, N, *F) to (B, N) scores, with independent parameters per sample.
        rng: per-sample random streams.
        settings: the WGAN's settings (:class:`~inputiba.core.config.GanSettings`).
        theta_init, noise_param_shape: see :class:`MaskGenerator`.
        feature_statistics: (mean, std, active) of the layer (``settings.real == "lambda"``).
        max_batch: at most this many generator inputs per forward pass (memory bound; the
            gradients are the same); None: all at once.
        progress: show a progress bar over epochs.

    Returns:
        :class:`GanResult`.
    """
    b = x.shape[0]
    dev, dt = x.device, x.dtype
    in_shape = tuple(x.shape[1:])
    generator = MaskGenerator(x, theta_init, noise_param_shape)
    if settings.epochs == 0:  # no GAN: the initial mask, untouched (the critic is never used)
        empty = torch.zeros(b, 0)
        return GanResult(mask=generator.mask().detach(), theta=generator.theta.detach(),
                         noise_mean=generator.noise_mean.detach(),
                         noise_scale=generator.noise_scale.detach(),
                         losses={"critic": empty, "generator": empty})
    opt_g = generator.optimizer(settings)
    critic.to(dev).train()
    opt_d = torch.optim.RMSprop(critic.parameters(), lr=settings.critic_lr)
    real_samples = RealSamples(r, weight, rng, settings, feature_statistics)

    def fake_features(g: torch.Tensor, rows: slice) -> torch.Tensor:
        samples = torch.arange(rows.start, rows.stop, device=dev) // (g.shape[0] // b)
        return features_of(generator(g, rows), samples)

    n_batches = math.ceil(settings.dataset_size / settings.batch_size)
    d_hist: list[torch.Tensor] = []
    g_hist: list[torch.Tensor] = []
    for _epoch in tqdm(range(settings.epochs), desc="stage 2: WGAN", disable=not progress,
                       leave=False):
        order = rng.randperm(settings.dataset_size).to(dev)
        for i in range(n_batches):
            idx = order[:, i * settings.batch_size:(i + 1) * settings.batch_size]
            n = idx.shape[1]
            real = real_samples.batch(idx)
            train_g = i % settings.critic_iters == 0
            g = rng.randn(n, *in_shape, dtype=dt).to(dev).flatten(0, 1)
            # the generator does not change during a critic step, so when the generator trains
            # on this batch its output doubles as the critic's fake batch
            single = not max_batch or b * n <= max_batch
            if train_g and single:
                fake_g = fake_features(g, slice(0, b * n))
                fake_g = fake_g.view(b, n, *fake_g.shape[1:])
                fake = fake_g.detach()
            else:
                with torch.no_grad():
                    fake = torch.cat([fake_features(g, rows)
                                      for rows in row_chunks(g.shape[0], max_batch)])
                fake = fake.view(b, n, *fake.shape[1:])
            d_hist.append(_critic_step(critic, opt_d, real, fake, settings.clip))
            if train_g:
                opt_g.zero_grad(set_to_none=True)
                if single:
                    loss_g = -critic(fake_g).mean(1)
                    loss_g.sum().backward()
                else:  # memory-bounded: recompute the features with grad, chunk by chunk
                    fake_leaf = fake.requires_grad_(True)
                    loss_g = -critic(fake_leaf).mean(1)
                    loss_g.sum().backward()
                    grad_fake = fake_leaf.grad.flatten(0, 1)
                    for rows in row_chunks(b * n, max_batch):
                        fake_features(g, rows).backward(grad_fake[rows])
                opt_g.step()
                g_hist.append(loss_g.detach())
    empty = torch.zeros(b, 0)
    return GanResult(
        mask=generator.mask().detach(),
        theta=generator.theta.detach(),
        noise_mean=generator.noise_mean.detach(),
        noise_scale=generator.noise_scale.detach(),
        losses={
            "critic": torch.stack(d_hist, 1).cpu() if d_hist else empty,
            "generator": torch.stack(g_hist, 1).cpu() if g_hist else empty,
        },
    )


def _critic_step(critic: nn.Module, opt: torch.optim.Optimizer, real: torch.Tensor,
                 fake: torch.Tensor, clip: float) -> torch.Tensor:
    """One WGAN critic update with weight clipping; returns the (B,) critic losses."""
    opt.zero_grad(set_to_none=True)
    loss_d = -critic(real).mean(1) + critic(fake).mean(1)
    loss_d.sum().backward()
    opt.step()
    with torch.no_grad():
        for p in critic.parameters():
            p.clamp_(-clip, clip)
    return loss_d.detach()
