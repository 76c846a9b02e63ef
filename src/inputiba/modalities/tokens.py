"""Token batches for the text adapter: checking and padding token ids, the token-embedding
statistics (stage 0 for text) and the check that gradients reach the embedding."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from inputiba.core.functional import classification_loss
from inputiba.core.layers import _first_tensor, frozen_eval, get_layer, replace_output
from inputiba.core.statistics import LayerStatistics, _model_device, accumulate_statistics
from inputiba.core.targets import TargetType, resolve_targets
from inputiba.errors import ArgumentTypeError, InputError, ModelError


def check_token_batch(
    token_ids: Any, attention_mask: Any, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) as long (B, T) tensors, or an InputError (a ValueError) saying what is wrong."""
    ids = torch.as_tensor(token_ids)
    if ids.dim() == 1:
        raise InputError(
            f"token_ids must be a batch (B, T); got shape {tuple(ids.shape)} - add a batch "
            "dimension with token_ids[None]"
        )
    if ids.dim() != 2:
        raise InputError(f"token_ids must be a (B, T) tensor, got shape {tuple(ids.shape)}")
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise InputError(f"token_ids is empty (shape {tuple(ids.shape)})")
    if ids.dtype not in (torch.long, torch.int, torch.int32, torch.int16, torch.uint8):
        raise InputError(f"token_ids must hold integer ids, got {ids.dtype}")
    ids = ids.long()
    if attention_mask is None:
        mask = (ids != pad_id).long()
    else:
        mask = torch.as_tensor(attention_mask)
        if tuple(mask.shape) != tuple(ids.shape):
            raise InputError(
                f"attention_mask of shape {tuple(mask.shape)} does not match token_ids "
                f"{tuple(ids.shape)}"
            )
        mask = mask.long()
    empty = torch.nonzero(mask.sum(1) == 0).flatten().tolist()
    if empty:
        raise InputError(f"Rows {empty[:10]} of the batch have no tokens (all padding)")
    return ids, mask


