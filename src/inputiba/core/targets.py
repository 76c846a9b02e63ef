"""One place that turns what a user asks to explain into class indices.

* :func:`resolve_targets`: per-sample targets of a batch, from the model's logits: ``None``
  (each sample's predicted class), one class for all, or one per sample.
* :func:`resolve_target`: one class given as an index, a digit string or a class name
  (case-insensitive; any comma-separated synonym matches: ``"tabby"`` is ``"tabby, tabby cat"``).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np
import torch

from inputiba.errors import TargetError

__all__ = ["TargetType", "resolve_targets", "resolve_target"]

TargetType = int | Sequence[int] | torch.Tensor | None


def resolve_targets(logits: torch.Tensor, target: TargetType) -> torch.Tensor:
    """(B,) long targets: the predicted class for None, an int for all, or one per sample.

    Raises:
        TargetError: (a ``ValueError``) wrong number of targets, a target outside the model's
            classes, or one that is not a class index.
    """
    b, k = logits.shape[0], logits.shape[-1]
    n_classes = 2 if k == 1 else k
    if target is None:
        if k == 1:
            return (logits.view(-1) > 0).long()
        return logits.argmax(-1)
    if isinstance(target, str) or (isinstance(target, Sequence) and
                                   any(isinstance(v, str) for v in target)):
        raise TargetError(f"Targets must be class indices here, got {target!r} (class names "
                          "are resolved by inputiba.core.targets.resolve_target)")
    try:
        raw = torch.as_tensor(target, device=logits.device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TargetError(f"Targets must be class indices, got {target!r} "
                          f"({type(exc).__name__})") from None
    if raw.is_floating_point() and not torch.equal(raw, raw.round()):
        raise TargetError(f"Targets must be whole class indices, got {raw.view(-1).tolist()[:5]}")
    if raw.dtype == torch.bool:
        raise TargetError("Targets must be class indices, not booleans")
    t = raw.long().view(-1)
    if t.numel() == 1:
        t = t.expand(b).clone()
    if t.numel() != b:
        raise TargetError(f"Got {t.numel()} targets for a batch of {b} samples")
    bad = t[(t < 0) | (t >= n_classes)]
    if bad.numel():
        raise TargetError(
            f"Target {int(bad[0])} is out of range: the model has {n_classes} classes "
            f"(0..{n_classes - 1})"
        )
    return t


def _name_variants(name: str) -> list[str]:
    parts = [name, *name.split(",")]
    return [" ".join(p.lower().replace("_", " ").split()) for p in parts if p.strip()]


def resolve_target(target: int | str | None, class_names: Sequence[str] | None,
                   num_classes: int) -> int | None:
    """A target given as an index, a digit string or a class name -> the class index.

    Names match case-insensitively, against the full name or any of its comma-separated
    synonyms (``"tabby"`` matches ``"tabby, tabby cat"``).

    Raises:
        TargetError: (an ``ExplainError``) index out of range; unknown or ambiguous name (with
            close matches).
    """
    if target is None:
        return None
    if isinstance(target, str) and target.strip().lstrip("-").isdigit():
        target = int(target.strip())
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        idx = int(target)
        if not 0 <= idx < num_classes:
            raise TargetError(
                f"Target class {idx} is out of range: the model has {num_classes} classes "
                f"(0-{num_classes - 1})"
            )
        return idx
    if not isinstance(target, str):
        raise TargetError(f"Target must be a class index or name, not {type(target).__name__}")
    if class_names is None:
        raise TargetError(
            f"Unknown class name {target!r}: this model's class names are not known "
            f"({num_classes} classes); give the target as a class index"
        )
    key = " ".join(target.lower().replace("_", " ").split())
    exact = [i for i, n in enumerate(class_names) if key == _name_variants(n)[0]]
    if not exact:
        exact = [i for i, n in enumerate(class_names) if key in _name_variants(n)]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        opts = ", ".join(f"{i} ({class_names[i]})" for i in exact[:5])
        raise TargetError(f"Class name {target!r} is ambiguous: {opts}; give the class index")
    variants = {v: i for i, n in enumerate(class_names) for v in _name_variants(n)}
    close = difflib.get_close_matches(key, list(variants), n=5, cutoff=0.6)
    hint = "; close matches: " + ", ".join(f"{c!r} ({variants[c]})" for c in close) if close \
        else ""
    raise TargetError(f"Unknown class name {target!r}{hint}")
