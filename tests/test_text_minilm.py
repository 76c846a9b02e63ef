"""The transformer path: all-MiniLM-L6-v2 (packaged, offline) with an untrained linear head."""

from __future__ import annotations

import pytest
import torch

from inputiba.modalities.text import TextInputIBA, estimate_token_statistics
from inputiba.models.text import MiniLMSentimentClassifier, WordPieceTokenizer, minilm_path

TEXTS = ["A gorgeous, witty, seductive movie.", "Dull.", "Not bad at all, honestly."]


@pytest.fixture(scope="module")
def minilm():
    torch.manual_seed(0)
    model = MiniLMSentimentClassifier(num_classes=2, hidden=0).eval()
    return model, WordPieceTokenizer(minilm_path())


def test_padding_never_enters_statistics_or_predictions(minilm):
    model, tok = minilm
    ids, mask = tok(TEXTS)
    assert (mask == 0).any()
    layers = ["encoder.embeddings.word_embeddings", "encoder.encoder.layer.2"]
    with pytest.warns(UserWarning, match="only 3 texts"):
        padded = estimate_token_statistics(model, layers, [(ids, mask)], progress=False)
    # one text at a time: no padding at all
    with pytest.warns(UserWarning, match="only 3 texts"):
        single = estimate_token_statistics(
            model, layers, [tok(t) for t in TEXTS], progress=False
        )
    for name in layers:
        assert padded[name].n == int(mask.sum())
        torch.testing.assert_close(padded[name].mean, single[name].mean, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(padded[name].std, single[name].std, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        batch = model(ids, attention_mask=mask)
        alone = torch.cat([model(*tok(t)) for t in TEXTS])
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-4)


def test_minilm_attribution_respects_the_attention_mask(minilm):
    model, tok = minilm
    ids, mask = tok(TEXTS)
    ex = TextInputIBA(
        model, "encoder.encoder.layer.2", "encoder.embeddings.word_embeddings", tokenizer=tok,
        preset="fast", feat_steps=3, feat_draws=2, gan_epochs=1, gan_dataset_size=32,
        gan_subset_size=16, input_steps=4, input_draws=2,
    )
    with pytest.warns(UserWarning, match="only 3 texts"):
        ex.estimate(TEXTS, progress=False)
    res = ex.attribute(ids, attention_mask=mask, return_details=True)
    scores = res.attribution
    assert scores.shape == ids.shape
    assert torch.all(scores[mask == 0] == 0) and torch.all(scores[mask == 1] > 0)
    assert scores.max() <= 1
    # other ids under the padding change nothing
    noisy = ids.clone()
    noisy[mask == 0] = 2023  # "this"
    again = ex.attribute(noisy, attention_mask=mask)
    torch.testing.assert_close(scores, again, atol=1e-5, rtol=1e-4)
