"""The maps of fixed small models and seeds, against maps saved before the layout redesign.

``tests/data/regression_maps.npz`` was written by ``python tests/test_regression_maps.py
--write`` on the tree before the package was reorganised (issue 13); the refactor must not
change a single map. The models and inputs are built from seeded ``torch.Generator`` draws
(platform independent) and run in float64 on one thread, so rounding differences between CPUs
stay far below the tolerance.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

DATA = Path(__file__).parent / "data" / "regression_maps.npz"

#: Small but complete: every stage runs (stage 1, the WGAN, stage 3).
SETTINGS = dict(
    feat_steps=4, feat_draws=3, gan_epochs=2, gan_dataset_size=32, gan_subset_size=8,
    gan_batch_size=8, gan_critic_iters=2, input_steps=6, input_draws=3,
)


def _fill(module: nn.Module, seed: int, scale: float = 0.3) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64)
                    * (scale if p.dim() > 1 else 0.05))
        for b in module.buffers():
            if b.dtype.is_floating_point:  # BatchNorm running statistics
                b.copy_(torch.rand(b.shape, generator=gen, dtype=torch.float64) + 0.5)
    return module.eval()


def image_model() -> nn.Module:
    """A 3 x 32 x 32 CNN with batch norm (the folded-copy path) and a 16 x 8 x 8 layer ``4``."""
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, stride=2),
        nn.Conv2d(16, 16, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    ).double()
    return _fill(net, 0)


def image_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """(estimation batch (32, 3, 32, 32), explained batch (2, 3, 32, 32))."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(34, 3, 32, 32, generator=gen, dtype=torch.float64)
    return x[:32], x[32:]


def text_model() -> nn.Module:
    from inputiba.models.text import LSTMSentimentClassifier

    net = LSTMSentimentClassifier(30, embed_dim=6, hidden_size=4).double()
    return _fill(net, 2, scale=0.5)


def text_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """(estimation ids (40, 9), explained ids (2, 9) with padding 0 on the right)."""
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 30, (42, 9), generator=gen)
    lengths = torch.randint(3, 10, (42,), generator=gen)
    ids[torch.arange(9)[None, :] >= lengths[:, None]] = 0
    return ids[:40], ids[40:]


def compute() -> dict[str, np.ndarray]:
    """Every regression map, computed with the package as it is installed."""
    from inputiba import IBA, InputIBA
    from inputiba.modalities.text import TextInputIBA

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out: dict[str, np.ndarray] = {}
        model = image_model()
        est, x = image_inputs()
        ex = InputIBA(model, "4", preset="paper", **SETTINGS)
        ex.estimate(torch.split(est, 8), n_samples=None, progress=False)
        res = ex.attribute(x, target=[1, 3], seed=[5, 9], return_details=True)
        out["image_map"] = res.attribution.numpy()
        out["image_feature"] = res.feature_map.numpy()
        out["image_gan"] = res.gan_mask.numpy()
        lam = InputIBA(model, "4", ex.statistics, preset="paper",
                       **{**SETTINGS, "gan_real": "lambda"})
        out["image_map_lambda"] = lam.attribute(x, target=None, seed=2).numpy()
        iba = IBA(model, "4", ex.statistics, steps=5, draws=3)
        out["iba_map"] = iba.attribute(x, target=[0, 2], seed=4).numpy()

        tmodel = text_model()
        est_ids, ids = text_inputs()
        tex = TextInputIBA(tmodel, "lstm1", "embedding", preset="paper", **SETTINGS)
        with pytest.warns(UserWarning) if "pytest" in sys.modules else _nothing():
            tex.estimate([(est_ids, (est_ids != 0).long())], n_samples=None, progress=False)
        tres = tex.attribute(ids, target=[0, 1], seed=[3, 4], return_details=True)
        out["text_map"] = tres.attribution.numpy()
        out["text_feature"] = tres.feature_capacity.numpy()
        out["text_gan"] = tres.gan_mask.numpy()
        return out
    finally:
        torch.set_num_threads(before)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.skipif(not DATA.is_file(), reason="no saved regression maps")
def test_maps_equal_the_maps_saved_before_the_redesign():
    saved = np.load(DATA)
    got = compute()
    assert sorted(saved.files) == sorted(got)
    for key in saved.files:
        assert got[key].shape == saved[key].shape, key
        np.testing.assert_allclose(got[key], saved[key], rtol=0, atol=1e-6, err_msg=key)
    # the maps are not trivial: they vary over the input
    assert saved["image_map"].std() > 1e-3 and saved["text_map"].std() > 1e-3


if __name__ == "__main__":
    if "--write" not in sys.argv:
        raise SystemExit("usage: python tests/test_regression_maps.py --write")
    import warnings

    warnings.simplefilter("ignore")
    DATA.parent.mkdir(exist_ok=True)
    maps = compute()
    np.savez_compressed(DATA, **maps)
    for k, v in maps.items():
        print(f"{k}: shape {v.shape}, mean {v.mean():.6f}, std {v.std():.6f}")
