"""InputIBA on a GloVe-50d LSTM trained here on the Rotten Tomatoes snippets (reduced run)."""

from __future__ import annotations

import random

import pytest
import torch

from inputiba.core.functional import classification_loss
from inputiba.core.layers import frozen_eval, replace_output
from inputiba.core.statistics import LayerStatistics
from inputiba.data.text import snippet_split, vader_lexicon
from inputiba.modalities.text import (
    TextInputIBA,
    estimate_token_statistics,
    layer_gradient,
    text_config,
)
from inputiba.models.text import LSTMSentimentClassifier, build_from_checkpoint
from inputiba.models.text_training import train_lstm

# small but real: every stage runs, with fewer steps, draws and GAN epochs than "fast"
REDUCED = dict(
    feat_steps=6, feat_draws=4, gan_epochs=2, gan_dataset_size=64, gan_subset_size=16,
    input_steps=20, input_draws=4,
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lstm():
    """A GloVe-50d BiLSTM trained 2 epochs on the training snippets (about 74% test accuracy)."""
    torch.manual_seed(0)
    state, acc = train_lstm(epochs=2, hidden_size=32, top_glove=0, progress=False)
    return build_from_checkpoint(state), acc


@pytest.fixture(scope="module")
def splits():
    return snippet_split()


@pytest.fixture(scope="module")
def explainer(lstm, splits):
    tm, _ = lstm
    ex = TextInputIBA(tm, preset="fast", **REDUCED)
    ex.estimate([t for t, _ in splits[0]], n_samples=500, progress=False)
    return ex


def test_reduced_training_run_reaches_accuracy(lstm):
    # the full command (python -m inputiba.models.text_training lstm) prints its own, higher figure
    _, acc = lstm
    assert acc >= 0.70, f"reduced LSTM run reached only {acc:.3f} test accuracy"


def test_token_statistics_match_a_hand_computation_on_a_padded_batch():
    torch.manual_seed(0)
    model = LSTMSentimentClassifier(7, embed_dim=3, hidden_size=2).eval()
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0], [3, 0, 0, 0]])
    mask = (ids != 0).long()
    with pytest.warns(UserWarning, match="only 3 texts"):
        stats = estimate_token_statistics(
            model, ["embedding", "lstm1"], [(ids, mask)], pad_id=0, progress=False
        )
    emb = model.embedding.weight.detach().double()
    real = emb[[1, 2, 3, 4, 5, 6, 3]]  # the 7 real tokens, padding excluded
    mean = real.mean(0)
    std = ((real - mean) ** 2).sum(0).div(len(real) - 1).sqrt()
    e = stats["embedding"]
    assert e.n == 7
    torch.testing.assert_close(e.mean, mean.float())
    torch.testing.assert_close(e.std, std.float())
    # counting padding (mistake 3 of the original) would give a different mean
    with_pad = emb[ids.flatten()].mean(0)
    assert not torch.allclose(with_pad.float(), e.mean, atol=1e-3)
    # the LSTM layer: its per-token outputs at the real positions, by hand
    with torch.no_grad():
        lengths = mask.sum(1)
        h1, _ = model.lstm1(model.embedding(ids), lengths)
    feats = h1[mask.bool()].double()
    torch.testing.assert_close(stats["lstm1"].mean, feats.mean(0).float())
    torch.testing.assert_close(stats["lstm1"].std, feats.std(0).float())
    # the same through LayerStatistics.update directly
    ref = LayerStatistics((4,))
    ref.update(feats)
    torch.testing.assert_close(ref.mean, stats["lstm1"].mean)


