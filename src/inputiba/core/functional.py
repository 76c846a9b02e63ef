"""Pure tensor functions of the bottleneck math: KL terms, smoothing, map conversion.

Everything here is tensors in, tensors out, with no hooks and no state, so that it can be
tested against hand-computed values (``tests/test_functional.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from inputiba.core.config import ENSEMBLE_REDUCTIONS
from inputiba.errors import ConfigError, InputError

__all__ = [
    "feature_kl",
    "input_prior_kl",
    "gaussian_kernel_1d",
    "gaussian_smooth",
    "capacity_to_bits",
    "resize_map",
    "capacity_map",
    "normalized_logits",
    "classification_loss",
    "target_probability",
    "reduce_members",
]

LN2 = math.log(2.0)


def feature_kl(
    r: torch.Tensor, lamb: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """Per-element KL of IBA's bottleneck from the N(0, 1) prior, in nats.

    With ``r_n = (r - mean) / std`` the bottleneck ``Z = lamb * R + (1 - lamb) * eps``,
    ``eps ~ N(mean, std^2)``, normalised, is ``N(lamb * r_n, (1 - lamb)^2)``; its KL from
    ``N(0, 1)`` is ``-0.5 * (1 + log((1 - lamb)^2) - (lamb * r_n)^2 - (1 - lamb)^2)``.

    Args:
        r: the layer's activation, any shape.
        lamb: the fraction of signal let through, in [0, 1), broadcastable to ``r``.
        mean, std: the layer's statistics, broadcastable to ``r`` (std already floored).

    Returns:
        KL per element, shape of ``r`` broadcast with ``lamb``, in nats (>= 0).
    """
    r_norm = (r - mean) / std
    var_z = (1 - lamb) ** 2
    mu_z = r_norm * lamb
    return -0.5 * (1 + torch.log(var_z) - mu_z**2 - var_z)


def input_prior_kl(
    x: torch.Tensor,
    lamb: torch.Tensor,
    prior_mask: torch.Tensor,
    mean: torch.Tensor | float = 0.0,
    std: torch.Tensor | float = 1.0,
) -> torch.Tensor:
    """Per-element KL of the input bottleneck from the GAN prior (InputIBA, stage 3), in nats.

    The bottleneck is ``P = N(lamb x + (1 - lamb) mean, ((1 - lamb) std)^2)``; the prior with the
    GAN mask ``m`` is ``Q = N(lamb m x + (1 - lamb m) mean, ((1 - lamb m) std)^2)``. With
    ``r = (1 - m)(x - mean) / ((1 - lamb m) std)`` and ``v = (1 - lamb)^2 / (1 - lamb m)^2``:
    ``KL(P || Q) = -0.5 * (1 + log v - (lamb r)^2 - v)``.

    ``m = 0`` gives :func:`feature_kl` with the ``N(mean, std)`` prior; ``m = 1`` gives
    ``v = 1, r = 0`` and so zero cost for keeping the element.

    Args:
        x: the input, any shape (e.g. B x C x H x W, normalised).
        lamb: in [0, 1), broadcastable to ``x``.
        prior_mask: the GAN mask ``m`` in [0, 1], broadcastable to ``x``.
        mean, std: the input noise distribution (scalars or broadcastable tensors).

    Returns:
        KL per element in nats, shape of the broadcast.
    """
    denom = 1 - lamb * prior_mask
    r = (1 - prior_mask) * (x - mean) / (denom * std)
    v = (1 - lamb) ** 2 / denom**2
    return -0.5 * (1 + torch.log(v) - (lamb * r) ** 2 - v)


def gaussian_kernel_1d(sigma: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 1-d Gaussian kernel of size ``2 * round(2 * sigma) + 1``."""
    if sigma <= 0:
        raise ConfigError(f"sigma must be positive, got {sigma}")
    radius = int(round(2 * sigma))
    xs = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(xs**2) / (2 * sigma**2))
    return (k / k.sum()).to(dtype)


