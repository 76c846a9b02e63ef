"""Sensitivity-N: correlation of attribution sums and output drops over random subsets."""


from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from inputiba.core.layers import frozen_eval
from inputiba.errors import ConfigError
from inputiba.metrics.functional._common import (
    Score,
    _as_tensor,
    _check_inputs,
    _forward_rows,
    _image_maps,
    _null,
    _targets,
    target_scores,
)
from inputiba.metrics.functional.perturbation import _token_args

# ----------------------------------------------------------------------------- sensitivity-N


def pearson(a: torch.Tensor, b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Pearson correlation along ``dim``; NaN where either side is constant."""
    a = a.double() - a.double().mean(dim, keepdim=True)
    b = b.double() - b.double().mean(dim, keepdim=True)
    num = (a * b).sum(dim)
    den = (a.square().sum(dim) * b.square().sum(dim)).sqrt()
    r = num / den
    return torch.where(den > 0, r, torch.full_like(r, float("nan"))).float()


def subset_output_drops(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor | Sequence[int] | int,
    attributions: torch.Tensor | np.ndarray,
    masks: torch.Tensor,
    baseline: float | torch.Tensor = 0.0,
    score: Score = "logit",
    batch_size: int = 64,
    progress: bool | str = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For pixel subsets, the attribution they hold and the output drop their removal causes.

    Args:
        inputs: ``(B, C, H, W)``; attributions: ``(B, H, W)``/``(B, 1, H, W)``.
        masks: ``(B, M, H*W)`` or ``(B, M, H, W)`` bool, ``M`` subsets per sample (True =
            set to ``baseline``).
        baseline: the value (number or broadcastable tensor) removed pixels take.

    Returns:
        ``(attribution_sums, drops)``, both ``(B, M)``: the attribution summed over each subset
        and ``score(x) - score(x with the subset removed)``.
    """
    _check_inputs(inputs)
    b, c, h, w = inputs.shape
    a = _image_maps(attributions, inputs)
    t = _targets(targets, b, inputs.device)
    masks = _as_tensor(masks, inputs.device).bool().reshape(b, -1, h * w)
    m = masks.shape[1]
    base = (
        baseline.to(inputs).expand_as(inputs)
        if isinstance(baseline, torch.Tensor)
        else torch.full_like(inputs, float(baseline))
    )
    row_sample = torch.arange(b, device=inputs.device).repeat_interleave(m)
    flat_masks = masks.reshape(b * m, h * w)

    def build(z0: int, z1: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = row_sample[z0:z1]
        keep = flat_masks[z0:z1].view(-1, 1, h, w)
        return torch.where(keep, base.index_select(0, idx), inputs.index_select(0, idx)), idx

    with frozen_eval(model), torch.no_grad():
        fwd = lambda x, _i: model(x)  # noqa: E731
        full = _forward_rows(
            fwd,
            b,
            lambda z0, z1: (inputs[z0:z1], torch.arange(z0, z1, device=inputs.device)),
            t,
            score,
            batch_size,
        )
        pert = _forward_rows(fwd, b * m, build, t, score, batch_size, progress).view(b, m)
    sums = (masks.float() * a[:, None, :]).sum(-1)
    return sums, full[:, None] - pert


def sensitivity_n_values(n_features: int, num: int = 46, max_exponent: float = 4.5) -> list[int]:
    """The subset sizes ``N`` of sensitivity-N on images: ``unique(int(logspace(0, 4.5, 46)))``.

    42 values from 1 to 31622 (the evaluation protocol, docs/method.md); sizes above
    ``n_features`` are dropped.
    """
    ns = np.unique(np.logspace(0, max_exponent, num).astype(int))
    return [int(n) for n in ns if 1 <= n <= n_features]


@dataclass
class SensitivityNResult:
    """Sensitivity-N: Pearson correlation per subset size.

    Attributes:
        ns: the subset sizes (pixels) or fractions (tokens), length ``K``.
        correlations: ``(B, K)`` Pearson correlation between the attribution summed over a
            subset and the target score's drop when the subset is removed, over the subsets.
            NaN where undefined (all subsets identical, e.g. ``N`` = all features).
        mean: ``(B,)`` mean over ``K`` ignoring NaN.
    """

    ns: list[int] | list[float]
    correlations: torch.Tensor
    mean: torch.Tensor = field(default_factory=lambda: torch.empty(0))


def _random_ranks(
    b: int, m: int, p: int, generator: torch.Generator, valid: torch.Tensor | None
) -> torch.Tensor:
    """``(B, M, P)`` int32 ranks of a uniform random permutation of the (valid) features."""
    keys = torch.rand(b, m, p, generator=generator)
    if valid is not None:
        keys = torch.where(valid[:, None, :].cpu(), keys, torch.full_like(keys, 2.0))
    order = keys.argsort(-1)
    ranks = torch.empty_like(order, dtype=torch.int32)
    ranks.scatter_(-1, order, torch.arange(p, dtype=torch.int32).expand(b, m, p).contiguous())
    return ranks


def sensitivity_n(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor | Sequence[int] | int,
    attributions: torch.Tensor | np.ndarray,
    ns: Sequence[int] | None = None,
    n_subsets: int = 100,
    baseline: float | torch.Tensor = 0.0,
    score: Score = "logit",
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> SensitivityNResult:
    """Sensitivity-N (Ancona et al., 2018) of image attributions.

    For each subset size ``N`` (default :func:`sensitivity_n_values`: 42 values on a log scale
    at 224 x 224), ``n_subsets`` uniformly random pixel subsets of size ``N`` are set to
    ``baseline`` (0 in normalised space), and the Pearson correlation between the attribution
    summed over each subset and the drop of the target's logit is taken over the subsets.
    The subsets of one draw are nested across ``N`` (one random permutation per draw, its first
    ``N`` pixels): each is still uniform for its own ``N``, and it costs one shuffle per draw.

    Returns:
        :class:`SensitivityNResult` (``correlations (B, K)``, ``mean (B,)``).
    """
    _check_inputs(inputs)
    b, _, h, w = inputs.shape
    p = h * w
    ns = list(ns) if ns is not None else sensitivity_n_values(p)
    if not ns or min(ns) < 1 or max(ns) > p:
        raise ConfigError(f"subset sizes must lie in [1, {p}], got {ns}")
    gen = torch.Generator().manual_seed(seed)
    ranks = _random_ranks(b, n_subsets, p, gen, None).to(inputs.device)
    cors = []
    from tqdm.auto import tqdm

    for n in tqdm(ns, desc="sensitivity-N", disable=not progress, leave=False):
        sums, drops = subset_output_drops(
            model, inputs, targets, attributions, ranks < n, baseline, score, batch_size
        )
        cors.append(pearson(sums, drops))
    corr = torch.stack(cors, 1)
    return SensitivityNResult(ns, corr, corr.nanmean(1))


def token_sensitivity_n(
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    embeddings: torch.Tensor,
    targets: torch.Tensor | Sequence[int] | int,
    attributions: torch.Tensor | np.ndarray,
    attention_mask: torch.Tensor | None = None,
    fractions: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    n_subsets: int = 100,
    baseline: float = 0.0,
    score: Score = "logit",
    batch_size: int = 64,
    seed: int = 0,
    model: nn.Module | None = None,
) -> SensitivityNResult:
    """Sensitivity-N over tokens: ``N = max(1, round(f * length))`` for each fraction ``f``.

    Removed tokens get ``baseline`` embeddings (zeros). At ``f = 1`` every subset is the whole
    sentence, so the correlation is undefined (NaN) and the mean skips it.

    Returns:
        :class:`SensitivityNResult` with ``ns`` = the fractions.
    """
    a, mask = _token_args(embeddings, attention_mask, attributions)
    b, t, d = embeddings.shape
    dev = embeddings.device
    tg = _targets(targets, b, dev)
    valid = mask.bool()
    lengths = valid.sum(1)
    gen = torch.Generator().manual_seed(seed)
    ranks = _random_ranks(b, n_subsets, t, gen, valid).to(dev)
    cors = []
    ctx = frozen_eval(model) if model is not None else _null()
    with ctx, torch.no_grad():
        full = target_scores(forward(embeddings, mask), tg, score)
        for f in fractions:
            n = (lengths.float() * f).round().clamp(min=1).long()  # (B,)
            sub = ranks < n[:, None, None]  # (B, M, T)
            flat = sub.reshape(b * n_subsets, t)
            row_sample = torch.arange(b, device=dev).repeat_interleave(n_subsets)

            def build(z0: int, z1: int, flat=flat, row_sample=row_sample):
                idx = row_sample[z0:z1]
                keep = flat[z0:z1].unsqueeze(-1)
                return torch.where(
                    keep, torch.full_like(embeddings[:1], baseline), embeddings.index_select(0, idx)
                ), idx

            pert = _forward_rows(
                lambda x, i: forward(x, mask.index_select(0, i)),
                b * n_subsets,
                build,
                tg,
                score,
                batch_size,
            ).view(b, n_subsets)
            sums = (sub.float() * a[:, None, :]).sum(-1)
            cors.append(pearson(sums, full[:, None] - pert))
    corr = torch.stack(cors, 1)
    return SensitivityNResult(list(fractions), corr, corr.nanmean(1))