def _alpha_gradient(model, layer, ids, mask, target, r_stats):
    """d classification loss / d alpha of a bottleneck Z = lamb R + (1 - lamb) eps at ``layer``."""
    mean, std = r_stats
    module = dict(model.named_modules())[layer]
    holder = {}

    def bottleneck(r):
        alpha = torch.full_like(r, 5.0, requires_grad=True)
        holder["alpha"] = alpha
        lamb = torch.sigmoid(alpha)
        eps = torch.randn(r.shape, generator=torch.Generator().manual_seed(0)) * std + mean
        return lamb * r + (1 - lamb) * eps

    with frozen_eval(model), replace_output(module, bottleneck):
        loss = classification_loss(model(ids, attention_mask=mask), target).sum()
        if not loss.requires_grad:
            return torch.zeros_like(holder["alpha"])
        (g,) = torch.autograd.grad(loss, holder["alpha"], allow_unused=True)
    return torch.zeros_like(holder["alpha"]) if g is None else g


def test_bottleneck_layer_has_gradient_where_the_original_had_none(lstm, explainer, splits):
    tm, _ = lstm
    texts = [t for t, _ in splits[1][:4]]
    ids, mask = tm.tokenizer(texts)
    target = tm.model(ids, attention_mask=mask).argmax(1)
    s1 = explainer.statistics["lstm1"]
    g_default = _alpha_gradient(tm.model, "lstm1", ids, mask, target, (s1.mean, s1.std))
    assert tm.feature_layer == "lstm1"
    assert g_default[mask.bool()].abs().sum() > 0
    # the original's choice: per-token outputs of the last LSTM, classifier reads h_n
    with pytest.warns(UserWarning, match="only 4 texts"):
        s2 = estimate_token_statistics(tm.model, ["lstm2"], [(ids, mask)], progress=False)
    s2 = s2["lstm2"]
    g_orig = _alpha_gradient(tm.model, "lstm2", ids, mask, target, (s2.mean, s2.std))
    assert torch.count_nonzero(g_orig) == 0
    assert torch.count_nonzero(layer_gradient(tm.model, "lstm2", ids, target, mask)) == 0
    with pytest.raises(ValueError, match="exactly zero gradient at layer 'lstm2'"):
        bad = TextInputIBA(tm, layer="lstm2", **REDUCED)
        bad.statistics = {"lstm2": s2, "embedding": explainer.statistics["embedding"]}
        bad.attribute(ids, attention_mask=mask)


