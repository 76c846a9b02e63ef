"""Token attribution baselines for text classifiers: Integrated Gradients and LIME (Captum).

The model takes token ids, ``model(input_ids, **forward_kwargs) -> (B, classes)`` logits (or an
object with ``.logits``), and has an embedding layer, named like any other layer
(``"embedding"``, ``"bert.embeddings.word_embeddings"``). Both methods work on that layer's
output: a token is *removed* by setting its embedding to zero (the evaluation protocol's
convention for text), so they need nothing of the tokenizer::

    explainer = get_text_explainer("integrated_gradients", model, "embedding")
    scores = explainer.attribute(ids, target=1, attention_mask=mask)   # (B, L) in [0, 1]

Map convention (as :mod:`inputiba.methods.image`, per token): a float32 (B, L) tensor,
non-negative, zero on padding, divided per sample by its maximum. ``raw_attribute`` (or
``return_raw=True``) gives the signed score per token, (B, L): for Integrated Gradients the
attribution summed over the embedding dimensions (the scores of a sample add up to
``logit(x) - logit(zero embeddings)``), for LIME the coefficient of the token's presence in the
local linear model. The non-negative map uses ``|score|`` (``reduction="abs"``, default) or
its positive part (``"positive"``).

Padding: the token mask is ``token_mask`` if given, else the ``attention_mask`` keyword (which
is also passed to the model), else all tokens. Padding tokens keep their embeddings (LIME never
removes them) and get zero in the map.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from inputiba.core.layers import frozen_eval, get_layer, layer_output, replace_output
from inputiba.errors import ArgumentTypeError, ConfigError, InputError, ModelError
from inputiba.methods.base import (
    _model_device,
    _seeded,
    model_logits,
    normalize_map,
    resolve_targets,
)

__all__ = [
    "TextAttribution",
    "TextExplainer",
    "TextIntegratedGradients",
    "TextLIME",
    "TEXT_EXPLAINERS",
    "get_text_explainer",
]


@dataclass
class TextAttribution:
    """Result of ``attribute(..., return_raw=True)``: map (B, L) in [0, 1], raw (B, L) signed
    token scores, targets (B,) long, token_mask (B, L) bool."""

    map: torch.Tensor
    raw: torch.Tensor
    targets: torch.Tensor
    token_mask: torch.Tensor


class TextExplainer:
    """Base class of the token attribution methods.

    Args:
        model: ``model(input_ids, **forward_kwargs)`` -> logits.
        embedding_layer: dotted name of the token-embedding layer (close-match errors).
        reduction: ``"abs"`` or ``"positive"``: how signed scores become the map.
        seed: when set, every call runs under that seed in a forked RNG.
        normalize: divide each map by its maximum.
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        model: nn.Module,
        embedding_layer: str,
        *,
        reduction: str = "abs",
        seed: int | None = None,
        normalize: bool = True,
    ):
        if reduction not in ("abs", "positive"):
            raise ConfigError(f"reduction must be 'abs' or 'positive', got {reduction!r}")
        self.model = model
        self.embedding_layer = embedding_layer
        self.embedding = get_layer(model, embedding_layer)
        self.reduction = reduction
        self.seed = seed
        self.normalize = normalize

    def attribute(
        self,
        input_ids: torch.Tensor,
        target: int | Sequence[int] | torch.Tensor | None = None,
        *,
        token_mask: torch.Tensor | None = None,
        return_raw: bool = False,
        **forward_kwargs: Any,
    ) -> torch.Tensor | TextAttribution:
        """Token maps of a batch.

        Args:
            input_ids: (B, L) long token ids.
            target: class(es) to explain; ``None``: the predicted class.
            token_mask: (B, L) 1 for real tokens, 0 for padding (default: ``attention_mask``).
            return_raw: return a :class:`TextAttribution`.
            **forward_kwargs: passed to the model (e.g. ``attention_mask``); tensors must have
                the batch as first dimension.

        Returns:
            (B, L) float32 in [0, 1], or a :class:`TextAttribution`.
        """
        ids, targets, mask, raw = self._run(input_ids, target, token_mask, forward_kwargs)
        m = raw.abs() if self.reduction == "abs" else raw.clamp(min=0)
        m = (m * mask).float()
        if self.normalize:
            m = normalize_map(m)
        if return_raw:
            return TextAttribution(m.detach(), raw.detach(), targets, mask.bool())
        return m.detach()

    def with_model(self, model: nn.Module) -> TextExplainer:
        """The same method and settings on another model with the same embedding layer name."""
        new = copy.copy(self)
        new.model = model
        new.embedding = get_layer(model, self.embedding_layer)
        return new

    def explain_func(
        self, model: nn.Module | None, inputs: Any, targets: Any, **forward_kwargs: Any
    ) -> np.ndarray:
        """``explain_func(model, input_ids, targets) -> (B, L)`` numpy token maps (the metric
        libraries' signature); another ``model`` is explained through :meth:`with_model`."""
        explainer = self if model is None or model is self.model else self.with_model(model)
        ids = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor)
                              else inputs).long()
        t = None if targets is None else torch.as_tensor(np.asarray(targets)).long().view(-1)
        return explainer.attribute(ids, t, **forward_kwargs).cpu().numpy()  # type: ignore[union-attr]

    def raw_attribute(
        self,
        input_ids: torch.Tensor,
        target: int | Sequence[int] | torch.Tensor | None = None,
        *,
        token_mask: torch.Tensor | None = None,
        **forward_kwargs: Any,
    ) -> torch.Tensor:
        """Signed (B, L) token scores (see the module docstring)."""
        return self._run(input_ids, target, token_mask, forward_kwargs)[3].detach()

    __call__ = attribute

    def _run(
        self,
        input_ids: torch.Tensor,
        target: Any,
        token_mask: torch.Tensor | None,
        forward_kwargs: dict[str, Any],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else None
            raise InputError(f"input_ids must be a (B, L) tensor of token ids, got {shape}")
        if input_ids.is_floating_point():
            raise ArgumentTypeError("input_ids must be integer token ids, not floats")
        device = _model_device(self.model)
        ids = input_ids.to(device)
        kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                  for k, v in forward_kwargs.items()}
        if token_mask is None:
            token_mask = kwargs.get("attention_mask")
        mask = torch.ones_like(ids) if token_mask is None else token_mask.to(device)
        if mask.shape != ids.shape:
            raise InputError(
                f"token_mask shape {tuple(mask.shape)} does not match input_ids {tuple(ids.shape)}"
            )
        mask = (mask != 0).to(torch.float32)
        with frozen_eval(self.model), _seeded(self.seed, device), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(require gradients|multiple inputs).*")
            targets = resolve_targets(self.model, ids, target, **kwargs)
            with torch.no_grad():
                emb = layer_output(self.model, self.embedding, ids, **kwargs).detach()
            if emb.shape[:2] != ids.shape:
                raise ModelError(
                    f"layer {self.embedding_layer!r} outputs {tuple(emb.shape)}; expected "
                    f"(B, L, D) token embeddings for input_ids {tuple(ids.shape)}"
                )
            raw = self._raw(emb, ids, targets, mask, kwargs)
        return ids, targets, mask, raw * mask

    def _forward_from_embeddings(self, keys: list[str]) -> Any:
        """``f(emb, ids, *kwarg_values)``: the model's logits with the embeddings replaced."""

        def forward(emb: torch.Tensor, ids: torch.Tensor, *values: Any) -> torch.Tensor:
            with replace_output(self.embedding, lambda _orig: emb):
                return model_logits(self.model(ids, **dict(zip(keys, values, strict=True))))

        return forward

    def _raw(
        self,
        emb: torch.Tensor,
        ids: torch.Tensor,
        targets: torch.Tensor,
        mask: torch.Tensor,
        kwargs: dict[str, Any],
    ) -> torch.Tensor:
        raise NotImplementedError


