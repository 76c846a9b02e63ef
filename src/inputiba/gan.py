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

from ._rng import SampleRNG
from .bottleneck import row_chunks

__all__ = [
    "GroupedLinear",
    "ImageCritic",
    "GanResult",
    "fit_gan_mask",
    "REAL_SAMPLE_MODES",
]

REAL_SAMPLE_MODES = ("capacity", "lambda")


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
            raise ValueError(f"Feature map {size} is too small for the image critic (needs >= 2x2)")
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


def fit_gan_mask(
    features_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    r: torch.Tensor,
    weight: torch.Tensor,
    critic: nn.Module,
    rng: SampleRNG,
    *,
    theta_init: torch.Tensor | None = None,
    noise_param_shape: tuple[int, ...] | None = None,
    real_noise: str = "capacity",
    feature_mean: torch.Tensor | None = None,
    feature_std: torch.Tensor | None = None,
    active: torch.Tensor | None = None,
    dataset_size: int = 200,
    subset_size: int = 20,
    batch_size: int = 32,
    epochs: int = 20,
    critic_lr: float = 5e-5,
    clip: float = 0.01,
    critic_iters: int = 5,
    lr_mean: float = 0.1,
    lr_scale: float = 0.05,
    lr_theta: float = 0.003,
    max_batch: int | None = None,
    progress: bool = False,
) -> GanResult:
    """Train B generators against B critics; return the generators' input masks.

    Real samples at layer R are ``weight * R + (1 - weight) * n``:

    * ``real_noise="capacity"`` (the original code): ``weight`` is the stage-1 KL per element
      (nats) and ``n`` is Gaussian with, for each of ``dataset_size / subset_size`` sub-sets,
      a mean ~ U(-2, 2) and a std ~ U(0, 5), drawn once; the noise itself is drawn anew each
      time a sample is visited;
    * ``real_noise="lambda"`` (the paper's Z*): ``weight`` is the stage-1 lambda, ``n ~
      N(feature_mean, feature_std^2)``, and the result is multiplied by ``active``.

    Each epoch visits the ``dataset_size`` real samples in a fresh random order in batches of
    ``batch_size``; batch ``i`` trains the critic (RMSprop, weights clipped to ``+-clip``) and,
    when ``i % critic_iters == 0``, the generator (RMSprop with per-parameter learning rates).

    Args:
        features_of: ``features_of(inputs, samples)`` maps generator inputs (M, *I) to
            layer-R features (M, *F); ``samples`` (M,) holds the sample index of each row (for
            models whose forward needs per-sample data, such as token ids). Gradients must flow
            to the inputs (only the network up to R should run).
        x: (B, *I) inputs.
        r: (B, *F) the layer activation of ``x``.
        weight: (B, *F) capacity or lambda from stage 1.
        critic: maps (B, N, *F) to (B, N) scores, with independent parameters per sample.
        rng: per-sample random streams.
        theta_init: (B, *I) initial mask logits (default zeros).
        noise_param_shape: per-sample shape of the generator's noise mean/scale (default one per
            input channel: ``(C, 1, 1)`` for images).
        real_noise: ``"capacity"`` or ``"lambda"``, see above.
        feature_mean, feature_std, active: (*F) layer statistics (``"lambda"`` mode).
        dataset_size, subset_size, batch_size, epochs, critic_lr, clip, critic_iters,
            lr_mean, lr_scale, lr_theta: the WGAN's settings (DESIGN.md defaults).
        max_batch: at most this many generator inputs per forward pass (memory bound; the
            gradients are the same); None: all at once.
        progress: show a progress bar over epochs.

    Returns:
        :class:`GanResult`.
    """
    if real_noise not in REAL_SAMPLE_MODES:
        raise ValueError(f"real_noise must be one of {REAL_SAMPLE_MODES}, got {real_noise!r}")
    if real_noise == "lambda" and (feature_mean is None or feature_std is None):
        raise ValueError("real_noise='lambda' needs feature_mean and feature_std")
    b = x.shape[0]
    dev, dt = x.device, x.dtype
    x = x.detach()
    r = r.detach()
    weight = weight.detach()
    in_shape = tuple(x.shape[1:])
    if noise_param_shape is None:
        noise_param_shape = (in_shape[0],) + (1,) * (len(in_shape) - 1)
    theta = (theta_init.detach().clone() if theta_init is not None
             else torch.zeros_like(x)).to(dev, dt).requires_grad_(True)
    noise_mean = torch.zeros(b, *noise_param_shape, device=dev, dtype=dt, requires_grad=True)
    noise_scale = torch.ones(b, *noise_param_shape, device=dev, dtype=dt, requires_grad=True)
    opt_g = torch.optim.RMSprop(
        [{"params": [noise_mean], "lr": lr_mean},
         {"params": [noise_scale], "lr": lr_scale},
         {"params": [theta], "lr": lr_theta}]
    )
    critic.to(dev).train()
    opt_d = torch.optim.RMSprop(critic.parameters(), lr=critic_lr)

    def masked_inputs(g: torch.Tensor, rows: slice) -> torch.Tensor:
        """Generator inputs for ``rows`` of the flattened (B * n) noise ``g`` (B * n, *I),
        differentiable in the generator's parameters. Built chunk by chunk, so no tensor of
        all B * n inputs is ever made."""
        n = g.shape[0] // b
        parts = []
        for k in range(rows.start // n, (rows.stop - 1) // n + 1):  # the samples in the chunk
            lo, hi = max(rows.start, k * n), min(rows.stop, (k + 1) * n)
            m = torch.sigmoid(theta[k])
            noise = noise_scale[k] * g[lo:hi] + noise_mean[k]
            parts.append(m * x[k] + (1 - m) * noise)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def samples_of(g: torch.Tensor, rows: slice) -> torch.Tensor:
        """The sample index of each of ``rows`` (the B * n rows are sample-major)."""
        return torch.arange(rows.start, rows.stop, device=dev) // (g.shape[0] // b)

    def fake_features(g: torch.Tensor, rows: slice) -> torch.Tensor:
        return features_of(masked_inputs(g, rows), samples_of(g, rows))

    def features(g: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([fake_features(g, rows)
                              for rows in row_chunks(g.shape[0], max_batch)])

    n_subsets = max(1, dataset_size // subset_size)
    feat_shape = tuple(r.shape[1:])
    view = (b, 1) + (1,) * len(feat_shape)

    def real_batch(idx: torch.Tensor, sub_mean: torch.Tensor, sub_std: torch.Tensor) -> torch.Tensor:
        n = idx.shape[1]
        eps = rng.randn(n, *feat_shape, dtype=dt).to(dev)
        if real_noise == "capacity":
            sub = (idx // subset_size).clamp_max(n_subsets - 1)
            mu = sub_mean.gather(1, sub).view(b, n, *view[2:])
            sd = sub_std.gather(1, sub).view(b, n, *view[2:])
            noise = sd * eps + mu
        else:
            noise = eps * feature_std + feature_mean
        real = weight.unsqueeze(1) * r.unsqueeze(1) + (1 - weight.unsqueeze(1)) * noise
        if real_noise == "lambda" and active is not None:
            real = real * active
        return real

    n_batches = math.ceil(dataset_size / batch_size)
    d_hist: list[torch.Tensor] = []
    g_hist: list[torch.Tensor] = []
    # the sub-sets' means and stds are drawn once, as the original code's dataset does; only
    # the noise of each sample is new every time it is visited
    sub_mean = (rng.rand(n_subsets) * 4 - 2).to(dev, dt)
    sub_std = (rng.rand(n_subsets) * 5).to(dev, dt)
    for _epoch in tqdm(range(epochs), desc="stage 2: WGAN", disable=not progress, leave=False):
        order = rng.randperm(dataset_size).to(dev)
        for i in range(n_batches):
            idx = order[:, i * batch_size:(i + 1) * batch_size]
            n = idx.shape[1]
            real = real_batch(idx, sub_mean, sub_std)
            train_g = i % critic_iters == 0
            g = rng.randn(n, *in_shape, dtype=dt).to(dev).flatten(0, 1)
            # the generator does not change during a critic step, so when the generator trains
            # on this batch its output doubles as the critic's fake batch
            single = not max_batch or b * n <= max_batch
            if train_g and single:
                fake_g = fake_features(g, slice(0, b * n))
                fake_g = fake_g.view(b, n, *fake_g.shape[1:])
                fake = fake_g.detach()
            else:
                fake = features(g)
                fake = fake.view(b, n, *fake.shape[1:])
            opt_d.zero_grad(set_to_none=True)
            loss_d = -critic(real).mean(1) + critic(fake).mean(1)
            loss_d.sum().backward()
            opt_d.step()
            with torch.no_grad():
                for p in critic.parameters():
                    p.clamp_(-clip, clip)
            d_hist.append(loss_d.detach())
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
        mask=torch.sigmoid(theta).detach(),
        theta=theta.detach(),
        noise_mean=noise_mean.detach(),
        noise_scale=noise_scale.detach(),
        losses={
            "critic": torch.stack(d_hist, 1).cpu() if d_hist else empty,
            "generator": torch.stack(g_hist, 1).cpu() if g_hist else empty,
        },
    )
