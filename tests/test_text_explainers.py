"""Token attribution baselines (Integrated Gradients on embeddings, LIME) on a tiny text model
whose decision is carried by one planted keyword."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from inputiba.methods.text import TEXT_EXPLAINERS, get_text_explainer

pytest.importorskip("captum")
pytest.importorskip("sklearn")

KEYWORD = 7
PAD = 0


class KeywordModel(nn.Module):
    """Embedding -> masked mean pooling -> linear. Class 1's logit grows with the share of the
    keyword among the real tokens; the other tokens carry small random embeddings."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.embedding = nn.Embedding(20, 8, padding_idx=PAD)
        with torch.no_grad():
            self.embedding.weight.copy_(0.1 * torch.randn(20, 8, generator=g))
            self.embedding.weight[PAD] = 0
            self.embedding.weight[KEYWORD, 0] = 4.0
        self.head = nn.Linear(8, 2)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.weight[1, 0], self.head.weight[0, 0] = 3.0, -3.0
            self.head.bias.zero_()
        self.drop = nn.Dropout(0.5)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        e = self.drop(self.embedding(input_ids))
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        w = attention_mask.unsqueeze(-1).float()
        return self.head((e * w).sum(1) / w.sum(1))


@pytest.fixture()
def batch():
    ids = torch.tensor([[3, 7, 5, 9, 2, 0, 0], [4, 4, 11, 7, 12, 13, 1]])
    mask = (ids != PAD).long()
    return KeywordModel(), ids, mask


@pytest.mark.parametrize("name", ["integrated_gradients", "lime"])
def test_keyword_is_found_and_map_convention(batch, name):
    model, ids, mask = batch
    model.train()  # dropout must be switched off by the explainer
    explainer = get_text_explainer(name, model, "embedding", seed=0)
    res = explainer.attribute(ids, target=1, attention_mask=mask, return_raw=True)
    assert res.map.shape == ids.shape and res.map.dtype == torch.float32
    assert torch.isfinite(res.map).all() and res.map.min() >= 0
    assert torch.allclose(res.map.amax(dim=1), torch.ones(2))
    assert (res.map[mask == 0] == 0).all()  # padding gets nothing
    # the keyword carries the decision: it has the top score, positive for class 1
    assert torch.equal(res.map.argmax(dim=1), torch.tensor([1, 3]))
    assert (res.raw[[0, 1], [1, 3]] > 0).all()
    assert torch.equal(explainer.attribute(ids, target=1, attention_mask=mask), res.map)
    assert model.training


def test_integrated_gradients_completeness(batch):
    model, ids, mask = batch
    model.eval()
    raw = get_text_explainer("ig", model, "embedding", n_steps=32).raw_attribute(
        ids, target=1, attention_mask=mask
    )
    with torch.no_grad():
        full = model(ids, attention_mask=mask)[:, 1]
        zero = model.head(torch.zeros(2, 8))[:, 1]
    assert torch.allclose(raw.sum(dim=1), full - zero, atol=1e-3)


def test_lime_is_deterministic_under_its_seed_and_varies_across_seeds(batch):
    model, ids, mask = batch
    a = get_text_explainer("lime", model, "embedding", seed=1, n_samples=60)
    b = get_text_explainer("lime", model, "embedding", seed=2, n_samples=60)
    ra = a.raw_attribute(ids, target=0, attention_mask=mask)
    assert torch.equal(ra, a.raw_attribute(ids, target=0, attention_mask=mask))
    assert not torch.equal(ra, b.raw_attribute(ids, target=0, attention_mask=mask))


def test_errors(batch):
    model, ids, _ = batch
    assert set(TEXT_EXPLAINERS) == {"integrated_gradients", "lime"}
    with pytest.raises(ValueError, match="Available: integrated_gradients, lime"):
        get_text_explainer("shap", model, "embedding")
    with pytest.raises(KeyError, match="embedding"):
        get_text_explainer("lime", model, "embeddings")
    explainer = get_text_explainer("ig", model, "embedding")
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        explainer.attribute(ids[0])
    with pytest.raises(ValueError, match="does not match"):
        explainer.attribute(ids, token_mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="expected"):
        get_text_explainer("ig", model, "head").attribute(ids)


@pytest.mark.parametrize("name", ["integrated_gradients", "lime"])
def test_text_methods_follow_the_one_protocol(batch, name):
    """The registry builds text methods like image ones; each has attribute, explain_func and
    with_model, and explain_func on another model explains that model."""
    import numpy as np

    from inputiba.methods import AttributionMethod, available_explainers, get_explainer

    model, ids, mask = batch
    assert name in available_explainers("text")
    explainer = get_explainer(name, model, "embedding", modality="text", seed=0)
    assert isinstance(explainer, AttributionMethod)
    maps = explainer.explain_func(model, ids.numpy(), np.array([1, 1]), attention_mask=mask)
    assert isinstance(maps, np.ndarray) and maps.shape == ids.shape
    assert np.array_equal(maps.argmax(1), [1, 3])
    flipped = KeywordModel()
    with torch.no_grad():
        flipped.head.weight.neg_()  # the keyword now speaks for class 0
    other = explainer.explain_func(flipped, ids, [0, 0], attention_mask=mask)
    assert np.array_equal(other.argmax(1), [1, 3])
    raw = explainer.with_model(flipped).attribute(ids, 1, attention_mask=mask, return_raw=True)
    assert (raw.raw[[0, 1], [1, 3]] < 0).all()  # for class 1 the keyword now counts against
    assert explainer.model is model
    with pytest.raises(ValueError, match="modality"):
        get_explainer(name, model, "embedding", modality="audio")
