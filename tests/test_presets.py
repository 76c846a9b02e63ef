"""The named presets: what they set, and the ``stable`` preset's maps on the digits CNN."""

from __future__ import annotations

import torch

from inputiba import InputIBA
from inputiba.core.config import PRESETS, InputIBAConfig, resolve_config
from inputiba.core.functional import normalized_logits


def test_paper_is_exactly_the_original_settings():
    assert PRESETS["paper"] == {}
    assert resolve_config("paper") == InputIBAConfig()
    cfg = resolve_config("paper")
    assert (cfg.gan_epochs, cfg.gan_lr_theta, cfg.gan_critic_iters, cfg.gan_theta_init,
            cfg.input_steps, cfg.input_average, cfg.ensemble) == (20, 0.003, 5, "capacity", 60, 0, 1)


def test_stable_is_paper_without_the_gan_with_a_normalised_prior_and_an_ensemble():
    paper, stable = resolve_config("paper"), resolve_config("stable")
    assert stable.gan_epochs == 0 and stable.gan_theta_init == "normalized"
    assert (stable.input_steps, stable.ensemble) == (30, 3)
    changed = {k for k, v in stable.to_dict().items() if paper.to_dict()[k] != v}
    assert changed == {"gan_epochs", "gan_theta_init", "input_steps", "ensemble"}


def _stable(model, stats, **over):
    # the preset, with fewer stage-3 steps to keep the test short
    return InputIBA(model, "features.4", stats, preset="stable", input_steps=8, **over)


def test_stable_prior_is_the_normalised_stage1_map(digits, digits_model, digits_stats):
    x = digits[2][:2]
    res = _stable(digits_model, digits_stats, ensemble=1).attribute(x, return_details=True)
    want = torch.sigmoid(normalized_logits(res.feature_map))
    assert torch.allclose(res.gan_mask, want, atol=1e-5)
    # spans the clamp [0.05, 0.95], unlike the original initial mask (about 0.5 everywhere)
    assert res.gan_mask.amax() > 0.9 and res.gan_mask.amin() < 0.1


def test_stable_map_is_the_mean_of_three_seeds(digits, digits_model, digits_stats):
    x = digits[2][:2]
    ex, single = _stable(digits_model, digits_stats), _stable(digits_model, digits_stats,
                                                             ensemble=1)
    maps = ex.attribute(x, target=[3, 5], seed=11)
    assert maps.shape == (2, 1, 32, 32)
    for i, t in enumerate([3, 5]):
        members = single.attribute(x[[i] * 3], target=t, seed=[11 + 3 * i + k for k in range(3)])
        assert torch.allclose(maps[i], members.mean(0), atol=1e-4)
    # a batch neighbour does not change a map
    alone = ex.attribute(x[[1]], target=[5], seed=[11 + 3])
    assert torch.allclose(alone[0], maps[1], atol=1e-4)


