"""Evaluation metrics for attribution maps: thin accumulating classes over :mod:`.functional`.

Each class is configured once, fed batches with ``update(...)`` (which returns the batch's
per-sample values) and reports ``summary()``: mean, standard deviation and count per value,
plus the samples it skipped and why (an image without boxes for a box metric, say).

Example:
    >>> from inputiba.metrics import Deletion, Insertion, EffectiveHeatRatio   # doctest: +SKIP
    >>> dele, ins = Deletion(model), Insertion(model)                         # doctest: +SKIP
    >>> for x, y, maps in batches:                                           # doctest: +SKIP
    ...     dele.update(x, y, maps); ins.update(x, y, maps)
    >>> dele.summary()["auc"]["mean"]                                        # doctest: +SKIP

The pure functions (:mod:`inputiba.metrics.functional`) do the work; see there for the exact
definitions and the protocol choices (steps, baselines, thresholds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from inputiba.errors import InputError
from inputiba.metrics import functional
from inputiba.metrics.functional import (
    CurveResult,
    NoRegionError,
    SanityCheckResult,
    SensitivityNResult,
    filter_by_probability,
)
from inputiba.metrics.functional.localization import _map2d

__all__ = [
    "functional",
    "Metric",
    "Deletion",
    "Insertion",
    "SensitivityN",
    "EffectiveHeatRatio",
    "PointingGame",
    "MassInBox",
    "SanityCheck",
    "NoRegionError",
    "CurveResult",
    "SensitivityNResult",
    "SanityCheckResult",
    "filter_by_probability",
    "summarize",
]


def summarize(values: Sequence[float]) -> dict[str, float | int]:
    """Mean, standard deviation (population) and count of the finite values."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(arr.mean()), "std": float(arr.std()), "n": int(arr.size)}


