"""``benchmarks/ablation.py``: its variants run what they name (a preset as it is, ``-xK``
ensembles and their reductions from the members' runs), checked on the digits CNN."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from inputiba import InputIBA

pytestmark = pytest.mark.usefixtures("one_thread")
ABLATION = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation.py"


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("ablation", ABLATION)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ablation"] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("ablation", None)


def test_variant_names(ablation):
    v = ablation.parse_variant("paper-s1prior-steps20-x4min")
    assert (v.ensemble, v.reduce, v.members_of) == (4, "min", "paper-s1prior-steps20")
    assert v.overrides == {"gan_epochs": 0, "gan_theta_init": "normalized", "input_steps": 20}
    assert ablation.parse_variant("paper-x3").reduce == ""  # the batched ensemble
    assert ablation.parse_variant("paper-s1prior-steps90-lr0.5-cos").overrides == {
        "gan_epochs": 0, "gan_theta_init": "normalized", "input_steps": 90, "input_lr": 0.5,
        "input_lr_schedule": "cosine"}
    assert ablation.parse_variant("paper-warm").overrides == {"input_lr_schedule": "warmup"}
    # a preset's name runs the preset as it is: its own ensemble, not K = 1
    assert ablation.parse_variant("consensus").ensemble is None
    with pytest.raises(Exception, match="unknown variant"):
        ablation.parse_variant("paper-x3max")
    # -share: the library's batched ensemble with its reduction, stage 1 shared
    v = ablation.parse_variant("paper-s1prior-steps11-share-x10min")
    assert (v.ensemble, v.reduce) == (10, "")
    assert v.overrides == {"gan_epochs": 0, "gan_theta_init": "normalized", "input_steps": 11,
                           "ensemble_shared_stage1": True, "ensemble_reduce": "min"}
    for bad in ("paper-share", "paper-share-x3gmean"):
        with pytest.raises(Exception, match="-share"):
            ablation.parse_variant(bad)


def test_maps_are_those_of_the_named_settings(ablation, monkeypatch, tmp_path, digits,
                                              digits_model, digits_stats):
    """A preset variant equals the preset's own maps (ensemble and reduction included), and
    ``-x2min`` the minimum of its members' maps at the ensemble's seeds."""
    monkeypatch.setattr(ablation, "LAYER", "features.4")
    rm = SimpleNamespace(model=digits_model)
    photo = ablation.Photo("d0", digits[2][:1], 3, 0.9, None)
    few = {"input_steps": 4, "feat_steps": 2}
    from inputiba.core import config

    monkeypatch.setitem(config.PRESETS, "tinymin", {**config.PRESETS["consensus"], **few,
                                                    "ensemble": 2})
    monkeypatch.setitem(config.PRESETS, "tiny", {"gan_epochs": 0, **few})
    got = ablation.compute(rm, digits_stats, "tinymin", photo, 2, tmp_path)
    ex = InputIBA(digits_model, "features.4", digits_stats, preset="tinymin")
    want = ex.attribute(photo.x.expand(2, -1, -1, -1), 3, seed=[0, 100])
    for j in range(2):
        assert np.allclose(got[j]["map"], want[j, 0].numpy(), atol=1e-5)

    ablation.VARIANTS["tiny-x2min"] = ablation.Variant("paper", {"gan_epochs": 0, **few},
                                                      ensemble=2, reduce="min",
                                                      members_of="tiny")
    reduced = ablation.compute(rm, digits_stats, "tiny-x2min", photo, 2, tmp_path)
    single = InputIBA(digits_model, "features.4", digits_stats, preset="tiny")
    for j in range(2):
        members = single.attribute(photo.x.expand(2, -1, -1, -1), 3,
                                   seed=[100 * j, 100 * j + 1])
        assert np.allclose(reduced[j]["map"], members.amin(0)[0].numpy(), atol=1e-5)
        assert not np.allclose(reduced[j]["map"], members.mean(0)[0].numpy(), atol=1e-3)


def test_screened_reductions_by_hand(ablation):
    maps = np.array([[[0.2, 1.0]], [[0.6, 0.0]], [[0.4, 0.5]]], dtype=np.float32)  # K=3, 1x2
    np.testing.assert_allclose(ablation.REDUCTIONS["second"](maps), [[0.4, 0.5]])
    eps = 1e-3  # harmonic mean of map + eps, minus eps
    want = [3 / sum(1 / (v + eps) for v in col) - eps for col in ([0.2, 0.6, 0.4], [1, 0, 0.5])]
    np.testing.assert_allclose(ablation.REDUCTIONS["hmean"](maps), [want], rtol=1e-5)
    v = ablation.parse_variant("paper-s1prior-steps20-x6second")
    assert (v.ensemble, v.reduce, v.members_of) == (6, "second", "paper-s1prior-steps20")


def test_frontier_figure(ablation, tmp_path):
    """``--plot``: one numbered point per distinct (seed corr, deletion difference)."""
    import matplotlib.image as mpimg

    def row(corr, d, seconds):
        return {"seed_corr": corr, "seconds_per_map": seconds,
                "deletion": {"paired_diff": {"mean": d, "ci95": [d - 0.002, d + 0.002]}}}

    summary = {"paper": {"seed_corr": 0.55, "seconds_per_map": 60.0, "deletion": {}},
               "a": row(0.8, 0.001, 20.0), "b": row(0.8, 0.001, 20.0), "c": row(0.9, 0.01, 40.0)}
    path = tmp_path / "f" / "frontier.png"
    key = ablation.plot_frontier(summary, "paper", path)
    assert key == [" 1  paper", " 2  a = b", " 3  c"]  # by correlation; a and b share a point
    img = mpimg.imread(path)
    assert img.shape[:2] == (660, 1210)  # 11 x 6 inches at 110 dpi


def test_maps_figure_shows_each_variant_at_two_seeds(ablation, tmp_path):
    """``--maps``: one row per photo, the photo and two maps per variant, written as an image."""
    from PIL import Image

    rng = np.random.default_rng(0)
    photos = [ablation.Photo(f"p{i}", None, 0, 0.9, None,
                             rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for i in range(2)]
    results = {name: {(p.name, j): {"map": rng.random((16, 16)).astype(np.float32)}
                      for p in photos for j in range(2)} for name in ("paper", "consensus")}
    path = tmp_path / "maps.png"
    ablation.plot_maps(results, photos, path)
    width, height = Image.open(path).size
    assert width > 2 * height  # 2 rows of 5 panels (photo + 2 variants x 2 seeds)
