"""The two bottleneck optimisations: on a hidden layer (stage 1, IBA) and on the input (stage 3).

Both are functions of tensors and a callable that runs the (frozen) network: they own no hooks.
Every sample of the batch has its own parameters (alpha), its own target and its own random
stream; the loss is the *sum* of the per-sample losses, so with Adam's element-wise updates the
samples never influence each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from inputiba.core.config import BottleneckSettings
from inputiba.core.functional import (
    classification_loss,
    feature_kl,
    gaussian_smooth,
    input_prior_kl,
)
from inputiba.core.rng import SampleRNG

__all__ = [
    "FEATURE_DEFAULTS",
    "INPUT_DEFAULTS",
    "BottleneckResult",
    "fit_feature_bottleneck",
    "fit_input_bottleneck",
    "backward_in_chunks",
    "row_chunks",
]

#: Stage 1's and stage 3's settings in the original VGG16 configuration.
FEATURE_DEFAULTS = BottleneckSettings(beta=20.0, steps=10, lr=1.0, draws=10, sigma=0.0)
INPUT_DEFAULTS = BottleneckSettings(beta=20.0, steps=60, lr=1.0, draws=10, sigma=1.0)


@dataclass
class BottleneckResult:
    """What a bottleneck optimisation returns.

    Attributes:
        lamb: (B, *alpha_shape) final ``sigmoid(alpha)`` (smoothed where smoothing is on).
        alpha: (B, *alpha_shape) final alpha (unsmoothed logits).
        kl: (B, *feature_shape) per-element KL of the final bottleneck, in nats.
        losses: dict with ``"total"``, ``"cls"``, ``"info"``, each (B, steps), per sample.
    """

    lamb: torch.Tensor
    alpha: torch.Tensor
    kl: torch.Tensor
    losses: dict[str, torch.Tensor]

    def repeat_interleave(self, k: int) -> BottleneckResult:
        """Every sample's result repeated ``k`` times in a row ((B * k, ...), sample-major)."""
        def rep(t: torch.Tensor) -> torch.Tensor:
            return t.repeat_interleave(k, dim=0)

        return BottleneckResult(rep(self.lamb), rep(self.alpha), rep(self.kl),
                                {name: rep(v) for name, v in self.losses.items()})


def _smooth(lamb: torch.Tensor, sigma: float) -> torch.Tensor:
    if not sigma or lamb.dim() != 4:
        return lamb
    return gaussian_smooth(lamb, sigma)


def row_chunks(n: int, max_batch: int | None) -> list[slice]:
    """The row slices :func:`backward_in_chunks` uses for ``n`` rows (always the same)."""
    step = n if not max_batch or max_batch >= n else max_batch
    return [slice(a, min(n, a + step)) for a in range(0, n, step)]


