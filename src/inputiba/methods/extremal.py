"""Extremal perturbations (Fong, Patrick and Vedaldi, ICCV 2019), written from the paper.

An extremal perturbation is the mask ``m`` of a fixed area ``a`` (fraction of the image) that
keeps the target's score as high as possible when everything outside the mask is perturbed
(the *preservation game*)::

    m_a = argmax_m  Phi(m (x) x)  -  lambda * R_a(m)

* **Perturbation** ``m (x) x``: the *blur* perturbation of the paper, each pixel ``u`` replaced by
  the image blurred with a Gaussian of standard deviation ``sigma_max * (1 - m(u))``: a kept
  pixel (``m = 1``) is unchanged, a deleted one (``m = 0``) is blurred by ``sigma_max``. It is
  computed from a pyramid of ``levels`` blurs at ``sigma_max * l / (levels - 1)``, linearly
  interpolated per pixel (:func:`blur_pyramid`, :func:`blur_perturbation`). A ``fade``
  perturbation (``m x + (1 - m) reference``) is offered as well.
* **Smooth masks**: the mask is parametrised by values ``p_i`` in [0, 1] on a coarse grid of
  cell size ``stride`` pixels and made smooth by a *max-convolution* with a Gaussian-shaped
  kernel ``k(d) = exp(-|d|^2 / (2 sigma^2))``, ``m(u) = max_i k(u - u_i) p_i``
  (:func:`smooth_mask`): every mask is then a union of smooth blobs of width ~``sigma``.
* **Area constraint** ``R_a(m) = mean((sort(m) - r_a)^2)`` with ``r_a`` the sorted target vector
  of ``(1 - a) N`` zeros followed by ``a N`` ones (:func:`area_loss`): the rank-based loss of the
  paper, which fixes the *area*, not the sum, of the mask.
* **Optimisation**: Adam on the grid values (projected to [0, 1] after each step), ``lambda``
  growing geometrically from ``lambda_start`` to ``lambda_end`` so that the score leads at
  first and the area constraint becomes hard by the end. ``Phi`` is the target's logit divided
  by ``|Phi(x) - Phi(fully perturbed x)|`` (a choice of this implementation: it makes the
  weights independent of the model's logit scale).

Samples and areas are optimised together as one batch (``B * len(areas)`` masks); the
attribution map of several areas is their mean (pixels kept even at the smallest area score
highest). This module is pure PyTorch: TorchRay (non-commercial licence) is neither used nor
copied.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from inputiba.core.functional import gaussian_smooth
from inputiba.errors import ConfigError, InputError

__all__ = [
    "blur_pyramid",
    "blur_perturbation",
    "fade_perturbation",
    "smooth_mask",
    "area_loss",
    "extremal_perturbation",
]


def blur_pyramid(x: torch.Tensor, sigma_max: float, levels: int = 8) -> torch.Tensor:
    """Gaussian blurs of ``x`` at ``sigma_max * l / (levels - 1)``, ``l = 0 .. levels - 1``.

    Args:
        x: (B, C, H, W) images.
        sigma_max: the strongest blur, in pixels (> 0).
        levels: number of blur levels (>= 2); level 0 is ``x`` itself.

    Returns:
        (B, levels, C, H, W) tensor.
    """
    if levels < 2:
        raise ConfigError(f"levels must be >= 2, got {levels}")
    if sigma_max <= 0:
        raise ConfigError(f"sigma_max must be positive, got {sigma_max}")
    out = [x]
    for level in range(1, levels):
        out.append(gaussian_smooth(x, sigma_max * level / (levels - 1)))
    return torch.stack(out, dim=1)


def blur_perturbation(pyramid: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Blur each pixel by ``sigma_max * (1 - mask)``, interpolating the pyramid linearly.

    Args:
        pyramid: (B, L, C, H, W) from :func:`blur_pyramid`.
        mask: (B, 1, H, W) in [0, 1]; 1 keeps the pixel, 0 blurs it by ``sigma_max``.

    Returns:
        (B, C, H, W) perturbed images (differentiable in ``mask``).
    """
    b, levels, c, h, w = pyramid.shape
    t = (1 - mask.clamp(0, 1)) * (levels - 1)  # (B, 1, H, W) continuous level
    lower = t.detach().floor().clamp(max=levels - 2).long()
    frac = t - lower.to(t.dtype)
    idx = lower.unsqueeze(1).expand(b, 1, c, h, w)
    low = pyramid.gather(1, idx).squeeze(1)
    high = pyramid.gather(1, idx + 1).squeeze(1)
    return low + frac * (high - low)


