"""Localisation metrics against boxes or masks: effective heat ratio, pointing game, mass in box."""


from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from inputiba.errors import InputError, NoRegionError

# ----------------------------------------------------------------------------- localisation


def region_mask(region: np.ndarray | torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """A region (boxes ``(K, 4)`` xyxy or a bool mask ``(H, W)``) as an ``(H, W)`` bool mask.

    Raises:
        ValueError: a mask of the wrong shape.
        NoRegionError: the region has no pixel.
    """
    from inputiba.data.datasets import boxes_to_mask

    r = region.detach().cpu().numpy() if isinstance(region, torch.Tensor) else np.asarray(region)
    if r.dtype == bool or (r.ndim == 2 and r.shape == tuple(shape) and r.shape[1] != 4):
        if r.shape != tuple(shape):
            raise InputError(
                f"region mask of shape {r.shape} does not match the map's {tuple(shape)}"
            )
        mask = r.astype(bool)
    elif r.size == 0 or (r.ndim == 2 and r.shape[1] == 4) or r.shape == (4,):
        mask = boxes_to_mask(r.reshape(-1, 4), shape)
    else:
        raise InputError(
            f"region of shape {r.shape} is neither (K, 4) boxes nor a mask of the map's shape {tuple(shape)}"
        )
    if not mask.any():
        raise NoRegionError("the region is empty (no boxes, or no pixel inside them)")
    return mask


def _map2d(heatmap: np.ndarray | torch.Tensor) -> np.ndarray:
    h = heatmap.detach().cpu().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap)
    h = np.squeeze(h).astype(np.float64)
    if h.ndim == 3:
        h = h.mean(0)
    if h.ndim != 2:
        raise InputError(f"expected one map (H, W) or (1, H, W), got shape {np.shape(heatmap)}")
    if not np.isfinite(h).all():
        raise InputError("the map has NaN or infinite values")
    return h


def effective_heat_ratio(
    heatmap: np.ndarray | torch.Tensor,
    region: np.ndarray | torch.Tensor,
    base_threshold: float = 0.1,
    quantiles: Sequence[float] | None = None,
    weighted: bool = True,
    return_curve: bool = False,
) -> float | tuple[float, np.ndarray, np.ndarray]:
    """Effective heat ratio (EHR) of one map in [0, 1] (InputIBA's localisation score).

    Heat below ``base_threshold`` is zeroed. For each quantile ``q`` (default 0, 0.1, ..., 1) of
    the remaining heat, ``t = min(quantile, 0.99 * max)``; the ratio at ``q`` is the heat inside
    the region among pixels ``>= t`` (``weighted``; the count of such pixels when not weighted)
    divided by the number of pixels ``>= t``. EHR is the trapezoid area over ``q``.

    A map with no pixel at or above ``base_threshold`` has no effective heat: EHR 0 (the
    original code crashed here, mistake 7).

    Args:
        heatmap: ``(H, W)`` map, values in [0, 1] (values above 1 raise).
        region: boxes ``(K, 4)`` in pixels of the map, or a bool mask ``(H, W)``.

    Returns:
        EHR, or ``(EHR, quantiles, ratios)`` with ``return_curve``.
    """
    h = _map2d(heatmap)
    if h.max() > 1 + 1e-6 or h.min() < -1e-6:
        raise InputError(f"EHR needs a map in [0, 1]; got values in [{h.min():.3g}, {h.max():.3g}]")
    roi = region_mask(region, h.shape)
    qs = np.linspace(0, 1, 11) if quantiles is None else np.asarray(quantiles, np.float64)
    h = np.where(h >= base_threshold, h, 0.0)
    poi = h[h >= base_threshold] if base_threshold > 0 else h.ravel()
    ratios = np.zeros(len(qs))
    if poi.size and h.max() > 0:
        ts = np.minimum(np.quantile(poi, qs), 0.99 * h.max())
        for i, t in enumerate(ts):  # 11 thresholds, each vectorised over the pixels
            above = h >= t
            inside = h[above & roi].sum() if weighted else float((above & roi).sum())
            ratios[i] = inside / max(above.sum(), 1)
    value = float(np.sum(np.diff(qs) * (ratios[1:] + ratios[:-1]) / 2))  # trapezoid (any numpy)
    return (value, qs, ratios) if return_curve else value


def pointing_game(
    heatmap: np.ndarray | torch.Tensor, region: np.ndarray | torch.Tensor, tolerance: float = 15.0
) -> bool:
    """Pointing game hit: the map's maximum lies within ``tolerance`` pixels of the region.

    The maximum is the first one in row-major order when several pixels share it (a constant
    map therefore points at the top-left corner). ``tolerance`` 15 follows Zhang et al. (2018).
    """
    from scipy.ndimage import distance_transform_edt

    h = _map2d(heatmap)
    roi = region_mask(region, h.shape)
    y, x = np.unravel_index(int(np.argmax(h)), h.shape)
    if roi[y, x]:
        return True
    if tolerance <= 0:
        return False
    return bool(distance_transform_edt(~roi)[y, x] <= tolerance)


def mass_in_box(
    heatmap: np.ndarray | torch.Tensor, region: np.ndarray | torch.Tensor
) -> tuple[float, float]:
    """Share of the map's mass inside the region, and that share over the region's area share.

    Returns:
        ``(share, share / area_fraction)``: ``share`` in [0, 1]; the second is 1 for a map
        spread uniformly and ``1 / area_fraction`` for a map entirely inside the region. A map
        with no mass gives ``(nan, nan)``.

    Raises:
        ValueError: the map has negative values (take ``abs`` or clip first).
    """
    h = _map2d(heatmap)
    if h.min() < 0:
        raise InputError(
            "mass-in-box needs a non-negative map; take its absolute value or clip it first"
        )
    roi = region_mask(region, h.shape)
    total = h.sum()
    if total <= 0:
        return float("nan"), float("nan")
    share = float(h[roi].sum() / total)
    return share, share / float(roi.mean())


