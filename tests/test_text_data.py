"""Text data: tokenizer, vocabulary, padding, the snippet split, lexicon, GloVe and IMDB readers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inputiba.data.text import (
    PAD,
    UNK,
    Vocabulary,
    movie_snippets,
    pad_sequences,
    read_glove_text,
    read_imdb,
    snippet_split,
    surface_tokens,
    tokenize,
    vader_lexicon,
)


def test_tokenize_splits_clitics_and_punctuation_like_glove():
    assert tokenize("It doesn't work, he's ''great'' -- U.S. co-writer!") == [
        "it", "does", "n't", "work", ",", "he", "'s", "''", "great", "''", "--",
        "u.s", ".", "co-writer", "!",
    ]
    assert tokenize("   ") == []
    assert surface_tokens("It DOESN'T work.") == ["It", "DOES", "N'T", "work", "."]


def test_vocabulary_roundtrip_and_unknown_words(tmp_path):
    vocab = Vocabulary.build([["b", "a", "b"], ["c", "b", "a"], ["d"]], min_count=2)
    assert vocab.itos == [PAD, UNK, "b", "a"]
    assert vocab.encode(["a", "zzz", "b"]) == [3, 1, 2]
    assert vocab.decode([2, 3, 0]) == ["b", "a", PAD]
    assert Vocabulary.build([["x", "y"]], min_count=2, keep={"y"}).itos == [PAD, UNK, "y"]
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert Vocabulary.load(path).itos == vocab.itos
    with pytest.raises(ValueError, match="Duplicate word 'a'"):
        Vocabulary(["a", "a"])
    with pytest.raises(ValueError, match="starts with"):
        Vocabulary.from_list(["a", "b"])


def test_pad_sequences_right_pads_and_truncates():
    ids, lengths = pad_sequences([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert lengths.tolist() == [3, 1]
    ids, lengths = pad_sequences([[5, 6, 7], [8]], pad_id=9, max_len=2)
    assert ids.tolist() == [[5, 6], [8, 9]] and lengths.tolist() == [2, 1]
    with pytest.raises(ValueError, match=r"Sequences \[1\] are empty"):
        pad_sequences([[1], []])


def test_snippet_split_is_fixed_labelled_and_disjoint():
    train, test = snippet_split()
    assert len(train) + len(test) > 10_000
    assert abs(len(test) / (len(train) + len(test)) - 0.2) < 0.01
    assert {y for _, y in train} == {0, 1}
    pos = sum(y for _, y in train) / len(train)
    assert 0.4 < pos < 0.6  # about balanced, as the ratings are
    labelled = [(t, int(r > 0)) for t, r in movie_snippets() if r != 0 and t]
    assert sorted(train + test) == sorted(labelled)  # a partition of the rated snippets
    train2, test2 = snippet_split()
    assert test2[:50] == test[:50] and train2[-50:] == train[-50:]
    other = snippet_split(seed=1)[1]
    assert other[:50] != test[:50]
    # a known snippet (rating -0.6 in the file) is negative
    both = dict(train + test)
    assert both["Effective but too tepid biopic"] == 0


def test_vader_lexicon_has_valences():
    lex = vader_lexicon()
    assert len(lex) > 7000
    assert lex["good"] > 1 and lex["bad"] < -1


def test_read_glove_text(tmp_path):
    path = tmp_path / "glove.6B.3d.txt"
    path.write_text("the 0.1 0.2 0.3\ngood 1 -1 0.5\nbad -1 1 -0.5\n", encoding="utf-8")
    words, vecs = read_glove_text(path)
    assert words == ["the", "good", "bad"]
    np.testing.assert_allclose(vecs[1], [1, -1, 0.5])
    assert vecs.dtype == np.float32
    words, vecs = read_glove_text(path, words={"bad", "absent"})
    assert words == ["bad"] and vecs.shape == (1, 3)
    bad = tmp_path / "broken.txt"
    bad.write_text("a 1 2 3\nb 1 2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken.txt:2: 2 values, expected 3"):
        read_glove_text(bad)


def test_read_imdb(tmp_path):
    root = tmp_path / "aclImdb"
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            (root / split / label).mkdir(parents=True)
    (root / "train" / "pos" / "10_9.txt").write_text("Loved it.<br /><br />Great.", "utf-8")
    (root / "train" / "pos" / "2_8.txt").write_text("Fine film.", "utf-8")
    (root / "train" / "neg" / "0_1.txt").write_text("Awful.", "utf-8")
    data = read_imdb(tmp_path, "train")  # the parent folder works too
    assert data == [("Awful.", 0), ("Fine film.", 1), ("Loved it.  Great.", 1)]
    assert read_imdb(root, "train", limit=1) == [("Awful.", 0), ("Fine film.", 1)]
    assert read_imdb(root, "test") == []
    with pytest.raises(FileNotFoundError, match=r"aclImdb/train/pos/"):
        read_imdb(_only_neg(tmp_path), "train")
    with pytest.raises(ValueError, match="'train' or 'test'"):
        read_imdb(root, "unsup")


def _only_neg(tmp_path):
    base = tmp_path / "partial" / "aclImdb"
    (base / "train" / "neg").mkdir(parents=True)
    return base


def test_packed_lstm_ignores_padding():
    from inputiba.models.text import LSTMSentimentClassifier

    torch.manual_seed(0)
    model = LSTMSentimentClassifier(20, embed_dim=8, hidden_size=6).eval()
    ids = torch.tensor([[3, 4, 5, 0, 0]])
    with torch.no_grad():
        a = model(ids)
        b = model(ids[:, :3])
        c = model(torch.tensor([[3, 4, 5, 7, 7]]), attention_mask=torch.tensor([[1, 1, 1, 0, 0]]))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    with pytest.raises(ValueError, match="right padding"):
        model(ids, attention_mask=torch.tensor([[0, 1, 1, 0, 0]]))


def test_colour_scale_and_terminal_rendering():
    from inputiba.report.text import html_page, score_color, terminal_tokens

    assert score_color(0) == (255, 255, 255) and score_color(1) == (214, 39, 40)
    assert score_color(-3) == score_color(0) and score_color(7) == score_color(1)
    assert score_color(0.25) == (255, 226, 170)  # halfway between white and amber
    assert terminal_tokens(["dull", "film"], [0.9, 0.1], color=False) == "[dull 0.90] film"
    coloured = terminal_tokens(["dull"], [1.0], color=True)
    assert coloured.startswith("\x1b[48;2;214;39;40m") and coloured.endswith("\x1b[0m")
    page = html_page([{"tokens": ["<b>", "ok"], "scores": [1.0, 0.0], "label": "positive",
                       "probability": 0.91}])
    assert "&lt;b&gt;" in page and "rgb(214, 39, 40)" in page and "p = 0.910" in page


def test_text_data_errors_are_inputiba_errors(tmp_path):
    """Missing or malformed text data and bad arguments raise inputiba's own errors, which are
    still the built-in FileNotFoundError / ValueError."""
    from inputiba.data.text import pad_sequences, read_glove_text, read_imdb, snippet_split
    from inputiba.errors import (
        ConfigError,
        DataError,
        DataNotFoundError,
        InputIBAError,
        TextInputError,
    )

    glove = tmp_path / "g.txt"
    glove.write_text("good 0.1 0.2\nbad 0.3\n")
    cases = [
        (lambda: pad_sequences([]), TextInputError, ValueError, "no sequences"),
        (lambda: pad_sequences([[1], []]), TextInputError, ValueError, "empty"),
        (lambda: read_glove_text(glove), DataError, ValueError, "g.txt"),
        (lambda: read_imdb(tmp_path / "aclImdb"), DataNotFoundError, FileNotFoundError,
         "aclImdb"),
        (lambda: read_imdb(tmp_path, split="dev"), ConfigError, ValueError, "split"),
        (lambda: snippet_split(test_fraction=1.5), ConfigError, ValueError, "test_fraction"),
    ]
    for call, kind, builtin, words in cases:
        with pytest.raises(kind, match=words) as info:
            call()
        assert isinstance(info.value, InputIBAError) and isinstance(info.value, builtin)