def gaussian_smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Depthwise Gaussian smoothing over the last two dims, reflection padding.

    Args:
        x: (N, C, H, W) tensor (each channel smoothed on its own).
        sigma: standard deviation in cells/pixels; ``<= 0`` returns ``x`` unchanged.

    Returns:
        Tensor of ``x``'s shape. The 2-d kernel is the outer product of
        :func:`gaussian_kernel_1d`, applied separably.
    """
    if sigma is None or sigma <= 0:
        return x
    if x.dim() != 4:
        raise InputError(f"gaussian_smooth expects (N, C, H, W), got shape {tuple(x.shape)}")
    k = gaussian_kernel_1d(sigma, x.dtype).to(x.device)
    pad = (k.numel() - 1) // 2
    n, c, h, w = x.shape
    # reflection padding needs pad < size; tiny maps fall back to replicate
    mode = "replicate" if pad >= h or pad >= w else "reflect"
    y = x.reshape(n * c, 1, h, w)
    y = F.pad(y, (pad, pad, pad, pad), mode=mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


def capacity_to_bits(kl_nats: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
    """Sum per-element KL (nats) over the channel dim and convert to bits."""
    return kl_nats.sum(channel_dim) / LN2


def resize_map(m: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize (B, H, W) or (B, 1, H, W) maps to ``size`` = (H', W'); returns (B, 1, H', W')."""
    if m.dim() == 3:
        m = m.unsqueeze(1)
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(m, size=size, mode=mode, **kwargs)


def capacity_map(kl_nats: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """IBA's saliency: KL summed over channels in bits, optionally resized.

    Args:
        kl_nats: (B, C, h, w) per-element KL in nats.
        size: (H, W) to upsample to. When given, the bits are rescaled by ``h*w / (H*W)``
            so that the map's total stays the layer's total information (as in IBA).

    Returns:
        (B, 1, h, w) or (B, 1, H, W) map in bits.
    """
    bits = capacity_to_bits(kl_nats).unsqueeze(1)
    if size is None:
        return bits
    h, w = bits.shape[-2:]
    return resize_map(bits * (h * w) / (size[0] * size[1]), size)


def normalized_logits(capacity: torch.Tensor, lo: float = 0.05, hi: float = 0.95) -> torch.Tensor:
    """Mask logits from a capacity map normalised per sample: ``logit(clamp(c / max c, lo, hi))``.

    Args:
        capacity: (B, ...) non-negative capacity (any unit: only its shape per sample counts).
        lo, hi: the clamp of the normalised mask (keeps the logits finite).

    Returns:
        Logits shaped like ``capacity`` (``lo``/``hi`` give -2.94/+2.94).
    """
    peak = capacity.flatten(1).amax(1).clamp_min(1e-12).view(-1, *([1] * (capacity.dim() - 1)))
    return torch.logit((capacity / peak).clamp(lo, hi))


def classification_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample classification loss: ``-log p(target)``.

    Softmax heads (K >= 2 logits): ``-log_softmax(logits)[target]``. A single-logit (binary)
    head: ``-log sigmoid(z)`` for target 1 and ``-log sigmoid(-z)`` for target 0.

    Args:
        logits: (N, K) model outputs.
        target: (N,) class indices (long).

    Returns:
        (N,) losses in nats.
    """
    if logits.dim() == 1 or logits.shape[-1] == 1:
        z = logits.reshape(-1)
        sign = target.to(z.dtype) * 2 - 1
        return -F.logsigmoid(sign * z)
    return -torch.log_softmax(logits, dim=-1).gather(-1, target.view(-1, 1)).squeeze(-1)


def target_probability(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N,) probability of ``target`` under softmax (or sigmoid for a single logit)."""
    return torch.exp(-classification_loss(logits, target))


def reduce_members(maps: torch.Tensor, members: int, how: str = "mean") -> torch.Tensor:
    """One map per sample from the maps of its ``members`` ensemble runs, element by element.

    Args:
        maps: (B * K, ...) the runs' maps, sample-major (sample ``i``'s runs are rows
            ``i * K`` to ``i * K + K - 1``).
        members: K >= 1.
        how: ``"mean"``; ``"median"`` (for even K the mean of the two middle values);
            ``"min"`` (what every run keeps: high only where all K runs are high).

    Returns:
        (B, ...) maps (``maps`` itself when K is 1).

    Example:
        >>> reduce_members(torch.tensor([[0.2], [0.6], [1.0], [0.0]]), 2, "min")
        tensor([[0.2000],
                [0.0000]])
    """
    if how not in ENSEMBLE_REDUCTIONS:
        raise ConfigError(f"how must be one of {', '.join(ENSEMBLE_REDUCTIONS)}, got {how!r}")
    if members < 1 or maps.shape[0] % members:
        raise ConfigError(f"{maps.shape[0]} maps are not whole ensembles of {members}")
    if members == 1:
        return maps
    runs = maps.reshape(-1, members, *maps.shape[1:])
    if how == "mean":
        return runs.mean(1)
    if how == "min":
        return runs.amin(1)
    ranked = runs.sort(1).values
    return (ranked[:, (members - 1) // 2] + ranked[:, members // 2]) / 2
