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


def test_compiled_network_is_reused_until_the_weights_change():
    """compile=True keeps the folded copy (and its compiled passes) across calls, but never
    past a change of the model's weights: in place, or by rebinding ``.data``."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3)).eval()
    ex = InputIBA(model, "3", compile=True)
    probe = torch.randn(1, 1, 8, 8)
    net, split = ex._network(probe)
    assert net is not model  # the batch norm was folded into a private copy
    assert ex._network(probe) == (net, split)
    with torch.no_grad():
        model[0].weight.mul_(2.0)
        net2, split2 = ex._network(probe)
        assert net2 is not net and split2 is not split
        assert torch.allclose(net2(probe), model(probe), atol=1e-5)
        model[0].weight.data = model[0].weight.data / 2.0
        net3, _ = ex._network(probe)
        assert net3 is not net2
        assert torch.allclose(net3(probe), model(probe), atol=1e-5)
        assert ex._network(torch.randn(1, 1, 16, 16))[0] is not net3  # another input size


@pytest.mark.slow  # torch.compile's first compilations: about a minute on 2 CPU cores
def test_compiled_maps_equal_eager_maps(digits, digits_model, digits_stats):
    x = digits[2][:1]
    kw = {**SMALL, "max_batch": None}  # one chunk size per pass: three small compilations
    eager = InputIBA(digits_model, "features.4", digits_stats, **kw).attribute(x, seed=0)
    ex = InputIBA(digits_model, "features.4", digits_stats, compile=True, **kw)
    first, again = ex.attribute(x, seed=0), ex.attribute(x, seed=0)
    assert torch.allclose(first, eager, atol=1e-4)
    assert torch.equal(first, again)


def test_text_explainers_say_that_precision_and_compile_do_not_apply():
    from inputiba.modalities.text import TextInputIBA

    model = nn.Module()
    model.embedding, model.feature = nn.Embedding(10, 4), nn.Linear(4, 4)
    with pytest.warns(UserWarning, match="image models only"):
        TextInputIBA(model, "feature", "embedding", precision="bf16")
    with pytest.warns(UserWarning, match="image models only"):
        TextInputIBA(model, "feature", "embedding", compile=True)