def test_attribute_contract(lstm, explainer, splits):
    tm, _ = lstm
    texts = ["A gorgeous, witty, seductive movie.", "Dull.", splits[1][0][0]]
    ids, mask = tm.tokenizer(texts)
    res = explainer.attribute(ids, attention_mask=mask, return_details=True)
    scores = res.attribution
    assert scores.shape == ids.shape
    assert scores.min() >= 0 and scores.max() <= 1
    pad = mask == 0
    assert pad.any()
    assert torch.all(scores[pad] == 0)
    assert torch.all(res.feature_capacity[pad] == 0) and torch.all(res.gan_mask[pad] == 0)
    assert torch.all(scores[~pad] > 0)
    assert res.targets.tolist() == tm.model(ids, attention_mask=mask).argmax(1).tolist()
    assert set(res.seconds) == {"feature", "gan", "input"}
    # the mask defaults to ids != pad; explicit targets per sample
    again = explainer.attribute(ids, target=[1, 0, 1])
    assert again.shape == ids.shape and torch.all(again[pad] == 0)
    with pytest.raises(ValueError, match="add a batch dimension"):
        explainer.attribute(ids[0])
    with pytest.raises(ValueError, match="does not match token_ids"):
        explainer.attribute(ids, attention_mask=mask[:, :2])
    with pytest.raises(ValueError, match=r"Rows \[0\] of the batch have no tokens"):
        explainer.attribute(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range"):
        explainer.attribute(ids, target=2)


def test_one_logit_head_gives_the_two_logit_scores(lstm, explainer):
    # a softmax head (z0, z1) and the one-logit head z1 - z0 give the same probabilities,
    # so InputIBA must give the same scores for either
    tm, _ = lstm
    two = tm.model
    one = LSTMSentimentClassifier(**{**two.config, "num_classes": 1}).eval()
    state = two.state_dict()
    state["fc.weight"] = state["fc.weight"][1:] - state["fc.weight"][:1]
    state["fc.bias"] = state["fc.bias"][1:] - state["fc.bias"][:1]
    one.load_state_dict(state)
    ids, mask = tm.tokenizer(["An utterly charming film.", "A tedious mess."])
    ex1 = TextInputIBA(one, "lstm1", "embedding", explainer.statistics, preset="fast", **REDUCED)
    a = explainer.attribute(ids, attention_mask=mask, return_details=True)
    b = ex1.attribute(ids, attention_mask=mask, return_details=True)
    assert a.targets.tolist() == b.targets.tolist()
    torch.testing.assert_close(a.probabilities, b.probabilities)
    torch.testing.assert_close(a.attribution, b.attribution, atol=2e-3, rtol=0)


def test_top_tokens_hit_the_vader_lexicon_more_often_than_random_tokens(lstm, explainer, splits):
    tm, _ = lstm
    lex = vader_lexicon()
    texts = [t for t, _ in splits[1][:300]]
    _, p = tm.predict(texts)
    confident = [t for t, q in zip(texts, p, strict=True) if q >= 0.9 and len(t.split()) >= 6]
    confident = confident[:20]
    assert len(confident) >= 12
    ids, mask = tm.tokenizer(confident)
    scores = explainer.attribute(ids, attention_mask=mask)
    rng = random.Random(0)
    hits, random_hits = 0, 0.0
    for i, text in enumerate(confident):
        n = int(mask[i].sum())
        words = tm.tokenizer.words(text)[:n]
        top = scores[i, :n].argsort(descending=True)[:3].tolist()
        hits += any(words[j].lower() in lex for j in top)
        random_hits += sum(
            any(w.lower() in lex for w in rng.sample(words, 3)) for _ in range(50)
        ) / 50
    rate, base = hits / len(confident), random_hits / len(confident)
    assert rate >= base + 0.2, f"top-3 hit rate {rate:.2f} vs random {base:.2f}"


def test_text_config_uses_text_defaults():
    cfg = text_config("paper")
    assert (cfg.feat_beta, cfg.input_steps, cfg.input_lr, cfg.input_sigma) == (15.0, 30, 0.5, 0)
    assert cfg.gan_lr_theta == 0.03
    assert text_config("paper", input_beta=30).input_beta == 30
    with pytest.raises(TypeError, match="did you mean 'input_beta'"):
        text_config("paper", input_bta=3)


def test_padding_content_does_not_change_the_scores(lstm, explainer):
    # whatever ids sit under attention_mask == 0, every stage ignores them
    tm, _ = lstm
    ids, mask = tm.tokenizer(["An utterly charming film.", "Tedious."])
    noisy = ids.clone()
    noisy[mask == 0] = torch.randint(2, 500, (int((mask == 0).sum()),))
    a = explainer.attribute(ids, attention_mask=mask)
    b = explainer.attribute(noisy, attention_mask=mask)
    torch.testing.assert_close(a, b)


def test_explain_text_cli(lstm, tmp_path):
    import json

    from inputiba.cli import main

    tm, _ = lstm
    ckpt = tmp_path / "small-lstm.pt"
    torch.save(lstm_state(tm), ckpt)
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("A tedious, joyless mess.\n\nSharp & funny <3\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["explain-text", "A gorgeous, witty film.", "--file", str(reviews), "--model",
            str(ckpt), "--out", str(out), "--preset", "fast", "--quiet", "--threads", "1"]
    for k, v in REDUCED.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 0
    data = json.loads((out / "results.json").read_text())
    res = data["results"]
    assert [r["text"] for r in res] == [
        "A gorgeous, witty film.", "A tedious, joyless mess.", "Sharp & funny <3"
    ]
    assert res[0]["tokens"] == ["A", "gorgeous", ",", "witty", "film", "."]
    for r in res:
        assert len(r["scores"]) == len(r["tokens"])
        assert all(0 <= s <= 1 for s in r["scores"])
        assert r["label"] in ("negative", "positive") and 0.5 <= r["probability"] <= 1
        assert r["target_label"] == r["label"]
    page = (out / "explanation.html").read_text()
    assert "linear-gradient" in page and "&amp;" in page and "&lt;" in page
    assert "http" not in page.replace("http-equiv", "")  # offline: no external resources
    assert main(["explain-text", "--model", str(ckpt), "--out", str(out)]) == 1


def lstm_state(tm):
    """A checkpoint dict of a TextModel's LSTM, as the trainer writes it."""
    return {
        "kind": "lstm",
        "config": tm.model.config,
        "state_dict": tm.model.state_dict(),
        "vocab": tm.tokenizer.vocab.to_list(),
        "test_accuracy": tm.meta.get("test_accuracy"),
    }


def test_chunked_forward_passes_give_the_same_scores(lstm, explainer):
    """max_batch bounds the rows per forward pass; each chunk gets its own token ids (text used
    to refuse max_batch because the stages could not align ids with a chunk)."""
    tm, _ = lstm
    ids, mask = tm.tokenizer(["A gorgeous, witty, seductive movie.", "Dull and far too long."])
    whole = explainer.attribute(ids, attention_mask=mask, seed=3)
    chunked = TextInputIBA(tm, preset=explainer.config.replace(max_batch=3),
                           statistics=explainer.statistics)
    torch.testing.assert_close(chunked.attribute(ids, attention_mask=mask, seed=3), whole,
                               rtol=1e-4, atol=1e-4)


def test_text_explainer_rejects_bad_layers():
    model = LSTMSentimentClassifier(10, embed_dim=4, hidden_size=3)
    with pytest.raises(KeyError, match="Close matches: lstm1"):
        TextInputIBA(model, "lstm_1", "embedding")
    ex = TextInputIBA(model, "lstm1", "embedding")
    with pytest.raises(RuntimeError, match="No token statistics"):
        ex.attribute(torch.tensor([[2, 3]]))


def test_explain_text_cli_baseline_method(lstm, tmp_path, capsys):
    """--method integrated_gradients: the baseline's normalised map replaces InputIBA's."""
    import json

    from inputiba.cli import main
    from inputiba.methods.text import get_text_explainer

    tm, _ = lstm
    ckpt = tmp_path / "small-lstm.pt"
    torch.save(lstm_state(tm), ckpt)
    texts = ["A gorgeous, witty and moving film.", "Dull."]  # different lengths: padding
    out = tmp_path / "ig"
    assert main(["explain-text", *texts, "--model", str(ckpt), "--method",
                 "integrated_gradients", "--set", "n_steps=16", "--out", str(out), "--quiet",
                 "--threads", "1"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["method"] == "integrated_gradients" and data["config"] == {"n_steps": 16}
    ids, mask = tm.tokenizer(texts)
    assert int(mask[1].sum()) < ids.shape[1]
    expected = get_text_explainer("integrated_gradients", tm.model, "embedding", n_steps=16)
    maps = expected.attribute(ids, None, attention_mask=mask)
    for i, r in enumerate(data["results"]):
        n = int(mask[i].sum())
        assert len(r["scores"]) == len(r["tokens"]) == n
        assert all(0 <= s <= 1 for s in r["scores"]) and max(r["scores"]) == pytest.approx(1)
        assert r["scores"] == pytest.approx(maps[i, :n].tolist(), abs=1e-5)
        assert 0.5 <= r["target_probability"] <= 1 and r["target_label"] == r["label"]
    assert (out / "explanation.html").is_file() and (out / "config.yaml").is_file()
    capsys.readouterr()
    assert main(["explain-text", "x", "--model", str(ckpt), "--method", "shap", "--out",
                 str(out), "--quiet"]) == 1
    err = capsys.readouterr().err  # inputiba's own error: one line, no type, no traceback hint
    assert "Unknown text attribution method 'shap'" in err and "ValueError" not in err


def test_explain_texts_writes_what_the_cli_writes(lstm, tmp_path):
    """One Python call (explain_texts with out_dir) gives the CLI's results.json."""
    import json

    from inputiba.cli import main
    from inputiba.workflows.text import explain_texts

    tm, _ = lstm
    ckpt = tmp_path / "small-lstm.pt"
    torch.save(lstm_state(tm), ckpt)
    texts = ["A gorgeous, witty and moving film.", "Dull."]
    assert main(["explain-text", *texts, "--model", str(ckpt), "--method",
                 "integrated_gradients", "--set", "n_steps=16", "--out", str(tmp_path / "cli"),
                 "--quiet", "--threads", "1"]) == 0
    explain_texts(texts, tm, method="integrated_gradients", method_options={"n_steps": 16},
                  out_dir=tmp_path / "py")
    cli = json.loads((tmp_path / "cli" / "results.json").read_text())
    py = json.loads((tmp_path / "py" / "results.json").read_text())
    assert py["config"] == cli["config"] == {"n_steps": 16} and py["method"] == cli["method"]
    for a, b in zip(py["results"], cli["results"], strict=True):
        assert a["tokens"] == b["tokens"] and a["target"] == b["target"]
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)
    assert (tmp_path / "py" / "explanation.html").stat().st_size > 200


def test_explain_text_cli_config_writes_and_reproduces(lstm, tmp_path):
    """--config lstm_text: the shipped configuration runs; its config.yaml reproduces the run."""
    import json

    import yaml

    from inputiba.cli import main

    tm, _ = lstm
    ckpt = tmp_path / "small-lstm.pt"
    torch.save(lstm_state(tm), ckpt)
    first, again = tmp_path / "first", tmp_path / "again"
    args = ["explain-text", "A gorgeous, witty film.", "Dull and lifeless.", "--config",
            "lstm_text", "--model", str(ckpt), "--out", str(first), "--quiet", "--threads", "1"]
    for k, v in {**REDUCED, "input_steps": 2}.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 0
    cfg = yaml.safe_load((first / "config.yaml").read_text())
    assert cfg["task"] == "text" and cfg["preset"] == "paper" and cfg["seed"] == 0
    assert cfg["model"] == {"name": str(ckpt), "weights": None, "layer": "lstm1",
                            "preprocessing": None}
    assert cfg["estimation"]["n_samples"] == 500 and cfg["output"]["dir"] == str(first)
    assert cfg["inputiba"]["input_steps"] == 2 and cfg["inputiba"]["feat_steps"] == 6
    data = json.loads((first / "results.json").read_text())
    assert data["method"] == "inputiba" and data["config"]["input_steps"] == 2
    assert main(["explain-text", "A gorgeous, witty film.", "Dull and lifeless.", "--config",
                 str(first / "config.yaml"), "--out", str(again), "--quiet", "--threads",
                 "1"]) == 0
    redo = json.loads((again / "results.json").read_text())
    for a, b in zip(data["results"], redo["results"], strict=True):
        assert a["tokens"] == b["tokens"]
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-6)
    assert data["config"] == redo["config"]
    # an image configuration is refused with a message naming the command to use
    assert main(["explain-text", "x", "--config", "efficientnet_lite0", "--out",
                 str(again), "--quiet"]) == 1


def test_explain_text_cli_ensemble_flag(lstm, tmp_path):
    """explain-text --ensemble 2 is --set ensemble=2: recorded in config.yaml and results.json;
    a text's ensemble does not depend on the batch size (text j's base seed is seed + j*K)."""
    import json

    import yaml

    from inputiba.cli import main

    tm, _ = lstm
    ckpt = tmp_path / "small-lstm.pt"
    torch.save(lstm_state(tm), ckpt)
    texts = ["A gorgeous, witty film.", "Dull and lifeless.", "Sharp and funny."]
    scores = {}
    for label, extra in {"flag": ["--ensemble", "2", "--batch-size", "3"],
                         "set": ["--set", "ensemble=2", "--batch-size", "1"],
                         "one": ["--batch-size", "3"]}.items():
        out = tmp_path / label
        args = ["explain-text", *texts, "--model", str(ckpt), "--out", str(out), "--preset",
                "fast", "--quiet", "--threads", "1", *extra]
        for k, v in REDUCED.items():
            args += ["--set", f"{k}={v}"]
        assert main(args) == 0
        data = json.loads((out / "results.json").read_text())
        cfg = yaml.safe_load((out / "config.yaml").read_text())
        want = 1 if label == "one" else 2
        assert data["config"]["ensemble"] == want and cfg["inputiba"].get("ensemble", 1) == want
        scores[label] = [r["scores"] for r in data["results"]]
    for a, b in zip(scores["flag"], scores["set"], strict=True):
        assert a == pytest.approx(b, abs=1e-6)
    assert any(a != pytest.approx(b, abs=1e-3)
               for a, b in zip(scores["flag"], scores["one"], strict=True))


def test_long_texts_and_unknown_words_are_recorded(lstm, explainer, tmp_path, capsys):
    """A text past the tokenizer's limit is cut with a warning and its full token count in the
    record; a text of unknown words only gets a warning; empty texts and an unwritable output
    folder are one clear error (they used to pass silently, or fail late)."""
    import json

    from inputiba.cli import main
    from inputiba.errors import InputIBAWarning, TextInputError
    from inputiba.workflows.text import explain_texts

    tm, _ = lstm
    long_text = " ".join(["a fine , warm film"] * 80)  # 400 tokens
    with pytest.warns(InputIBAWarning) as caught:
        res = explain_texts([long_text, "zqxj vlorpt blenk", "A gorgeous film."], tm,
                            explainer=explainer)
    messages = [str(w.message) for w in caught]
    assert res[0].n_tokens == 400 and len(res[0].tokens) == tm.tokenizer.max_len == 256
    assert len(res[0].warnings) == 1 and "first 256 of 400 tokens" in res[0].warnings[0]
    assert res[1].unknown_tokens == 3 and "none of its 3 tokens is known" in res[1].warnings[0]
    assert res[2].warnings == [] and res[2].n_tokens == 4 and res[2].unknown_tokens == 0
    assert sorted(messages) == sorted(res[0].warnings + res[1].warnings)
    with pytest.raises(TextInputError, match="text 1 is empty"):
        explain_texts(["fine", "   "], tm, explainer=explainer)

    ckpt = tmp_path / "small-lstm.pt"
    torch.save(lstm_state(tm), ckpt)
    out = tmp_path / "out"
    args = ["explain-text", long_text, "zqxj vlorpt", "--model", str(ckpt), "--out", str(out),
            "--preset", "fast", "--quiet", "--threads", "1", "--estimation-samples", "200"]
    for k, v in REDUCED.items():
        args += ["--set", f"{k}={v}"]
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("inputiba: warning:") == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 2  # one line each
    recs = json.loads((out / "results.json").read_text())["results"]
    assert recs[0]["n_tokens"] == 400 and "first 256 of 400" in recs[0]["warnings"][0]
    assert recs[1]["unknown_tokens"] == 2 and "known" in recs[1]["warnings"][0]
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["explain-text", "fine", "--model", str(ckpt), "--out", str(blocker),
                 "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("inputiba: error: Output folder") and "is a file" in err


def test_explain_texts_ensemble_runs_never_share_a_seed(lstm, explainer):
    """With an ensemble of K, text j's members use seeds ``seed + j*K + k``: before, text j's
    base was ``seed + j``, so member k of text j and member k-1 of text j+1 shared a stream."""
    from inputiba.workflows.text import explain_texts

    tm, _ = lstm
    texts = ["A gorgeous, witty film.", "Dull and lifeless.", "Sharp and funny."]
    old = explainer.config
    explainer.config = old.replace(ensemble=2)
    try:
        got = explain_texts(texts, tm, explainer=explainer, seed=5, batch_size=2)
        for j, text in enumerate(texts):
            ids, mask = tm.tokenizer([text])
            want = explainer.attribute(ids, None, mask, seed=[5 + 2 * j])[0, : int(mask.sum())]
            assert got[j].scores == pytest.approx(want.tolist(), abs=1e-5)
    finally:
        explainer.config = old
