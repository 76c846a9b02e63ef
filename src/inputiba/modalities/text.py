"""InputIBA on text classifiers that embed token ids (recurrent nets, transformers).

The stages are the core's (:func:`inputiba.core.pipeline.run_stages`); :class:`TextStages`
tells them what the modality changes:

* stage 0 (:func:`estimate_token_statistics`): every non-padding token is a sample; padding
  never enters the statistics (the original code averaged over padding);
* stage 1: the feature bottleneck on a hidden layer's per-token features (B, T, H), padding
  passing unchanged and left out of the information loss. The explainer checks that the
  classification loss has a gradient at that layer and refuses a layer where it is exactly zero
  (the original LSTM setting read the final hidden state behind its bottleneck);
* stage 2: the generator works on the token embeddings in standardised coordinates (one mask
  logit per token, noise mean/scale per embedding dimension); the critic is an LSTM over each
  sample's feature sequence (:class:`~inputiba.core.gan.SequenceCritic`), real tokens only;
* stage 3: the input bottleneck on the embedding layer's output, one lambda per token shared
  across embedding dimensions, noise from the embedding statistics.

The attribution is (B, T) token scores in [0, 1], zero on padding.

Examples:
    >>> from inputiba import TextInputIBA, load_text_model
    >>> tm = load_text_model("lstm")                                    # doctest: +SKIP
    >>> explainer = TextInputIBA.for_model(tm, preset="fast")           # doctest: +SKIP
    >>> ids, mask = tm.tokenizer(["A gorgeous, witty film.", "Dull and lifeless."])  # doctest: +SKIP
    >>> scores = explainer.attribute(ids, attention_mask=mask)          # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from inputiba.core.bottleneck import BottleneckResult
from inputiba.core.config import DEFAULT_TEXT_PRESET, PRESETS, InputIBAConfig, check_setting
from inputiba.core.functional import (
    LN2,
    normalized_logits,
    reduce_members,
    target_probability,
)
from inputiba.core.gan import SequenceCritic
from inputiba.core.layers import frozen_eval, get_layer, layer_output, replace_output
from inputiba.core.pipeline import StageAdapter, run_stages
from inputiba.core.rng import SampleRNG, ensemble_seeds
from inputiba.core.statistics import LayerStatistics, _model_device
from inputiba.core.targets import TargetType, resolve_targets
from inputiba.errors import ArgumentTypeError, ConfigError, InputError, ModelError, StatisticsError
from inputiba.modalities.tokens import (
    _capture,
    _token_features,
    check_token_batch,
    estimate_token_statistics,
    layer_gradient,
)

__all__ = [
    "TEXT_DEFAULTS",
    "text_config",
    "estimate_token_statistics",
    "layer_gradient",
    "TextInputIBA",
    "TextInputIBAResult",
    "TextStages",
    "check_token_batch",
]

#: Text settings: the original LSTM/IMDB configuration (feature beta 15, input 30 steps at
#: lr 0.5, no smoothing, theta lr 0.03) except the input beta, 1 instead of 30.
#: The information loss is a mean over tokens, so a token's cost scales as beta / T: with the
#: short Rotten Tomatoes snippets (about 22 tokens, not IMDB's hundreds) beta 30 shuts every
#: token. Measured on the packaged LSTM (README, "Text"): the top-3 tokens of confident test
#: reviews contain a VADER lexicon word in 0.646 of them with beta 1, 0.292 with beta 30,
#: against 0.311 for 3 random tokens. Pass
#: ``input_beta=30`` for the original value. ``max_batch`` None runs all rows (samples x
#: draws) in one pass, fine for short texts; set it to bound memory on long ones.
TEXT_DEFAULTS: dict[str, Any] = {
    "feat_beta": 15.0,
    "input_beta": 1.0,
    "input_steps": 30,
    "input_lr": 0.5,
    "input_sigma": 0.0,
    "feat_sigma": 0.0,
    "gan_lr_theta": 0.03,
    "max_batch": None,
}


def text_config(preset: str | InputIBAConfig | None = None, **overrides: Any) -> InputIBAConfig:
    """InputIBA settings for text: :data:`TEXT_DEFAULTS`, then the preset (None:
    :data:`~inputiba.core.config.DEFAULT_TEXT_PRESET`), then ``overrides``.

    Raises:
        ValueError: unknown preset. TypeError: unknown setting name.
    """
    if isinstance(preset, InputIBAConfig):
        return preset.replace(**overrides)
    name = preset or DEFAULT_TEXT_PRESET
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return InputIBAConfig().replace(**{**TEXT_DEFAULTS, **PRESETS[name]}).replace(**overrides)


# --------------------------------------------------------------------------- the stages


class TextStages(StageAdapter):
    """A batch of token sequences as the stages see it
    (:class:`~inputiba.core.pipeline.StageAdapter`).

    Args:
        explainer: the :class:`TextInputIBA` (model, layers, settings, statistics).
        ids, mask: (B, T) token ids and attention mask on the model's device.
        r, emb: the feature layer's (B, T, H) and the embedding layer's (B, T, E) outputs.
        feature_members: K: groups of K consecutive rows (an ensemble's runs of one text) share
            one stage-1 run (:attr:`~inputiba.core.pipeline.StageAdapter.feature_members`).
    """

    def __init__(self, explainer: TextInputIBA, ids: torch.Tensor, mask: torch.Tensor,
                 r: torch.Tensor, emb: torch.Tensor, feature_members: int = 1) -> None:
        self.explainer, self.ids, self.mask = explainer, ids, mask
        valid3 = mask.bool().unsqueeze(-1).to(r.dtype)
        self.features = r
        self.feature_statistics = explainer._stat_tensors(explainer.layer, r)
        self.feature_valid = self.input_valid = valid3
        mean_e, std_e, _ = explainer._stat_tensors(explainer.embedding_layer, emb)
        self.inputs = emb
        self.input_noise = (mean_e, std_e)
        self.alpha_shape = (ids.shape[1], 1)
        # the generator masks the embeddings in standardised coordinates
        self.gan_inputs = (emb - mean_e) / std_e
        self.noise_param_shape = (1, emb.shape[-1])
        self.feature_members = feature_members
        self._feature_rows = torch.arange(0, ids.shape[0], feature_members,
                                          device=ids.device).repeat_interleave(
            explainer.config.feat_draws)

    def _run(self, samples: torch.Tensor, module: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """The model on the token ids of ``samples`` (one row each), ``module``'s output
        replaced by ``z``."""
        with replace_output(module, lambda _orig: z):
            return self.explainer.model(self.ids[samples], attention_mask=self.mask[samples])

    def feature_tail(self, z: torch.Tensor, rows: slice) -> torch.Tensor:
        return self._run(self._feature_rows[rows], self.explainer.module, z)

    def gan_features(self, inputs: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
        ex = self.explainer
        mean_e, std_e = self.input_noise
        with replace_output(ex.embedding_module, lambda _o: inputs * std_e + mean_e):
            return layer_output(ex.model, ex.module, self.ids[samples],
                                attention_mask=self.mask[samples])

    def forward(self, z: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
        return self._run(samples, self.explainer.embedding_module, z)

    def critic(self, rng: SampleRNG) -> nn.Module:
        r = self.features
        critic = SequenceCritic(r.shape[0], r.shape[-1], self.mask.bool(),
                                self.explainer.critic_hidden).to(r.device, r.dtype)
        return critic.init_per_sample(rng)

    def theta_init(self, feature: BottleneckResult) -> torch.Tensor:
        # the stage-1 capacity per token in bits per feature element (the images' analogue:
        # bits per input pixel); "zero" starts every token at m = 0.5. The setting
        # gan_theta_init="normalized" divides the capacity by its per-text maximum over the
        # real tokens (padding has zero capacity), as the mask (functional.normalized_logits)
        if self.explainer.theta_init == "capacity":
            cap = feature.kl.mean(-1, keepdim=True) / LN2
            if self.explainer.config.gan_theta_init == "normalized":
                return normalized_logits(cap * self.feature_valid)
            return cap
        return torch.zeros_like(self.feature_valid)

    def prior(self, gan_mask: torch.Tensor) -> torch.Tensor:
        return gan_mask * self.feature_valid


# --------------------------------------------------------------------------- the explainer


@dataclass
class TextInputIBAResult:
    """What :meth:`TextInputIBA.attribute` computes, with ``return_details=True``.

    Attributes:
        attribution: (B, T) token scores in [0, 1] (the stage-3 lambda), 0 on padding.
        feature_capacity: (B, T) stage-1 capacity per token in bits (KL summed over features).
        gan_mask: (B, T) the WGAN's token mask in [0, 1], 0 on padding.
        input_capacity: (B, T) stage-3 KL per token in bits (summed over embedding dims).
        attention_mask: (B, T) long, 1 for real tokens.
        targets: (B,) explained classes.
        probabilities: (B,) their probabilities.
        losses: per stage, dicts of (B, steps) tensors.
        seconds: wall time per stage.
        config: the settings used.
    """

    attribution: torch.Tensor
    feature_capacity: torch.Tensor
    gan_mask: torch.Tensor
    input_capacity: torch.Tensor
    attention_mask: torch.Tensor
    targets: torch.Tensor
    probabilities: torch.Tensor
    losses: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    config: InputIBAConfig | None = None


class TextInputIBA:
    """InputIBA for classifiers of token ids (LSTMs, transformers), token scores in [0, 1].

    Args:
        model: ``model(token_ids, attention_mask=mask) -> logits`` (B, K); or a
            :class:`~inputiba.models.text.TextModel`, which also supplies the layers and the
            tokenizer.
        layer: the feature layer (per-token output (B, T, H)); must be a layer the prediction
            depends on (checked: the explainer raises where the loss's gradient is zero).
        embedding_layer: the layer whose output (B, T, E) is the input bottleneck's.
        statistics: ``{layer: LayerStatistics, embedding_layer: LayerStatistics}`` or a file
            written by :meth:`save_statistics` (else call :meth:`estimate`).
        tokenizer: optional; lets :meth:`estimate` take raw texts.
        preset: a name of :data:`~inputiba.core.config.PRESETS` over :data:`TEXT_DEFAULTS`
            (None: :data:`~inputiba.core.config.DEFAULT_TEXT_PRESET`), or an
            :class:`~inputiba.core.config.InputIBAConfig`.
        pad_id: the padding id (default ``model.pad_id`` or 0) when no mask is given.
        critic_hidden: LSTM units of each sequence critic.
        theta_init: the generator's initial token mask: ``"capacity"`` (the stage-1 capacity
            per token; with the setting ``gan_theta_init="normalized"``, divided by its
            per-text maximum, see :func:`~inputiba.core.functional.normalized_logits`) or
            ``"zero"`` (0.5 everywhere, whatever ``gan_theta_init`` says).
        progress: progress bars per stage.
        **overrides: any :class:`~inputiba.core.config.InputIBAConfig` field.
    """

    def __init__(
        self,
        model: Any,
        layer: str | None = None,
        embedding_layer: str | None = None,
        statistics: Mapping[str, LayerStatistics] | str | os.PathLike[str] | None = None,
        *,
        tokenizer: Any = None,
        preset: str | InputIBAConfig | None = None,
        pad_id: int | None = None,
        critic_hidden: int = 32,
        theta_init: str = "capacity",
        progress: bool = False,
        **overrides: Any,
    ) -> None:
        if theta_init not in ("capacity", "zero"):
            raise ConfigError(f"theta_init must be 'capacity' or 'zero', got {theta_init!r}")
        self.theta_init = theta_init
        if hasattr(model, "model") and hasattr(model, "feature_layer"):  # a TextModel
            layer = layer or model.feature_layer
            embedding_layer = embedding_layer or model.embedding_layer
            tokenizer = tokenizer or model.tokenizer
            model = model.model
        if not isinstance(model, nn.Module):
            raise ArgumentTypeError(f"model must be an nn.Module or a TextModel, got {type(model).__name__}")
        if layer is None or embedding_layer is None:
            raise ConfigError("Give the feature layer and the embedding layer by name")
        self.model = model
        self.layer = layer
        self.embedding_layer = embedding_layer
        self.module = get_layer(model, layer)
        self.embedding_module = get_layer(model, embedding_layer)
        self.tokenizer = tokenizer
        self.pad_id = int(getattr(model, "pad_id", 0) if pad_id is None else pad_id)
        self.config = text_config(preset, **overrides)
        if self.config.precision != "fp32" or self.config.compile:
            import warnings

            warnings.warn("The settings precision and compile apply to image models only; "
                          "text models run in float32, eager", stacklevel=2)
        self.critic_hidden = critic_hidden
        self.progress = progress
        self._stats: dict[str, LayerStatistics] | None = None
        if statistics is not None:
            self.statistics = statistics  # type: ignore[assignment]

    # ---------------------------------------------------------------- statistics

    @property
    def statistics(self) -> dict[str, LayerStatistics] | None:
        """``{layer: stats, embedding_layer: stats}`` over non-padding tokens."""
        return self._stats

    @statistics.setter
    def statistics(self, value: Mapping[str, LayerStatistics] | str | os.PathLike[str]) -> None:
        if isinstance(value, (str, os.PathLike)):
            value = self._load_statistics(value)
        missing = [n for n in (self.layer, self.embedding_layer) if n not in value]
        if missing:
            raise InputError(f"Statistics for layer(s) {missing} are missing (have {list(value)})")
        self._stats = {n: value[n] for n in (self.layer, self.embedding_layer)}

    def estimate(
        self, data: Iterable[Any], n_samples: int | None = 1000, batch_size: int = 64,
        progress: bool = True,
    ) -> dict[str, LayerStatistics]:
        """Stage 0: statistics of the feature and embedding layers over non-padding tokens.

        Args:
            data: a list of texts (needs the tokenizer), or batches as for
                :func:`estimate_token_statistics`.
            n_samples: stop after this many texts.
            batch_size: texts per forward pass when ``data`` is texts.
            progress: progress bar.
        """
        if isinstance(data, (list, tuple)) and data and isinstance(data[0], str):
            if self.tokenizer is None:
                raise ConfigError("estimate() got texts but the explainer has no tokenizer")
            texts = list(data)[:n_samples] if n_samples else list(data)
            data = (self.tokenizer(texts[i : i + batch_size])
                    for i in range(0, len(texts), batch_size))
        self.statistics = estimate_token_statistics(
            self.model, [self.layer, self.embedding_layer], data, n_samples=n_samples,
            pad_id=self.pad_id, progress=progress,
        )
        return self._stats  # type: ignore[return-value]

    def save_statistics(self, path: str | os.PathLike[str]) -> None:
        """Save both layers' statistics (one ``torch.save`` file)."""
        stats = self._require_statistics()
        torch.save({name: s.state_dict() for name, s in stats.items()}, path)

    @staticmethod
    def _load_statistics(path: str | os.PathLike[str]) -> dict[str, LayerStatistics]:
        state = torch.load(path, map_location="cpu", weights_only=False)
        return {name: LayerStatistics.from_state_dict(s) for name, s in state.items()}

    def _require_statistics(self) -> dict[str, LayerStatistics]:
        if self._stats is None:
            raise StatisticsError(
                "No token statistics: call .estimate(texts or batches) first, or set "
                ".statistics (a dict or a file written by save_statistics)"
            )
        return self._stats

    def _stat_tensors(
        self, name: str, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, std floored, active) of layer ``name`` for its (B, T, D) ``features``."""
        s = self._require_statistics()[name]
        dim = features.shape[-1]
        if s.shape != (dim,):
            raise InputError(
                f"Layer {name!r} gives {dim} features per token but its statistics have shape "
                f"{s.shape}"
            )
        cfg, device, dtype = self.config, features.device, features.dtype
        return (
            s.mean.to(device, dtype),
            s.std.to(device, dtype).clamp_min(cfg.min_std),
            s.active(cfg.active_threshold).to(device, dtype),
        )

    # ---- attribution

    def attribute(
        self,
        token_ids: torch.Tensor,
        target: TargetType = None,
        attention_mask: torch.Tensor | None = None,
        *,
        seed: int | Sequence[int] | None = None,
        ensemble: int | None = None,
        return_details: bool = False,
    ) -> torch.Tensor | TextInputIBAResult:
        """Token scores of ``token_ids`` for ``target``.

        Args:
            token_ids: (B, T) right-padded ids (or padded where ``attention_mask`` is 0).
            target: None (each text's predicted class), an int for all, or one per text.
            attention_mask: (B, T), 1 for real tokens (default ``token_ids != pad_id``).
            seed: per-sample seeds (int: ``seed + i``; default the config's seed).
            ensemble: K >= 1 (default: the config's ``ensemble``): each text's scores combine
                K runs with independent seeds (``ensemble_reduce``: their mean, median or
                minimum), run as one batch of B * K, as for
                images (:meth:`inputiba.InputIBA.attribute`): member ``k`` of text ``i`` uses
                seed ``s_i + k``, where an int ``seed`` gives ``s_i = seed + i * K`` and a
                sequence gives the ``s_i`` (:func:`~inputiba.core.rng.ensemble_seeds`).
            return_details: return a :class:`TextInputIBAResult` (with K > 1 its per-token
                maps are the members' means and its losses have B * K rows, text-major).

        Returns:
            (B, T) float scores in [0, 1], exactly 0 on padding (on the ids' device), or a
            :class:`TextInputIBAResult`.

        Raises:
            ValueError: bad shapes, an all-padding row, or a feature layer where the
                classification loss has no gradient.
            ConfigError: ``ensemble`` not an integer >= 1.
        """
        k = check_setting("ensemble", self.config.ensemble if ensemble is None else ensemble)

        def members_mean(maps: torch.Tensor) -> torch.Tensor:  # (B * K, T) -> (B, T)
            return reduce_members(maps, k)

        ids0, mask0 = check_token_batch(token_ids, attention_mask, self.pad_id)
        device = _model_device(self.model)
        ids, mask = ids0.to(device), mask0.to(device)
        with frozen_eval(self.model):
            with torch.no_grad(), _capture(
                {self.layer: self.module, self.embedding_layer: self.embedding_module}
            ) as store:
                logits = self.model(ids, attention_mask=mask)
            r = _token_features(store, self.layer, ids.shape).detach()
            emb = _token_features(store, self.embedding_layer, ids.shape).detach()
            tgt = resolve_targets(logits, target)
            self._check_gradient(ids, mask, tgt)
            seeds = ensemble_seeds(self.config.seed if seed is None else seed, ids.shape[0], k)
            rep = (lambda t: t.repeat_interleave(k, dim=0)) if k > 1 else (lambda t: t)
            rng = SampleRNG(seeds, device, token_mask=rep(mask))
            batch = TextStages(self, rep(ids), rep(mask), rep(r), rep(emb),
                               feature_members=k if self.config.ensemble_shared_stage1 else 1)
            res = run_stages(batch, rep(tgt), rng, self.config, self.progress)
        valid = mask.bool()
        scores = (reduce_members(res.input.lamb.squeeze(-1), k, self.config.ensemble_reduce)
                  * valid).to(ids0.device)
        if not return_details:
            return scores
        return TextInputIBAResult(
            attribution=scores,
            feature_capacity=members_mean(res.feature.kl.sum(-1) / LN2),
            gan_mask=members_mean(res.gan.mask.squeeze(-1)) * valid,
            input_capacity=members_mean(res.input.kl.sum(-1) / LN2),
            attention_mask=mask,
            targets=tgt,
            probabilities=target_probability(logits, tgt),
            losses=res.losses,
            seconds=res.seconds,
            config=self.config,
        )

    __call__ = attribute

    def _check_gradient(self, ids: torch.Tensor, mask: torch.Tensor, tgt: torch.Tensor) -> None:
        grad = layer_gradient(self.model, self.layer, ids, tgt, mask)
        if not bool((grad != 0).any()):
            raise ModelError(
                f"The classification loss has exactly zero gradient at layer {self.layer!r}: a "
                "bottleneck there cannot change the prediction (e.g. the per-token outputs of "
                "the last LSTM when the classifier reads its final hidden state). Choose a "
                "layer the prediction depends on, such as an earlier LSTM's outputs."
            )

    # ---------------------------------------------------------------- conveniences

    @classmethod
    def for_model(
        cls,
        text_model: Any,
        preset: str | InputIBAConfig | None = None,
        n_samples: int = 1000,
        progress: bool = False,
        **overrides: Any,
    ) -> TextInputIBA:
        """An explainer for a packaged :class:`~inputiba.models.text.TextModel`, with statistics
        estimated on ``n_samples`` training snippets (cached next to the model)."""
        from inputiba.data.assets import cache_dir
        from inputiba.data.text import snippet_split
        from inputiba.models.image import model_fingerprint

        explainer = cls(text_model, preset=preset, progress=progress, **overrides)
        # statistics belong to these weights: key the cache by a digest of the parameters
        key = (f"{text_model.kind}-{explainer.layer}-{n_samples}-"
               f"{model_fingerprint(text_model.model)[:12]}")
        path = cache_dir() / "text_models" / f"stats-{key}.pt"
        if path.exists():
            explainer.statistics = path
        else:
            train, _ = snippet_split()
            explainer.estimate([t for t, _ in train], n_samples=n_samples, progress=progress)
            path.parent.mkdir(parents=True, exist_ok=True)
            explainer.save_statistics(path)
        return explainer