class TextIntegratedGradients(TextExplainer):
    """Integrated Gradients on the token embeddings, from zero embeddings (Captum).

    Args:
        n_steps: integration points (Gauss-Legendre).
        internal_batch_size: forward batch (memory bound); default all at once.
    """

    name = "integrated_gradients"

    def __init__(
        self,
        model: nn.Module,
        embedding_layer: str,
        *,
        n_steps: int = 50,
        internal_batch_size: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(model, embedding_layer, **kwargs)
        self.n_steps = n_steps
        self.internal_batch_size = internal_batch_size

    def _raw(self, emb, ids, targets, mask, kwargs):  # type: ignore[no-untyped-def]
        from captum.attr import IntegratedGradients

        keys = list(kwargs)
        ig = IntegratedGradients(self._forward_from_embeddings(keys))
        attr = ig.attribute(
            emb,
            baselines=torch.zeros_like(emb),
            target=targets,
            additional_forward_args=(ids, *kwargs.values()),
            n_steps=self.n_steps,
            internal_batch_size=self.internal_batch_size or self.n_steps * emb.shape[0],
        )
        return attr.sum(dim=-1)


class TextLIME(TextExplainer):
    """LIME (Ribeiro et al. 2016) over tokens with Captum's ``Lime``.

    Each interpretable feature is one token (all its embedding dimensions); a removed token
    gets a zero embedding; padding is never removed. Captum's defaults are kept for the
    similarity kernel (exponential of the cosine distance) and the linear model
    (``SkLearnLasso(alpha=0.01)``); sampling is random, so the explainer defaults to ``seed=0``.

    Args:
        n_samples: perturbed sentences per sample.
        perturbations_per_eval: perturbed sentences per forward pass.
    """

    name = "lime"

    def __init__(
        self,
        model: nn.Module,
        embedding_layer: str,
        *,
        n_samples: int = 300,
        perturbations_per_eval: int = 32,
        seed: int | None = 0,
        **kwargs: Any,
    ):
        super().__init__(model, embedding_layer, seed=seed, **kwargs)
        self.n_samples = n_samples
        self.perturbations_per_eval = perturbations_per_eval

    def _raw(self, emb, ids, targets, mask, kwargs):  # type: ignore[no-untyped-def]
        from captum.attr import Lime

        keys = list(kwargs)
        forward = self._forward_from_embeddings(keys)
        b, length, dim = emb.shape
        out = torch.zeros(b, length, device=emb.device)
        for i in range(b):
            real = mask[i].bool()
            # features 0..n-1 for real tokens; padding shares one extra feature kept on
            feature = torch.full((length,), int(real.sum()), device=emb.device, dtype=torch.long)
            feature[real] = torch.arange(int(real.sum()), device=emb.device)
            lime = Lime(forward, perturb_func=_keep_feature(int(real.sum())))
            extra = tuple(v[i : i + 1] if isinstance(v, torch.Tensor) else v
                          for v in kwargs.values())
            attr = lime.attribute(
                emb[i : i + 1],
                baselines=torch.zeros_like(emb[i : i + 1]),
                target=targets[i : i + 1],
                additional_forward_args=(ids[i : i + 1], *extra),
                feature_mask=feature.reshape(1, length, 1).expand(1, length, dim),
                n_samples=self.n_samples,
                perturbations_per_eval=self.perturbations_per_eval,
            )
            out[i] = attr[0, :, 0] * real
        return out


def _keep_feature(n_real: int) -> Any:
    """Captum perturbation function: each real token kept w.p. 1/2, the padding feature kept."""

    def perturb(original: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        n = kwargs["num_interp_features"]
        keep = torch.randint(0, 2, (1, n), device=original.device)
        if n > n_real:
            keep[0, n_real:] = 1
        return keep

    return perturb


#: Registry name -> text explainer class (names as ``inputiba explain-text --method``).
TEXT_EXPLAINERS: dict[str, type[TextExplainer]] = {
    cls.name: cls for cls in (TextIntegratedGradients, TextLIME)
}


def get_text_explainer(
    name: str, model: nn.Module, embedding_layer: str, **kwargs: Any
) -> TextExplainer:
    """Build the text explainer ``name`` (``integrated_gradients`` or ``lime``).

    Raises:
        ValueError: unknown name.
    """
    key = {"ig": "integrated_gradients"}.get(name.lower().replace("-", "_"),
                                             name.lower().replace("-", "_"))
    if key not in TEXT_EXPLAINERS:
        raise ConfigError(
            f"Unknown text attribution method {name!r}. Available: {', '.join(TEXT_EXPLAINERS)}"
        )
    return TEXT_EXPLAINERS[key](model, embedding_layer, **kwargs)
