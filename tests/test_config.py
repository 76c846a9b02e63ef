"""Settings are validated in one place (issue 15): type and range, the valid range named."""

from __future__ import annotations

import math

import pytest

from inputiba import ConfigError, InputIBAConfig, InputIBAError
from inputiba.core.config import PRESETS, SETTING_RULES, resolve_config


@pytest.mark.parametrize("changes, match", [
    ({"input_beta": "abc"}, r"input_beta must be a number >= 0, got 'abc'"),
    ({"input_lr": math.nan}, r"input_lr must be a number > 0, got nan"),
    ({"input_steps": -1}, r"input_steps must be an integer >= 1"),
    ({"input_steps": 0}, r"input_steps must be an integer >= 1"),
    ({"input_beta": -5}, r"input_beta must be a number >= 0"),
    ({"feat_draws": 2.5}, r"feat_draws must be an integer >= 1, got 2.5"),
    ({"gan_real": "bogus"}, r"gan_real must be one of capacity, lambda"),
    ({"max_batch": 0}, r"max_batch must be an integer >= 1 or null"),
    ({"channels_last": "yes"}, r"channels_last must be true or false"),
    ({"seed": -1}, r"seed must be an integer >= 0"),
    ({"active_threshold": 1.0}, r"active_threshold must be a number >= 0 and < 1"),
    ({"ensemble": 0}, r"ensemble must be an integer >= 1, got 0"),
    ({"ensemble": 1.5}, r"ensemble must be an integer >= 1, got 1.5"),
    ({"input_average": -1}, r"input_average must be an integer >= 0"),
    ({"gan_theta_init": "zero"}, r"gan_theta_init must be one of capacity, normalized"),
    ({"gan_subset_size": 500}, r"gan_subset_size \(500\) must be at most gan_dataset_size"),
])
def test_bad_values_are_refused_with_the_valid_range(changes, match):
    with pytest.raises(ConfigError, match=match) as info:
        resolve_config("fast", **changes)
    assert isinstance(info.value, InputIBAError) and isinstance(info.value, ValueError)
    with pytest.raises(ConfigError, match=match):
        InputIBAConfig(**{**InputIBAConfig().to_dict(), **changes})


def test_unknown_names_suggest_the_closest_and_stay_type_errors():
    with pytest.raises(TypeError, match="did you mean 'input_steps'"):
        resolve_config("fast", input_stepz=3)


def test_whole_numbers_become_ints_and_ints_floats():
    cfg = resolve_config("fast", input_steps=20.0, input_beta=3, max_batch=None)
    assert cfg.input_steps == 20 and isinstance(cfg.input_steps, int)
    assert cfg.input_beta == 3.0 and isinstance(cfg.input_beta, float)
    assert cfg.max_batch is None


def test_every_setting_has_a_rule_and_every_preset_is_valid():
    from dataclasses import fields

    assert {f.name for f in fields(InputIBAConfig)} == set(SETTING_RULES)
    for name in PRESETS:
        resolve_config(name)


def test_gan_critic_widths_capped_or_original():
    """``gan_critic``: the capped image critic (default) or the 2021 code's widths 2C, 4C, C."""
    from inputiba.core.gan import ImageCritic
    from inputiba.modalities.image import CRITIC_WIDTHS

    assert resolve_config("paper").gan_critic == "capped"
    assert resolve_config("paper", gan_critic="original").gan.critic == "original"
    with pytest.raises(ValueError, match="gan_critic must be one of capped, original"):
        resolve_config("paper", gan_critic="wide")
    widths = {}
    for mode, caps in CRITIC_WIDTHS.items():
        critic = ImageCritic(1, 160, (8, 8), max_channels=caps)
        widths[mode] = [m.out_channels for m in critic.convs if hasattr(m, "out_channels")]
    assert widths["original"] == [320, 640, 160]
    assert widths["capped"] == [256, 512, 128]
    small = ImageCritic(1, 64, (8, 8), max_channels=CRITIC_WIDTHS["capped"])
    assert [m.out_channels for m in small.convs if hasattr(m, "out_channels")] == [128, 256, 64]


def test_fast_nogan_is_fast_without_the_gan_stage():
    fast, lean = resolve_config("fast"), resolve_config("fast-nogan")
    assert lean.gan_epochs == 0
    diff = {k for k, v in lean.to_dict().items() if fast.to_dict()[k] != v}
    assert diff == {"gan_epochs"}
    assert resolve_config("paper").gan_epochs == 20  # the original settings stay as they are