class Metric:
    """Base class: per-sample values by key, sample names, skipped samples with reasons."""

    #: keys of the per-sample values this metric records
    keys: tuple[str, ...] = ()
    #: whether a higher value is better, per key
    higher_is_better: dict[str, bool] = {}

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every value recorded so far."""
        self.values: dict[str, list[float]] = {k: [] for k in self.keys}
        self.names: list[str] = []
        self.skipped: list[dict[str, str]] = []

    def _names(self, names: Sequence[str] | None, n: int) -> list[str]:
        if names is None:
            start = len(self.names) + len(self.skipped)
            return [str(start + i) for i in range(n)]
        if len(names) != n:
            raise InputError(f"got {len(names)} names for {n} samples")
        return [str(s) for s in names]

    def _record(self, name: str, row: dict[str, float]) -> None:
        self.names.append(name)
        for k in self.keys:
            self.values[k].append(float(row[k]))

    def _skip(self, name: str, reason: str) -> None:
        self.skipped.append({"name": name, "reason": reason})

    def per_sample(self) -> list[dict[str, Any]]:
        """One dict per recorded sample: ``{"name": ..., key: value, ...}``."""
        return [
            {"name": n, **{k: self.values[k][i] for k in self.keys}}
            for i, n in enumerate(self.names)
        ]

    def summary(self) -> dict[str, Any]:
        """``{key: {"mean", "std", "n"}, ..., "skipped": [{"name", "reason"}, ...]}``."""
        out: dict[str, Any] = {k: summarize(self.values[k]) for k in self.keys}
        out["skipped"] = list(self.skipped)
        return out


class _Curve(Metric):
    mode = "deletion"
    keys = ("auc",)

    def __init__(
        self,
        model: nn.Module,
        step: int | float = 0.01,
        baseline: float | str | torch.Tensor | None = None,
        blur_sigma: float = 15.0,
        score: functional.Score = "probability",
        batch_size: int = 64,
        keep_curves: bool = True,
        progress: bool = False,
    ) -> None:
        self.model, self.step, self.baseline, self.blur_sigma = model, step, baseline, blur_sigma
        self.score, self.batch_size, self.keep_curves, self.progress = (
            score,
            batch_size,
            keep_curves,
            progress,
        )
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self.curves: list[tuple[np.ndarray, np.ndarray]] = []

    def update(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor | Sequence[int],
        attributions: torch.Tensor | np.ndarray,
        names: Sequence[str] | None = None,
    ) -> CurveResult:
        """Add a batch: ``(B, C, H, W)`` inputs, ``(B,)`` targets, ``(B, H, W)`` maps."""
        res = functional.perturbation_curve(
            self.model,
            inputs,
            targets,
            attributions,
            mode=self.mode,
            step=self.step,
            baseline=self.baseline,
            blur_sigma=self.blur_sigma,
            score=self.score,
            batch_size=self.batch_size,
            progress=self.progress and self.mode,
        )
        for i, name in enumerate(self._names(names, inputs.shape[0])):
            self._record(name, {"auc": res.auc[i].item()})
            if self.keep_curves:
                self.curves.append((res.fractions.cpu().numpy(), res.scores[i].cpu().numpy()))
        return res


class Deletion(_Curve):
    """Deletion curve AUC (lower is better): pixels zeroed in order of decreasing attribution.

    Args as :func:`functional.perturbation_curve` (``step`` default 1% of the pixels a step;
    ``step=10`` is the paper's protocol).
    """

    mode = "deletion"
    higher_is_better = {"auc": False}


class Insertion(_Curve):
    """Insertion curve AUC (higher is better): pixels put back into a blurred image."""

    mode = "insertion"
    higher_is_better = {"auc": True}


class SensitivityN(Metric):
    """Sensitivity-N (higher is better): mean over N of the Pearson correlation per image.

    ``correlations`` keeps the ``(K,)`` per-N correlations of every sample.
    """

    keys = ("mean_correlation",)
    higher_is_better = {"mean_correlation": True}

    def __init__(
        self,
        model: nn.Module,
        ns: Sequence[int] | None = None,
        n_subsets: int = 100,
        baseline: float = 0.0,
        score: functional.Score = "logit",
        batch_size: int = 64,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        self.model, self.ns, self.n_subsets, self.baseline = model, ns, n_subsets, baseline
        self.score, self.batch_size, self.seed, self.progress = score, batch_size, seed, progress
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self.correlations: list[np.ndarray] = []
        self.used_ns: list[int] = []

    def update(self, inputs, targets, attributions, names=None) -> SensitivityNResult:
        """Add a batch (as :class:`Deletion`)."""
        res = functional.sensitivity_n(
            self.model,
            inputs,
            targets,
            attributions,
            ns=self.ns,
            n_subsets=self.n_subsets,
            baseline=self.baseline,
            score=self.score,
            batch_size=self.batch_size,
            seed=self.seed + len(self.names),
            progress=self.progress,
        )
        self.used_ns = list(res.ns)
        for i, name in enumerate(self._names(names, inputs.shape[0])):
            self._record(name, {"mean_correlation": res.mean[i].item()})
            self.correlations.append(res.correlations[i].cpu().numpy())
        return res

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        if self.correlations:
            per_n = np.nanmean(np.stack(self.correlations), axis=0)
            out["per_n"] = {int(n): float(c) for n, c in zip(self.used_ns, per_n, strict=True)}
        return out


class _BoxMetric(Metric):
    """Localisation metrics: ``update(maps, regions, names)``; empty regions are skipped."""

    def _value(self, heatmap: np.ndarray, region: Any) -> dict[str, float]:
        raise NotImplementedError

    def _check(self, heatmap: np.ndarray, region: Any) -> str | None:
        return None

    def update(
        self,
        maps: Sequence[np.ndarray | torch.Tensor] | torch.Tensor | np.ndarray,
        regions: Sequence[np.ndarray | torch.Tensor | None],
        names: Sequence[str] | None = None,
    ) -> list[dict[str, float] | None]:
        """Add maps (``(B, H, W)`` or a list of ``(H, W)``) with their regions.

        Each region is ``(K, 4)`` boxes in the map's pixels, an ``(H, W)`` bool mask, or None.
        A sample whose region is None or empty is recorded in ``skipped`` (returns None for it).
        """
        if len(maps) != len(regions):
            raise InputError(f"got {len(maps)} maps but {len(regions)} regions")
        out: list[dict[str, float] | None] = []
        for name, m, r in zip(self._names(names, len(maps)), maps, regions, strict=True):
            if r is None or (hasattr(r, "__len__") and len(r) == 0):
                self._skip(name, "no boxes")
                out.append(None)
                continue
            try:
                reason = self._check(_map2d(m), r)
                if reason:
                    self._skip(name, reason)
                    out.append(None)
                    continue
                row = self._value(m, r)
            except NoRegionError as exc:
                self._skip(name, str(exc))
                out.append(None)
                continue
            self._record(name, row)
            out.append(row)
        return out


class EffectiveHeatRatio(_BoxMetric):
    """Effective heat ratio (higher is better), weighted and unweighted.

    Args:
        base_threshold: heat below it is zeroed (0.1).
        max_region_fraction: skip images whose region covers more than this share of the image
            (the paper: 0.33); None keeps all.
    """

    keys = ("ehr", "ehr_unweighted")
    higher_is_better = {"ehr": True, "ehr_unweighted": True}

    def __init__(
        self, base_threshold: float = 0.1, max_region_fraction: float | None = 0.33
    ) -> None:
        self.base_threshold, self.max_region_fraction = base_threshold, max_region_fraction
        super().__init__()

    def _check(self, heatmap: np.ndarray, region: Any) -> str | None:
        if self.max_region_fraction is None:
            return None
        frac = float(functional.region_mask(region, heatmap.shape).mean())
        if frac > self.max_region_fraction:
            return f"the boxes cover {frac:.0%} of the image (> {self.max_region_fraction:.0%})"
        return None

    def _value(self, heatmap, region) -> dict[str, float]:
        kw = {"base_threshold": self.base_threshold}
        return {
            "ehr": functional.effective_heat_ratio(heatmap, region, weighted=True, **kw),
            "ehr_unweighted": functional.effective_heat_ratio(
                heatmap, region, weighted=False, **kw
            ),
        }


class PointingGame(_BoxMetric):
    """Pointing game accuracy (higher is better): the map's maximum within ``tolerance`` px."""

    keys = ("hit",)
    higher_is_better = {"hit": True}

    def __init__(self, tolerance: float = 15.0) -> None:
        self.tolerance = tolerance
        super().__init__()

    def _value(self, heatmap, region) -> dict[str, float]:
        return {"hit": float(functional.pointing_game(heatmap, region, self.tolerance))}


class MassInBox(_BoxMetric):
    """Share of the map's mass inside the boxes, and that share over the boxes' area share."""

    keys = ("mass_in_box", "mass_in_box_ratio")
    higher_is_better = {"mass_in_box": True, "mass_in_box_ratio": True}

    def _value(self, heatmap, region) -> dict[str, float]:
        share, ratio = functional.mass_in_box(heatmap, region)
        return {"mass_in_box": share, "mass_in_box_ratio": ratio}


class SanityCheck(Metric):
    """Cascading randomisation: SSIM and Spearman per randomised layer (lower = more faithful).

    ``summary()`` adds ``per_layer``: mean SSIM and Spearman after each cascade step.
    """

    keys = ("ssim_last", "spearman_last", "ssim_mean", "spearman_mean")
    higher_is_better = {k: False for k in keys}

    def __init__(
        self,
        model: nn.Module,
        explain_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], Any],
        layers: Sequence[str] | None = None,
        reinit: Callable[[nn.Module], None] = functional.reinitialize_,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        self.model, self.explain_fn, self.layers = model, explain_fn, layers
        self.reinit, self.seed, self.progress = reinit, seed, progress
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self.ssim: list[np.ndarray] = []
        self.spearman: list[np.ndarray] = []
        self.layer_names: list[str] = []

    def update(self, inputs, targets, names=None) -> SanityCheckResult:
        """Add a batch: ``(B, C, H, W)`` inputs and ``(B,)`` targets."""
        res = functional.sanity_check(
            self.model,
            inputs,
            targets,
            self.explain_fn,
            layers=self.layers,
            reinit=self.reinit,
            seed=self.seed,
            progress=self.progress,
        )
        self.layer_names = res.layers
        for i, name in enumerate(self._names(names, inputs.shape[0])):
            self._record(
                name,
                {
                    "ssim_last": res.ssim[i, -1],
                    "spearman_last": res.spearman[i, -1],
                    "ssim_mean": np.mean(res.ssim[i]),
                    "spearman_mean": np.nanmean(res.spearman[i]),
                },
            )
            self.ssim.append(res.ssim[i])
            self.spearman.append(res.spearman[i])
        return res

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        if self.ssim:
            s, r = np.stack(self.ssim).mean(0), np.nanmean(np.stack(self.spearman), 0)
            out["per_layer"] = [
                {"layer": n, "ssim": float(a), "spearman": float(b)}
                for n, a, b in zip(self.layer_names, s, r, strict=True)
            ]
        return out
