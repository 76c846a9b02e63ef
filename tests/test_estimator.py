import numpy as np
import pytest
import torch
from torch import nn

from inputiba import LayerStatistics, estimate_layer_statistics


def test_chan_update_matches_numpy():
    g = torch.Generator().manual_seed(1)
    data = torch.randn(257, 3, 4, generator=g) * 100 + 1e4  # large offset: naive sums lose precision
    data[:, 0, 0] = 0.0
    stats = LayerStatistics((3, 4))
    for chunk in torch.split(data, [1, 100, 56, 100]):
        stats.update(chunk)
    ref = data.double().numpy()
    assert stats.n == 257
    np.testing.assert_allclose(stats.mean.numpy(), ref.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.std.numpy(), ref.std(0, ddof=1), rtol=1e-4)
    active = stats.active(0.01)
    assert not active[0, 0] and active.sum() == 11


def test_active_threshold_counts_nonzero_fraction():
    x = torch.zeros(100, 2)
    x[:1, 0] = 1.0  # non-zero in 1% of samples: inactive (must exceed the threshold)
    x[:2, 1] = 1.0  # 2%: active
    stats = LayerStatistics((2,))
    stats.update(x)
    assert stats.active(0.01).tolist() == [False, True]


def test_save_load_roundtrip(tmp_path):
    stats = LayerStatistics((5,))
    stats.update(torch.randn(20, 5))
    path = tmp_path / "s.pt"
    stats.save(path, model="m", layer="l")
    loaded = LayerStatistics.load(path)
    assert loaded.n == 20 and loaded.meta == {"model": "m", "layer": "l"}
    assert torch.equal(loaded.mean, stats.mean) and torch.equal(loaded.std, stats.std)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="do not match"):
        LayerStatistics((3,)).update(torch.zeros(2, 4))


def _model():
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 3))


def test_estimate_accepts_tensors_pairs_and_dicts():
    torch.manual_seed(0)
    model = _model()
    x = torch.randn(30, 1, 8, 8)
    a = estimate_layer_statistics(model, "1", torch.split(x, 7), progress=False)
    b = estimate_layer_statistics(model, "1", [(xb, 0) for xb in torch.split(x, 7)], progress=False)
    c = estimate_layer_statistics(model, "1", [{"input": xb} for xb in torch.split(x, 7)], progress=False)
    with torch.no_grad():
        ref = model[1](model[0](x))
    for s in (a, b, c):
        assert s.n == 30
        assert torch.allclose(s.mean, ref.mean(0), atol=1e-6)


def test_estimate_stops_at_n_samples_and_warns_when_few():
    model = _model()
    with pytest.warns(UserWarning, match="only 10 samples"):
        s = estimate_layer_statistics(model, "0", torch.split(torch.randn(40, 1, 8, 8), 7),
                                      n_samples=10, progress=False)
    assert s.n == 10


def test_estimate_with_no_samples_is_an_error():
    with pytest.raises(ValueError, match="No samples"):
        estimate_layer_statistics(_model(), "0", [], progress=False)


def test_estimate_restores_training_mode():
    model = _model().train()
    estimate_layer_statistics(model, "0", [torch.randn(200, 1, 8, 8)], progress=False)
    assert model.training
