"""Explain texts in one call: texts in, tokens and scores (InputIBA or a baseline's) out.

:func:`explain_texts` is what ``inputiba explain-text`` runs; it tokenises, batches, explains
with :class:`~inputiba.modalities.text.TextInputIBA` or a text baseline of
:mod:`inputiba.methods.text`, and returns one :class:`TokenAttribution` per text.
"""

from __future__ import annotations

import os
import time
import warnings as _warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from inputiba.core.config import InputIBAConfig
from inputiba.core.functional import target_probability
from inputiba.core.layers import frozen_eval
from inputiba.core.rng import run_base_seeds
from inputiba.core.targets import TargetType
from inputiba.errors import ConfigError, InputIBAWarning, TargetError, TextInputError
from inputiba.modalities.text import TextInputIBA

__all__ = ["TokenAttribution", "explain_texts", "text_explainer_for", "write_text_results"]


@dataclass
class TokenAttribution:
    """One explained text.

    Attributes:
        text: the text.
        tokens: its tokens.
        scores: one InputIBA score in [0, 1] per token.
        label: the predicted class name.
        probability: the predicted class's probability.
        target: the explained class index (the predicted one unless a target was given).
        target_label: the explained class's name.
        target_probability: the explained class's probability.
        seconds: this text's share of the batch's wall time.
        n_tokens: the text's tokens before the cut to the tokenizer's ``max_len``; more than
            ``len(tokens)`` (+ markers) when the text was cut (see ``warnings``).
        unknown_tokens: how many of the explained tokens the model does not know (``<unk>``).
        warnings: what the reader should know (the text was cut; no word is known, so the
            prediction and scores say nothing about the text). Also issued as
            :class:`~inputiba.errors.InputIBAWarning`.
    """

    text: str
    tokens: list[str]
    scores: list[float]
    label: str
    probability: float
    target: int
    target_label: str
    target_probability: float
    seconds: float = 0.0
    n_tokens: int = 0
    unknown_tokens: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def explain_texts(
    texts: str | Sequence[str],
    model: Any = "lstm",
    explainer: Any = None,
    target: TargetType = None,
    preset: str | InputIBAConfig | None = None,
    batch_size: int = 16,
    seed: int | None = None,
    progress: bool = False,
    method: str = "inputiba",
    method_options: Mapping[str, Any] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> list[TokenAttribution]:
    """Texts in, tokens and scores (InputIBA or a baseline's) out, in one call.

    Args:
        texts: one text or a list.
        model: ``"lstm"``, ``"minilm"``, a checkpoint path, or a
            :class:`~inputiba.models.text.TextModel`.
        explainer: reuse an explainer: a :class:`TextInputIBA` (its statistics) or a
            :class:`~inputiba.methods.text.TextExplainer`; default
            :meth:`TextInputIBA.for_model`, or :func:`text_explainer_for` when ``method`` is
            a baseline.
        target: None (predicted class), an int for all, or one per text.
        preset: InputIBA preset (when no explainer is given).
        **overrides: InputIBA settings over the preset (when no explainer is given).
        batch_size: texts per attribution batch.
        seed: base seed (default: the config's); text ``i`` uses ``seed + i * K`` (ensemble K).
        progress: progress bar over batches.
        method: ``"inputiba"`` or a baseline of
            :data:`~inputiba.methods.text.TEXT_EXPLAINERS` (``"integrated_gradients"``,
            ``"lime"``), whose normalised map (B, T) in [0, 1] replaces the InputIBA scores.
        method_options: the baseline's keyword arguments (e.g. ``{"n_steps": 20}``).
        out_dir: also write ``results.json`` and ``explanation.html`` there
            (:func:`write_text_results`, what ``inputiba explain-text`` writes).

    Returns:
        One :class:`TokenAttribution` per text. For the LSTM the tokens are the text's words
        as written (unknown words included); for MiniLM the WordPiece tokens without
        ``[CLS]``/``[SEP]`` (whose scores are dropped from the list).
    """
    from inputiba.models.text import TextModel
    from inputiba.models.text_training import load_text_model

    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    blank = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if not texts or blank:
        raise TextInputError("no texts given" if not texts else
                             f"text {blank[0]} is empty (or not a string): nothing to explain")
    tm = model if isinstance(model, TextModel) else load_text_model(str(model))
    if explainer is None:
        if _is_inputiba(method):
            explainer = TextInputIBA.for_model(tm, preset=preset, **overrides)
        else:
            explainer = text_explainer_for(tm, method, seed=seed, **dict(method_options or {}))
    targets = None
    if target is not None:
        targets = torch.as_tensor(target).long().view(-1)
        if targets.numel() == 1:
            targets = targets.expand(len(texts))
        elif targets.numel() != len(texts):
            raise TargetError(f"Got {targets.numel()} targets for {len(texts)} texts")
    inputiba = isinstance(explainer, TextInputIBA)
    base = (explainer.config.seed if inputiba else 0) if seed is None else seed
    out: list[TokenAttribution] = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="explain texts", disable=not progress or len(starts) < 2):
        chunk = list(texts[start : start + batch_size])
        ids, mask = tm.tokenizer(chunk)
        tchunk = None if targets is None else targets[start : start + batch_size]
        t0 = time.perf_counter()
        if inputiba:
            seeds = run_base_seeds(base, range(start, start + len(chunk)), explainer.config.ensemble)
            res = explainer.attribute(ids, tchunk, mask, return_details=True, seed=seeds)
            attribution, res_targets, res_probs = res.attribution, res.targets, res.probabilities
        else:
            raw = explainer.attribute(ids, tchunk, attention_mask=mask, return_raw=True)
            attribution, res_targets = raw.map * mask, raw.targets
            with torch.no_grad(), frozen_eval(tm.model):
                res_probs = target_probability(tm.model(ids, attention_mask=mask), res_targets)
        per_text = (time.perf_counter() - t0) / len(chunk)
        pred, pred_p = tm.predict(chunk)
        for i, text in enumerate(chunk):
            n = int(mask[i].sum())
            row_ids = ids[i, :n].tolist()
            scores = attribution[i, :n].tolist()
            n_total, n_unknown, notes = _token_checks(tm, text, row_ids, start + i)
            if hasattr(tm.tokenizer, "words"):
                tokens = tm.tokenizer.words(text)[:n]
            else:
                tokens = tm.tokenizer.tokens(row_ids)
                special = set(getattr(tm.tokenizer.hf, "all_special_tokens", []))
                keep = [j for j, tok in enumerate(tokens) if tok not in special]
                tokens = [tokens[j] for j in keep]
                scores = [scores[j] for j in keep]
            tgt, lab = int(res_targets[i]), int(pred[i])
            out.append(
                TokenAttribution(
                    text=text,
                    tokens=tokens,
                    scores=[float(s) for s in scores],
                    label=_class_name(tm, lab),
                    probability=float(pred_p[i]),
                    target=tgt,
                    target_label=_class_name(tm, tgt),
                    target_probability=float(res_probs[i]),
                    seconds=per_text,
                    n_tokens=n_total,
                    unknown_tokens=n_unknown,
                    warnings=notes,
                )
            )
    if out_dir is not None:
        write_text_results(out_dir, out, tm, explainer,
                           preset=preset if isinstance(preset, str) else None,
                           options=method_options)
    return out


