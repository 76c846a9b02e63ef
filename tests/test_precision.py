"""Network passes in reduced precision (config ``precision``): float32 out, gradients kept,
maps within the seed-to-seed spread of float32's (on the digits CNN trained in conftest)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from inputiba import InputIBA
from inputiba.core.precision import FP16_GRAD_SCALE, network_pass

SMALL = dict(gan_epochs=1, gan_dataset_size=16, gan_subset_size=8, gan_batch_size=16,
             input_steps=8, input_draws=4, feat_draws=4)


def _linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(16, 4)


def test_fp32_is_the_pass_itself_and_low_precision_returns_the_input_dtype():
    lin = _linear()
    assert network_pass(lin, "fp32") is lin
    x = torch.randn(3, 16)
    for precision in ("bf16", "fp16"):
        out = network_pass(lin, precision)(x)
        assert out.dtype == torch.float32
        assert torch.allclose(out, lin(x), atol=0.05)
    with pytest.raises(ValueError, match="precision must be one of"):
        network_pass(lin, "int8")


def test_fp16_passes_scale_small_gradients_past_underflow():
    """An output gradient of 2e-8 vanishes in float16 (smallest subnormal 6e-8); the pass
    scales it by FP16_GRAD_SCALE through the network and back, so the input gets the true one."""
    lin = _linear()
    x = torch.randn(3, 16)

    def grad(fn):
        leaf = x.clone().requires_grad_(True)
        (fn(leaf).float().sum() * 2e-8).backward()
        return leaf.grad

    exact = grad(lin)
    plain = grad(lambda v: _autocast_fp16(lin, v))
    scaled = grad(network_pass(lin, "fp16"))
    assert plain.abs().max() == 0  # what unscaled float16 loses
    assert (scaled - exact).abs().max() < 0.05 * exact.abs().max()
    assert FP16_GRAD_SCALE * 2e-8 > 6e-8


def _autocast_fp16(lin: nn.Module, v: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.float16):
        return lin(v)


def test_bf16_maps_agree_with_fp32_within_the_seed_spread(digits, digits_model, digits_stats):
    x = digits[2][:2]

    def maps(seed: int, **kw) -> torch.Tensor:
        ex = InputIBA(digits_model, "features.4", digits_stats, **{**SMALL, **kw})
        return ex.attribute(x, seed=seed)

    fp32, other_seed, bf16 = maps(0), maps(1), maps(0, precision="bf16")
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    spread = (fp32 - other_seed).abs().mean()
    diff = (fp32 - bf16).abs().mean()
    assert diff < 0.5 * spread, (float(diff), float(spread))