def backward_in_chunks(
    fn: Callable[[torch.Tensor, slice], torch.Tensor],
    inputs: torch.Tensor,
    max_batch: int | None,
    grad_outputs: torch.Tensor | None = None,
    loss: Callable[[torch.Tensor, slice], torch.Tensor] | None = None,
    extra: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run ``fn(chunk, rows)`` over the rows of ``inputs`` in chunks and backpropagate.

    The chunks are :func:`row_chunks` ``(len(inputs), max_batch)``.

    Memory stays bounded by one chunk's activations while the gradient is exactly that of the
    whole batch: ``inputs`` (a non-leaf tensor that depends on the parameters) receives the sum
    of the chunks' gradients and passes it on to the parameters with one final backward.

    Either ``loss(outputs_chunk, rows) -> per-row losses`` (their sum is differentiated) or
    ``grad_outputs`` (the gradient w.r.t. ``fn``'s outputs) must be given. ``extra``, a scalar
    loss sharing the parameters' graph, is differentiated in the same final backward.

    Returns:
        The per-row losses (detached) with ``loss``, else ``fn``'s outputs (detached).
    """
    detached = inputs.detach()
    outs, chunk_grads = [], []
    for rows in row_chunks(inputs.shape[0], max_batch):
        # a leaf per chunk: slicing one shared leaf would make every chunk's backward write
        # (and add up) a zero-filled gradient of the whole batch, quadratic in the batch size
        leaf = detached[rows].requires_grad_(True)
        # fn gets a copy: a network that starts with an in-place op (VGG's ReLU(inplace=True)
        # right after the bottleneck layer) may not modify a leaf
        out = fn(leaf.clone(), rows)
        if loss is not None:
            per_row = loss(out, rows)
            per_row.sum().backward()
            outs.append(per_row.detach())
        else:
            out.backward(grad_outputs[rows])
            outs.append(out.detach())
        chunk_grads.append(leaf.grad if leaf.grad is not None else torch.zeros_like(leaf))
    tensors, grads = [], []
    if inputs.requires_grad:
        tensors.append(inputs)
        grads.append(torch.cat(chunk_grads) if len(chunk_grads) > 1 else chunk_grads[0])
    if extra is not None:
        tensors.append(extra)
        grads.append(None)
    if tensors:
        torch.autograd.backward(tensors, grads)
    return torch.cat(outs)


def _mean_per_sample(kl: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """(B,) mean of ``kl`` per sample, over the valid elements only when a mask is given."""
    if valid is None:
        return kl.flatten(1).mean(1)
    w = valid.expand_as(kl)
    return (kl * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1)


def _repeat(t: torch.Tensor, draws: int) -> torch.Tensor:
    """(B, ...) -> (B * draws, ...), sample-major (all draws of sample 0 first)."""
    return t.repeat_interleave(draws, dim=0)


def _scheduler(
    opt: torch.optim.Optimizer, settings: BottleneckSettings
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule of ``settings.schedule`` (None: constant)."""
    if settings.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings.steps)
    if settings.schedule == "warmup":
        ramp = max(1, settings.steps // 6)
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / ramp))
    return None