def _batch_tokens(batch: Any, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of a batch: ids, (ids, mask[, ...]), (ids, labels), or a dict."""
    if isinstance(batch, Mapping):
        for key in ("input_ids", "token_ids", "ids", "input"):
            if key in batch:
                return check_token_batch(batch[key], batch.get("attention_mask"), pad_id)
        raise ArgumentTypeError(f"No 'input_ids' or 'token_ids' in a batch with keys {sorted(batch)}")
    if isinstance(batch, torch.Tensor):
        return check_token_batch(batch, None, pad_id)
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        ids = batch[0]
        if len(batch) > 1 and isinstance(batch[1], torch.Tensor) and batch[1].shape == ids.shape:
            return check_token_batch(ids, batch[1], pad_id)
        return check_token_batch(ids, None, pad_id)
    raise ArgumentTypeError(
        f"Cannot read token ids from a batch of type {type(batch).__name__}; yield (B, T) id "
        "tensors, (ids, attention_mask) pairs, or dicts with 'input_ids'"
    )


@contextlib.contextmanager
def _capture(modules: Mapping[str, nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    store: dict[str, torch.Tensor] = {}
    handles = []
    for name, m in modules.items():

        def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            store[name] = _first_tensor(out)

        handles.append(m.register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def estimate_token_statistics(
    model: nn.Module,
    layers: Sequence[str],
    batches: Iterable[Any],
    n_samples: int | None = None,
    pad_id: int | None = None,
    progress: bool = True,
) -> dict[str, LayerStatistics]:
    """Statistics of per-token features over the non-padding tokens of ``batches``.

    One forward pass per batch records every layer in ``layers``; for each, the features of
    the real tokens (``attention_mask == 1``), flattened to (N_tokens, D), update a
    :class:`~inputiba.core.statistics.LayerStatistics` of shape (D,). Padding never enters.

    Args:
        model: the text classifier, ``model(ids, attention_mask=mask) -> logits``.
        layers: dotted names of layers whose output (or its first element) is (B, T, D).
        batches: id tensors (B, T), ``(ids, attention_mask)`` pairs, ``(ids, labels)`` pairs,
            or dicts with ``input_ids`` (and ``attention_mask``).
        n_samples: stop after this many texts (``None``: all batches).
        pad_id: padding id when a batch has no mask (default ``model.pad_id`` or 0).
        progress: tqdm bar.

    Returns:
        dict[str, LayerStatistics]: the statistics by layer name, on the CPU; ``stats.n``
        counts tokens.
    """
    pad = int(getattr(model, "pad_id", 0) if pad_id is None else pad_id)
    modules = {name: get_layer(model, name) for name in layers}
    device = _model_device(model)

    def features_of(batch: Any, remaining: int | None) -> tuple[int, dict[str, torch.Tensor]]:
        ids, mask = _batch_tokens(batch, pad)
        ids, mask = ids[:remaining].to(device), mask[:remaining].to(device)
        if ids.shape[0] == 0:
            return 0, {}
        with _capture(modules) as store:
            model(ids, attention_mask=mask)
        valid = mask.bool()
        return ids.shape[0], {name: _token_features(store, name, ids.shape)[valid]
                              for name in layers}

    return accumulate_statistics(model, batches, features_of, n_samples, progress,
                                 unit="text", desc="estimate token statistics")


def _token_features(store: Mapping[str, torch.Tensor], name: str,
                    ids_shape: torch.Size) -> torch.Tensor:
    """Layer ``name``'s captured output, checked to be per-token features (B, T, D)."""
    if name not in store:
        raise ModelError(f"Layer {name!r} was not called during the forward pass")
    f = store[name]
    if f.dim() != 3 or tuple(f.shape[:2]) != tuple(ids_shape):
        raise ModelError(
            f"Layer {name!r} gives shape {tuple(f.shape)}; per-token features "
            f"(B, T, D) = ({ids_shape[0]}, {ids_shape[1]}, D) are needed"
        )
    return f


def layer_gradient(
    model: nn.Module,
    layer: str,
    token_ids: torch.Tensor,
    target: TargetType = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gradient of the classification loss with respect to ``layer``'s output.

    A feature bottleneck ``Z = lambda R + (1 - lambda) eps`` at ``layer`` has
    ``d loss / d alpha = d loss / d Z * (R - eps) * lambda (1 - lambda)``, so where this gradient
    is zero the bottleneck cannot change the prediction (the original LSTM setting: per-token
    outputs of the last LSTM, while the classifier reads its final hidden state).

    Args:
        model: the classifier.
        layer: dotted layer name.
        token_ids: (B, T) ids.
        attention_mask: (B, T) or None (ids != ``model.pad_id``).
        target: None (predicted class), an int, or one per sample.

    Returns:
        Tensor shaped like the layer's output; exactly zero where the loss does not depend on it.
    """
    module = get_layer(model, layer)
    ids, mask = check_token_batch(token_ids, attention_mask, int(getattr(model, "pad_id", 0)))
    device = _model_device(model)
    ids, mask = ids.to(device), mask.to(device)
    leaf: dict[str, torch.Tensor] = {}

    def swap(r: torch.Tensor) -> torch.Tensor:
        leaf["r"] = r.detach().requires_grad_(True)
        return leaf["r"]

    with frozen_eval(model), torch.enable_grad(), replace_output(module, swap):
        logits = model(ids, attention_mask=mask)
        t = resolve_targets(logits.detach(), target)
        loss = classification_loss(logits, t).sum()
        grad = None
        if loss.requires_grad:  # else nothing in the loss depends on the layer at all
            (grad,) = torch.autograd.grad(loss, leaf["r"], allow_unused=True)
    return torch.zeros_like(leaf["r"]) if grad is None else grad