def _token_checks(tm: Any, text: str, row_ids: list[int],
                  index: int) -> tuple[int, int, list[str]]:
    """(tokens before the cut, unknown tokens explained, warnings) of one text; each warning
    is also issued as an :class:`InputIBAWarning`."""
    tok = tm.tokenizer
    special = tok.special_ids() if hasattr(tok, "special_ids") else set()
    words = [t for t in row_ids if t not in special]
    n_total = tok.count(text) if hasattr(tok, "count") else len(row_ids)
    unk = getattr(tok, "unk_id", None)
    n_unknown = sum(t == unk for t in words) if unk is not None else 0
    label = f"text {index} ({text[:40]!r}{'...' if len(text) > 40 else ''})"
    notes = []
    if n_total > len(row_ids):
        notes.append(f"{label}: cut to its first {len(row_ids)} of {n_total} tokens (the "
                     f"model's limit); the rest is neither classified nor explained")
    if words and n_unknown == len(words):
        notes.append(f"{label}: none of its {len(words)} tokens is known to the model "
                     "(all unknown): its prediction and scores say nothing about the text")
    for note in notes:
        _warnings.warn(note, InputIBAWarning, stacklevel=3)
    return n_total, n_unknown, notes


def _is_inputiba(method: str) -> bool:
    return method.lower().replace("-", "_") == "inputiba"