def fit_feature_bottleneck(
    tail: Callable[[torch.Tensor, slice], torch.Tensor],
    r: torch.Tensor,
    target: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    active: torch.Tensor,
    rng: SampleRNG,
    settings: BottleneckSettings = FEATURE_DEFAULTS,
    *,
    valid: torch.Tensor | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = classification_loss,
    max_batch: int | None = None,
    progress: bool = False,
) -> BottleneckResult:
    """Stage 1: IBA's per-sample bottleneck on the layer activation ``r``.

    ``Z = (lamb * R + (1 - lamb) * eps) * active`` with ``eps ~ N(mean, std^2)``; the loss per
    sample is ``cls + beta * mean(KL * active)``; Adam on alpha.

    Args:
        tail: ``tail(z, rows)`` maps the rows ``rows`` (a slice of the B * draws sample-major
            rows, see :func:`row_chunks`) of Z, shape (len(rows), *F), to their logits.
        r: (B, *F) the activation at the layer, computed once.
        target: (B,) target class per sample.
        mean, std: (*F) layer statistics (std already floored), same device as ``r``.
        active: (*F) float mask of active elements (1 active, 0 inactive).
        rng: per-sample random streams (``len(rng) == B``).
        settings: beta, steps, lr, draws (noise draws per sample and step, the original's
            "batch_size"), sigma (smoothing of lambda in feature cells; 0 = off) and init_alpha.
        valid: optional (B, ...) mask broadcastable to ``r`` of elements that exist (for token
            features (B, T, 1), padding = 0): invalid elements pass unchanged, cost nothing and
            are left out of the information loss's mean (and their ``kl`` and ``lamb`` are 0).
        loss_fn: per-sample classification loss ``(logits, target) -> (N,)``.
        max_batch: at most this many rows (samples x draws) per forward pass (memory bound;
            the gradient is the same); None: all at once.
        progress: show a progress bar.

    Returns:
        :class:`BottleneckResult` of the last evaluated bottleneck: the loss is evaluated
        ``steps`` times and Adam updates alpha after each evaluation but the last, so ``kl``
        (capacity, nats per element), ``lamb`` and ``alpha`` belong to the last entry of the
        loss histories. This is what IBA and the original InputIBA code report (the capacity
        of their last forward pass); their maps differ from those of one more update.
    """
    beta, steps, draws, sigma = settings.beta, settings.steps, settings.draws, settings.sigma
    b = r.shape[0]
    r = r.detach()
    alpha = torch.full_like(r, settings.init_alpha).requires_grad_(True)
    opt = torch.optim.Adam([alpha], lr=settings.lr)
    sched = _scheduler(opt, settings)
    target_rep = _repeat(target, draws)
    # histories stay on the device until the end: no host sync per step
    hist = {k: torch.zeros(b, steps, device=r.device) for k in ("total", "cls", "info")}
    w = None if valid is None else valid.to(r.dtype).expand_as(r)

    for step in tqdm(range(steps), desc="stage 1: feature bottleneck", disable=not progress,
                     leave=False):
        opt.zero_grad(set_to_none=True)
        lamb = _smooth(torch.sigmoid(alpha), sigma)
        eps = rng.randn(draws, *r.shape[1:], dtype=r.dtype).to(r.device) * std + mean
        z = (lamb.unsqueeze(1) * r.unsqueeze(1) + (1 - lamb.unsqueeze(1)) * eps) * active
        if w is not None:  # invalid elements (padding) pass unchanged
            z = torch.where(w.bool().unsqueeze(1), z, r.unsqueeze(1))
        info = _mean_per_sample(feature_kl(r, lamb, mean, std) * active, w)
        cls = backward_in_chunks(
            tail, z.flatten(0, 1), max_batch,
            loss=lambda out, rows: loss_fn(out, target_rep[rows]) / draws,
            extra=(beta * info).sum(),
        ).view(b, draws).sum(1)
        loss = cls + beta * info.detach()
        if step < steps - 1:  # the result is the last evaluated bottleneck (see Returns)
            opt.step()
            if sched is not None:
                sched.step()
        hist["total"][:, step] = loss.detach()
        hist["cls"][:, step] = cls
        hist["info"][:, step] = info.detach()
    with torch.no_grad():
        lamb = _smooth(torch.sigmoid(alpha), sigma)
        kl = feature_kl(r, lamb, mean, std) * active
        if w is not None:
            kl = kl * w
            lamb = lamb * w
    return BottleneckResult(lamb=lamb.detach(), alpha=alpha.detach(), kl=kl,
                            losses={k: v.cpu() for k, v in hist.items()})