def fade_perturbation(
    x: torch.Tensor, mask: torch.Tensor, reference: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """``mask * x + (1 - mask) * reference`` (reference 0 = the mean image when normalised)."""
    return mask * x + (1 - mask) * reference


def _axis_tables(
    size: int, stride: int, sigma: float, reach: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel along one axis and per grid offset: padded grid index and squared distance."""
    pos = torch.arange(size, dtype=torch.float64)
    base = torch.div(torch.arange(size), stride, rounding_mode="floor")
    offsets = torch.arange(-reach, reach + 1)
    cell = base[None, :] + offsets[:, None]  # (O, size) grid index, may be out of range
    centre = (cell.to(torch.float64) + 0.5) * stride - 0.5
    d2 = (pos[None, :] - centre) ** 2 / (2 * sigma**2)
    return cell + reach, d2  # index into the grid padded by ``reach`` on both sides


def smooth_mask(
    params: torch.Tensor, size: tuple[int, int], stride: int, sigma: float
) -> torch.Tensor:
    """Max-convolution of grid values with a Gaussian-shaped kernel: a smooth mask.

    ``m(u) = max_i exp(-|u - u_i|^2 / (2 sigma^2)) * p_i`` over grid points ``u_i``, the centres of
    ``stride x stride`` cells; the kernel is cut where it falls below ``exp(-4.5)`` (3 sigma).
    The kernel factorises over the axes and all factors are non-negative, so the max is taken
    along x and then along y (``2 (2 r + 1)`` shifts instead of ``(2 r + 1)^2``).

    Args:
        params: (N, 1, gh, gw) grid values in [0, 1], ``gh = ceil(H / stride)``.
        size: (H, W) of the mask.
        stride: grid cell size in pixels.
        sigma: kernel width in pixels.

    Returns:
        (N, 1, H, W) mask in [0, 1].
    """
    h, w = size
    n, _, gh, gw = params.shape
    if gh != math.ceil(h / stride) or gw != math.ceil(w / stride):
        raise InputError(
            f"params grid {gh}x{gw} does not match size {h}x{w} with stride {stride} "
            f"(expected {math.ceil(h / stride)}x{math.ceil(w / stride)})"
        )
    reach = math.ceil(3 * sigma / stride)
    padded = nn.functional.pad(params, (reach, reach, reach, reach))  # zeros outside the grid
    # The kernel is a product of non-negative 1-d factors, so the 2-d max splits into a max
    # along x (for every grid row) followed by a max along y.
    cols = _max_conv_1d(padded, w, stride, sigma, reach, dim=3)  # (N, 1, gh + 2 reach, W)
    return _max_conv_1d(cols, h, stride, sigma, reach, dim=2)  # (N, 1, H, W)


def _max_conv_1d(
    values: torch.Tensor, size: int, stride: int, sigma: float, reach: int, dim: int
) -> torch.Tensor:
    index, d2 = _axis_tables(size, stride, sigma, reach)
    kernel = torch.exp(-d2).to(values.device, values.dtype)  # (O, size)
    index = index.to(values.device)
    shape = [1] * values.dim()
    shape[dim] = size
    best = None
    for o in range(index.shape[0]):
        value = values.index_select(dim, index[o]) * kernel[o].reshape(shape)
        best = value if best is None else torch.maximum(best, value)
    assert best is not None
    return best


def area_loss(mask: torch.Tensor, area: torch.Tensor | float) -> torch.Tensor:
    """The rank-based area constraint ``mean((sort(m) - r_a)^2)`` per mask.

    Args:
        mask: (N, 1, H, W) or (N, K) masks in [0, 1].
        area: scalar or (N,) target fraction of ones, in (0, 1).

    Returns:
        (N,) loss; zero exactly when the mask has ``round(a * K)`` ones and zeros elsewhere.
    """
    flat = mask.reshape(mask.shape[0], -1)
    k = flat.shape[1]
    area = torch.as_tensor(area, dtype=flat.dtype, device=flat.device).reshape(-1, 1)
    ranks = torch.arange(k, device=flat.device, dtype=flat.dtype).unsqueeze(0)
    n_ones = torch.round(area * k)
    target = (ranks >= k - n_ones).to(flat.dtype)  # ascending: zeros then n_ones ones
    return ((flat.sort(dim=1).values - target) ** 2).mean(dim=1)


def _logits(out: object) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out  # type: ignore[return-value]


def extremal_perturbation(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    areas: Sequence[float] = (0.1,),
    *,
    steps: int = 150,
    lr: float = 0.1,
    stride: int | None = None,
    sigma: float | None = None,
    perturbation: str = "blur",
    sigma_max: float | None = None,
    levels: int = 8,
    reference: torch.Tensor | float = 0.0,
    lambda_start: float = 1.0,
    lambda_end: float = 100.0,
    batch_size: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Extremal perturbation masks of each sample for each area (preservation game).

    Args:
        model: the classifier (callers put it in eval mode; see ``frozen_eval``).
        inputs: (B, C, H, W) normalised images.
        targets: (B,) class indices.
        areas: fractions of the image the mask may keep, each in (0, 1).
        steps: Adam steps.
        lr: Adam learning rate on the grid values (kept in [0, 1] by projection).
        stride: grid cell in pixels; default ``max(1, round(min(H, W) / 32))`` (7 at 224).
        sigma: smoothing kernel width in pixels; default ``3 * stride`` (21 at 224).
        perturbation: ``"blur"`` (the paper's default) or ``"fade"`` (to ``reference``).
        sigma_max: strongest blur in pixels; default ``10 * min(H, W) / 224``.
        levels: blur pyramid levels.
        reference: value (or (C,H,W)/(B,C,H,W) tensor) deleted pixels fade to, for ``"fade"``.
        lambda_start: weight of the area loss at the first step; it grows geometrically to
            ``lambda_end`` over the steps (the score is divided by the gap between the
            unperturbed and the fully perturbed image's score, so these weights do not depend
            on the model's logit scale).
        lambda_end: weight of the area loss at the last step.
        batch_size: masks optimised at once (samples x areas); default all.
        progress: show a tqdm bar over the steps.

    Returns:
        (B, len(areas), H, W) masks in [0, 1].
    """
    if inputs.dim() != 4:
        raise InputError(f"inputs must be (B, C, H, W), got shape {tuple(inputs.shape)}")
    if not areas or any(not 0 < a < 1 for a in areas):
        raise ConfigError(f"areas must be a non-empty sequence of fractions in (0, 1), got {areas}")
    if perturbation not in ("blur", "fade"):
        raise ConfigError(f"perturbation must be 'blur' or 'fade', got {perturbation!r}")
    b, _, h, w = inputs.shape
    n_areas = len(areas)
    stride = stride or max(1, round(min(h, w) / 32))
    sigma = sigma or 3.0 * stride
    sigma_max = sigma_max or 10.0 * min(h, w) / 224
    targets = torch.as_tensor(targets, device=inputs.device).long().reshape(-1)
    # one row per (sample, area), sample-major
    x_all = inputs.detach().repeat_interleave(n_areas, dim=0)
    t_all = targets.repeat_interleave(n_areas)
    a_all = torch.tensor(list(areas) * b, dtype=inputs.dtype, device=inputs.device)
    chunk = batch_size or x_all.shape[0]
    masks = []
    for start in range(0, x_all.shape[0], chunk):
        sl = slice(start, start + chunk)
        masks.append(
            _optimise(
                model, x_all[sl], t_all[sl], a_all[sl], steps=steps, lr=lr, stride=stride,
                sigma=sigma, perturbation=perturbation, sigma_max=sigma_max, levels=levels,
                reference=reference, lambda_start=lambda_start, lambda_end=lambda_end,
                progress=progress,
            )
        )
    return torch.cat(masks).reshape(b, n_areas, h, w)


def _optimise(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    areas: torch.Tensor,
    *,
    steps: int,
    lr: float,
    stride: int,
    sigma: float,
    perturbation: str,
    sigma_max: float,
    levels: int,
    reference: torch.Tensor | float,
    lambda_start: float,
    lambda_end: float,
    progress: bool,
) -> torch.Tensor:
    n, _, h, w = x.shape
    grid = (n, 1, math.ceil(h / stride), math.ceil(w / stride))
    params = torch.full(grid, 0.5, dtype=x.dtype, device=x.device, requires_grad=True)
    optimiser = torch.optim.Adam([params], lr=lr)
    if perturbation == "blur":
        with torch.no_grad():
            pyramid = blur_pyramid(x, sigma_max, levels)
    if isinstance(reference, torch.Tensor) and reference.dim() == 4 and reference.shape[0] != n:
        raise InputError("a per-sample reference must have the batch of the inputs")
    rows = torch.arange(n, device=x.device)

    def perturb(mask: torch.Tensor) -> torch.Tensor:
        if perturbation == "blur":
            return blur_perturbation(pyramid, mask)
        return fade_perturbation(x, mask, reference)

    with torch.no_grad():  # the reward's scale: the score gap between keeping all and nothing
        ones = torch.ones(n, 1, h, w, dtype=x.dtype, device=x.device)
        kept = _logits(model(perturb(ones)))[rows, targets]
        gone = _logits(model(perturb(torch.zeros_like(ones))))[rows, targets]
        scale = 1.0 / (kept - gone).abs().clamp(min=1e-3)
    ratio = (lambda_end / lambda_start) ** (1 / max(steps - 1, 1))
    for step in tqdm(range(steps), desc="extremal perturbation", disable=not progress):
        lam = lambda_start * ratio**step
        mask = smooth_mask(params, (h, w), stride, sigma)
        score = _logits(model(perturb(mask)))[rows, targets]
        loss = (-score * scale + lam * area_loss(mask, areas)).sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            params.clamp_(0, 1)
    with torch.no_grad():
        return smooth_mask(params, (h, w), stride, sigma).squeeze(1)