def text_explainer_for(text_model: Any, method: str, seed: int | None = None,
                       **options: Any) -> Any:
    """The baseline ``method`` (``"integrated_gradients"``, ``"lime"``) on a
    :class:`~inputiba.models.text.TextModel`'s embedding layer.

    Args:
        text_model: the packaged model or a checkpoint's :class:`TextModel`.
        method: a name of :data:`~inputiba.methods.text.TEXT_EXPLAINERS`.
        seed: the explainer's seed (LIME's sampling) unless ``options`` give one.
        **options: the explainer's keyword arguments.

    Returns:
        A :class:`~inputiba.methods.text.TextExplainer`.

    Raises:
        ConfigError: unknown method (the message lists the available ones; a ValueError).
    """
    from inputiba.methods.text import TEXT_EXPLAINERS, get_text_explainer

    if _is_inputiba(method):
        raise ConfigError("text_explainer_for builds baselines; use TextInputIBA for 'inputiba'")
    key = {"ig": "integrated_gradients"}.get(method.lower().replace("-", "_"),
                                             method.lower().replace("-", "_"))
    if key not in TEXT_EXPLAINERS:
        raise ConfigError(f"Unknown text attribution method {method!r}. Available: inputiba, "
                         f"{', '.join(TEXT_EXPLAINERS)}")
    if seed is not None and key == "lime":
        options.setdefault("seed", seed)
    return get_text_explainer(key, text_model.model, text_model.embedding_layer, **options)


def _class_name(tm: Any, index: int) -> str:
    names = tm.class_names
    return str(names[index]) if index < len(names) else str(index)


def write_text_results(
    out_dir: str | os.PathLike[str],
    results: Sequence[TokenAttribution],
    text_model: Any,
    explainer: Any,
    *,
    model_name: str | None = None,
    preset: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``results.json`` (the model, method, settings and one record per text) and
    ``explanation.html`` (the tokens coloured by their scores) into ``out_dir``; returns it.

    What ``inputiba explain-text`` writes; ``results`` come from :func:`explain_texts`;
    ``options`` are a baseline's settings as given (InputIBA's come from its config).
    """
    from inputiba.data.io import save_json, save_text
    from inputiba.report.text import html_page

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    inputiba = isinstance(explainer, TextInputIBA)
    if inputiba:
        settings: Any = explainer.config.to_dict()
        layers = {"feature_layer": explainer.layer, "embedding_layer": explainer.embedding_layer}
    else:
        settings = dict(options or {})
        layers = {"embedding_layer": explainer.embedding_layer}
    records = [r.to_dict() for r in results]
    save_json(out / "results.json", {
        "model": model_name or text_model.kind,
        "model_kind": text_model.kind,
        "class_names": list(text_model.class_names),
        "method": "inputiba" if inputiba else explainer.name,
        **layers,
        "preset": preset if inputiba else None,
        "config": settings,
        "test_accuracy": text_model.meta.get("test_accuracy"),
        "results": records,
    })
    save_text(out / "explanation.html", html_page(records))
    return out