def test_stable_maps_agree_across_seeds_more_than_single_maps(digits, digits_model,
                                                              digits_stats):
    """Averaging three seeds raises seed-to-seed agreement (Pearson over pixels)."""
    x, t = digits[2][:4], digits[3][:4]

    def corr(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.flatten(1) - a.flatten(1).mean(1, keepdim=True), b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
        return float(((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean())

    ens, single = _stable(digits_model, digits_stats), _stable(digits_model, digits_stats,
                                                              ensemble=1)
    c_single = corr(single.attribute(x, t, seed=0), single.attribute(x, t, seed=100))
    c_ens = corr(ens.attribute(x, t, seed=0), ens.attribute(x, t, seed=1000))
    assert c_ens > c_single


def test_consensus_is_the_minimum_of_eleven_short_runs_on_one_stage1():
    paper, consensus = resolve_config("paper"), resolve_config("consensus")
    changed = {k: v for k, v in consensus.to_dict().items() if paper.to_dict()[k] != v}
    assert changed == {"gan_epochs": 0, "gan_theta_init": "normalized", "input_steps": 11,
                       "ensemble": 11, "ensemble_reduce": "min", "ensemble_shared_stage1": True}


def test_images_default_to_consensus_and_text_to_fast():
    from inputiba.core.config import DEFAULT_PRESET, DEFAULT_TEXT_PRESET
    from inputiba.modalities.text import text_config

    assert DEFAULT_PRESET == "consensus" and resolve_config(None) == resolve_config("consensus")
    assert DEFAULT_TEXT_PRESET == "fast"
    assert text_config(None) == text_config("fast") != text_config("consensus")


def test_ensemble_reductions_are_those_of_the_single_seed_maps(digits, digits_model,
                                                               digits_stats):
    """``ensemble_reduce`` min / median: the pixel-wise minimum / median of the members'
    single-seed maps; a batch neighbour does not change a map; min <= median <= max."""
    x = digits[2][:2]
    single = _stable(digits_model, digits_stats, ensemble=1)
    members = [single.attribute(x[[i] * 4], target=t, seed=[5 + 4 * i + k for k in range(4)])
               for i, t in enumerate([3, 5])]
    for how, want in (("min", [m.amin(0) for m in members]),
                      ("median", [m.sort(0).values[1:3].mean(0) for m in members])):
        ex = _stable(digits_model, digits_stats, ensemble=4, ensemble_reduce=how)
        maps = ex.attribute(x, target=[3, 5], seed=5)
        for i in range(2):
            assert torch.allclose(maps[i], want[i], atol=1e-4)
            assert not torch.allclose(maps[i], members[i].mean(0), atol=1e-3)
        alone = ex.attribute(x[[1]], target=[5], seed=[5 + 4])
        assert torch.allclose(alone[0], maps[1], atol=1e-4)
        res = ex.attribute(x, target=[3, 5], seed=5, return_details=True)
        assert torch.allclose(res.attribution, maps, atol=1e-5)


def test_ensemble_reduce_is_checked():
    import pytest

    from inputiba.errors import ConfigError

    with pytest.raises(ConfigError, match="ensemble_reduce must be one of mean, median, min"):
        resolve_config("paper", ensemble_reduce="max")


def test_every_image_entry_point_defaults_to_default_preset():
    """One place for the default preset: the workflows, the run configuration, the explainer
    behind get_explainer("inputiba") and the command line all read DEFAULT_PRESET."""
    import inspect

    from inputiba.cli import build_parser
    from inputiba.core.config import DEFAULT_PRESET
    from inputiba.methods.image import InputIBAExplainer
    from inputiba.workflows.compare import CompareSettings
    from inputiba.workflows.dataset import explain_dataset
    from inputiba.workflows.explain import explain_images
    from inputiba.workflows.runconfig import RunConfig

    for fn in (explain_images, explain_dataset, InputIBAExplainer.__init__):
        assert inspect.signature(fn).parameters["preset"].default == DEFAULT_PRESET, fn
    assert CompareSettings.__dataclass_fields__["preset"].default == DEFAULT_PRESET
    assert RunConfig().preset == RunConfig(task="image").preset == DEFAULT_PRESET
    parser = build_parser()
    for command in ("explain", "explain-dataset", "compare"):
        args = parser.parse_args([command, "x"] if command != "compare" else [command])
        assert str(args.preset) == DEFAULT_PRESET, command


def test_text_entry_points_default_to_default_text_preset():
    """Text has its own default: TextInputIBA, ``inputiba explain-text`` (it ran ``paper``) and
    a text run configuration without a ``preset`` (it got the image default)."""
    from inputiba.cli import build_parser
    from inputiba.core.config import DEFAULT_TEXT_PRESET
    from inputiba.workflows.runconfig import RunConfig, parse_run_config

    args = build_parser().parse_args(["explain-text", "x"])
    assert str(args.preset) == DEFAULT_TEXT_PRESET
    assert parse_run_config({"task": "text"}).preset == DEFAULT_TEXT_PRESET
    assert parse_run_config({}).preset == parse_run_config({"task": "image"}).preset != (
        DEFAULT_TEXT_PRESET)
    assert parse_run_config({"task": "text", "preset": "paper"}).preset == "paper"
    assert RunConfig(task="text").preset == DEFAULT_TEXT_PRESET