def fit_input_bottleneck(
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    target: torch.Tensor,
    prior_mask: torch.Tensor,
    rng: SampleRNG,
    settings: BottleneckSettings = INPUT_DEFAULTS,
    *,
    mean: torch.Tensor | float = 0.0,
    std: torch.Tensor | float = 1.0,
    alpha_shape: tuple[int, ...] | None = None,
    valid: torch.Tensor | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = classification_loss,
    max_batch: int | None = None,
    progress: bool = False,
) -> BottleneckResult:
    """Stage 3: the bottleneck on the input with the GAN mask as prior (InputIBA).

    ``Z = lamb * x + (1 - lamb) * eps``, ``eps ~ N(mean, std^2)``; the information loss is the KL
    from the prior ``Q`` of :func:`inputiba.core.functional.input_prior_kl` with ``m = prior_mask``.

    Args:
        forward: ``forward(inputs, samples)`` maps a chunk of the (B * draws, *I) noisy
            inputs (sample-major) to logits (M, K); ``samples`` (M,) holds each row's sample
            index (for models whose forward needs per-sample data, such as token ids).
        x: (B, *I) the inputs (normalised images, or token embeddings (B, T, E)).
        target: (B,) target per sample.
        prior_mask: the GAN mask ``m`` in [0, 1], broadcastable to ``x``.
        rng: per-sample random streams.
        mean, std: the input noise distribution, broadcastable to ``x``'s sample shape.
        alpha_shape: per-sample shape of alpha, broadcastable to ``x``'s sample shape (default:
            the sample shape; ``(1, H, W)`` shares lambda across channels, ``(T, 1)`` across
            embedding dims).
        settings: as in :func:`fit_feature_bottleneck`; ``sigma`` smooths lambda spatially
            (images; tokens are never smoothed); ``average`` N > 0: the result is the mean
            lambda of the last N Adam iterates (its logits in ``alpha``), not the last one.
        valid: optional (B, *alpha_shape) mask of elements that exist (padding = 0); invalid
            elements always pass unchanged and cost nothing.
        loss_fn: per-sample classification loss.
        max_batch: at most this many rows (samples x draws) per forward pass (memory bound).
        progress: show a progress bar.

    Returns:
        :class:`BottleneckResult` with ``lamb`` the final smoothed lambda and ``alpha`` its logits.
    """
    beta, steps, draws, sigma = settings.beta, settings.steps, settings.draws, settings.sigma
    b = x.shape[0]
    x = x.detach()
    shape = tuple(alpha_shape) if alpha_shape is not None else tuple(x.shape[1:])
    alpha = torch.full((b, *shape), settings.init_alpha, dtype=x.dtype, device=x.device)
    alpha.requires_grad_(True)
    opt = torch.optim.Adam([alpha], lr=settings.lr)
    sched = _scheduler(opt, settings)
    target_rep = _repeat(target, draws)
    sample_of_row = _repeat(torch.arange(b, device=x.device), draws)
    hist = {k: torch.zeros(b, steps, device=x.device) for k in ("total", "cls", "info")}

    w = None if valid is None else valid.to(x.dtype).expand(b, *shape)
    n_avg = min(settings.average, steps)
    lamb_sum = torch.zeros_like(alpha) if n_avg else None

    for step in tqdm(range(steps), desc="stage 3: input bottleneck", disable=not progress,
                     leave=False):
        opt.zero_grad(set_to_none=True)
        lamb = _smooth(torch.sigmoid(alpha), sigma)
        # padding (valid == 0) passes unchanged and costs nothing
        lamb_z = lamb if w is None else torch.where(w.bool(), lamb, torch.ones_like(lamb))
        eps = rng.randn(draws, *x.shape[1:], dtype=x.dtype).to(x.device) * std + mean
        z = lamb_z.unsqueeze(1) * x.unsqueeze(1) + (1 - lamb_z.unsqueeze(1)) * eps
        info = _mean_per_sample(input_prior_kl(x, lamb, prior_mask, mean, std), w)
        cls = backward_in_chunks(
            lambda inp, rows: forward(inp, sample_of_row[rows]), z.flatten(0, 1), max_batch,
            loss=lambda out, rows: loss_fn(out, target_rep[rows]) / draws,
            extra=(beta * info).sum(),
        ).view(b, draws).sum(1)
        loss = cls + beta * info.detach()
        opt.step()
        if sched is not None:
            sched.step()
        hist["total"][:, step] = loss.detach()
        hist["cls"][:, step] = cls
        hist["info"][:, step] = info.detach()
        if n_avg and step >= steps - n_avg:  # Polyak averaging of the last iterates
            with torch.no_grad():
                lamb_sum += torch.sigmoid(alpha)
    with torch.no_grad():
        if n_avg:  # alpha: the logits of the averaged lambda, so maps read it as usual
            alpha = torch.logit(lamb_sum / n_avg, eps=1e-6)
        lamb = _smooth(torch.sigmoid(alpha), sigma)
        kl = input_prior_kl(x, lamb, prior_mask, mean, std)
        if w is not None:
            kl = kl * w.expand_as(kl)
            lamb = lamb * w
    return BottleneckResult(lamb=lamb.detach(), alpha=alpha.detach(), kl=kl,
                            losses={k: v.cpu() for k, v in hist.items()})
