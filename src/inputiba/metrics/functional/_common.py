"""Helpers shared by the metric functions: input checks, target scores, chunked forward passes."""


from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from inputiba.core.layers import frozen_eval
from inputiba.errors import ConfigError, InputError, TargetError

Score = str | Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- helpers


def _as_tensor(x: torch.Tensor | np.ndarray, device: torch.device | None = None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(device) if device is not None else t


def _targets(
    targets: torch.Tensor | Sequence[int] | int, b: int, device: torch.device
) -> torch.Tensor:
    t = torch.as_tensor(targets, device=device).long().reshape(-1)
    if t.numel() == 1 and b > 1:
        t = t.expand(b)
    if t.numel() != b:
        raise TargetError(f"targets has {t.numel()} entries for a batch of {b} inputs")
    return t.contiguous()


def _image_maps(attributions: torch.Tensor | np.ndarray, inputs: torch.Tensor) -> torch.Tensor:
    """Attributions as ``(B, H*W)`` float, checked against the inputs' shape."""
    a = _as_tensor(attributions, inputs.device).float()
    b, _, h, w = inputs.shape
    if a.dim() == 4:
        a = a.sum(1)
    if a.dim() == 2 and b == 1:
        a = a.unsqueeze(0)
    if a.dim() != 3 or a.shape[0] != b or tuple(a.shape[1:]) != (h, w):
        raise InputError(
            f"attributions of shape {tuple(attributions.shape)} do not match inputs of shape "
            f"{tuple(inputs.shape)}: expected (B, H, W) = ({b}, {h}, {w}) or (B, 1, H, W); "
            "resize the maps to the input resolution first"
        )
    return a.reshape(b, h * w)


def _check_inputs(inputs: torch.Tensor) -> None:
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
        shape = tuple(inputs.shape) if hasattr(inputs, "shape") else type(inputs).__name__
        raise InputError(f"inputs must be a (B, C, H, W) tensor, got {shape}")


def target_scores(
    logits: torch.Tensor, targets: torch.Tensor, score: Score = "probability"
) -> torch.Tensor:
    """The score of each row's target class.

    Args:
        logits: ``(N, K)`` model outputs.
        targets: ``(N,)`` class indices.
        score: ``"probability"`` (softmax), ``"logit"``, or a callable ``logits -> (N, K)``.

    Returns:
        ``(N,)`` float tensor.
    """
    if logits.dim() != 2:
        raise InputError(
            f"the model must return (N, classes) logits, got shape {tuple(logits.shape)}"
        )
    if callable(score):
        s = score(logits)
    elif score == "probability":
        s = torch.softmax(logits.float(), dim=1)
    elif score == "logit":
        s = logits.float()
    else:
        raise ConfigError(f"score must be 'probability', 'logit' or a callable, got {score!r}")
    return s.gather(1, targets.view(-1, 1)).squeeze(1)


def _forward_rows(
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    n_rows: int,
    build: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
    targets: torch.Tensor,
    score: Score,
    batch_size: int,
    progress: bool | str = False,
) -> torch.Tensor:
    """Score ``n_rows`` perturbed inputs built chunk by chunk.

    ``build(start, stop)`` returns ``(inputs_chunk, sample_index_chunk)``; ``forward(x, idx)``
    returns logits. Returns ``(n_rows,)`` target scores.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    out = torch.empty(n_rows, dtype=torch.float32, device=targets.device)
    desc = progress if isinstance(progress, str) else "forward passes"
    with tqdm(total=n_rows, desc=desc, disable=not progress, unit="input", leave=False) as bar:
        for start in range(0, n_rows, batch_size):
            stop = min(start + batch_size, n_rows)
            x, idx = build(start, stop)
            logits = forward(x, idx)
            out[start:stop] = target_scores(logits, targets[idx], score).to(out.device)
            bar.update(stop - start)
    return out


def filter_by_probability(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    threshold: float = 0.6,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which samples the model predicts with a target softmax probability ``>= threshold``.

    The paper evaluates only such samples (default 0.6).

    Returns:
        ``(keep, probabilities)``: ``(B,)`` bool and ``(B,)`` float.
    """
    _check_inputs(inputs)
    t = _targets(targets, inputs.shape[0], inputs.device)
    with frozen_eval(model), torch.no_grad():
        probs = _forward_rows(
            lambda x, _i: model(x),
            inputs.shape[0],
            lambda a, b: (inputs[a:b], torch.arange(a, b, device=inputs.device)),
            t,
            "probability",
            batch_size,
        )
    return probs >= threshold, probs



class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

