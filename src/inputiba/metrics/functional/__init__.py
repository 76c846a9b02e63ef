"""Evaluation metrics for attribution maps, as pure batched functions.

Every function here takes tensors (or arrays) and returns results; none keeps state. The
classifier always runs under :func:`inputiba.core.layers.frozen_eval` (eval mode, no parameter
gradients: dropout off, the original code's mistake 4) and under ``torch.no_grad``, with its
forward passes grouped into chunks of ``batch_size`` inputs (memory stays bounded however
many perturbed inputs a curve needs). Perturbed inputs are built per chunk with one vectorised
``torch.where`` from a rank tensor, so every row is its own tensor (never one tensor appended
several times: the original code's mistake 1).

Conventions:

* ``inputs``: ``(B, C, H, W)`` normalised images (what the model takes); ``targets``: ``(B,)``
  class indices; image ``attributions``: ``(B, H, W)`` or ``(B, 1, H, W)`` (channels are
  summed if ``(B, C, H, W)``), at the input's resolution.
* Text: ``embeddings`` ``(B, T, D)``, ``attention_mask`` ``(B, T)`` (1 = real token),
  token ``attributions`` ``(B, T)`` and ``forward(embeddings, attention_mask) -> logits``.
  Padding is never perturbed and never counted.
* Localisation metrics take one map ``(H, W)`` and a region: boxes ``(K, 4)`` ``x1, y1, x2,
  y2`` in pixels of the map (see :mod:`inputiba.data.datasets`), or a boolean mask ``(H, W)``.
  A region with no pixel raises :class:`NoRegionError` (the class layer reports and skips).

Scores: ``"probability"`` (softmax of the target, the paper's insertion/deletion score),
``"logit"`` (the target's logit, sensitivity-N's default) or a callable ``logits -> (N, K)``
scores indexed by the target.
"""

from __future__ import annotations

from inputiba.errors import NoRegionError
from inputiba.metrics.functional._common import Score, filter_by_probability, target_scores
from inputiba.metrics.functional.localization import (
    effective_heat_ratio,
    mass_in_box,
    pointing_game,
    region_mask,
)
from inputiba.metrics.functional.perturbation import (
    CurveResult,
    auc,
    blur,
    deletion,
    insertion,
    perturbation_curve,
    pixel_ranks,
    step_counts,
    token_perturbation_curve,
)
from inputiba.metrics.functional.sanity import (
    SanityCheckResult,
    map_similarity,
    randomization_layers,
    reinitialize_,
    sanity_check,
)
from inputiba.metrics.functional.sensitivity import (
    SensitivityNResult,
    pearson,
    sensitivity_n,
    sensitivity_n_values,
    subset_output_drops,
    token_sensitivity_n,
)

__all__ = [
    "NoRegionError",
    "Score",
    "CurveResult",
    "SensitivityNResult",
    "SanityCheckResult",
    "target_scores",
    "filter_by_probability",
    "pixel_ranks",
    "blur",
    "step_counts",
    "perturbation_curve",
    "deletion",
    "insertion",
    "token_perturbation_curve",
    "auc",
    "subset_output_drops",
    "sensitivity_n_values",
    "sensitivity_n",
    "token_sensitivity_n",
    "pearson",
    "region_mask",
    "effective_heat_ratio",
    "pointing_game",
    "mass_in_box",
    "randomization_layers",
    "reinitialize_",
    "sanity_check",
    "map_similarity",
]
