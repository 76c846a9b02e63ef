import math

import pytest
import torch

from inputiba.core.functional import (
    capacity_map,
    classification_loss,
    feature_kl,
    gaussian_kernel_1d,
    gaussian_smooth,
    input_prior_kl,
    normalized_logits,
    reduce_members,
)


def test_feature_kl_hand_computed():
    # r = 3, mean = 1, std = 2 -> r_n = 1; lambda = 0.5 -> mu = 0.5, var = 0.25
    # KL(N(0.5, 0.25) || N(0, 1)) = 0.5 * (0.25 + 0.25 - 1 - log 0.25)
    kl = feature_kl(torch.tensor(3.0), torch.tensor(0.5), torch.tensor(1.0), torch.tensor(2.0))
    expected = 0.5 * (0.25 + 0.25 - 1 - math.log(0.25))
    assert kl.item() == pytest.approx(expected, rel=1e-6)


def test_feature_kl_zero_when_nothing_passes():
    kl = feature_kl(torch.randn(10), torch.zeros(10), torch.zeros(10), torch.ones(10))
    assert torch.allclose(kl, torch.zeros(10), atol=1e-7)


def test_input_prior_kl_hand_computed():
    x, lamb, m, mu, sd = 2.0, 0.6, 0.5, 0.5, 1.5
    # P = N(lamb x + (1 - lamb) mu, ((1 - lamb) sd)^2), Q = N(lamb m x + (1 - lamb m) mu, ((1 - lamb m) sd)^2)
    mp, sp = lamb * x + (1 - lamb) * mu, (1 - lamb) * sd
    mq, sq = lamb * m * x + (1 - lamb * m) * mu, (1 - lamb * m) * sd
    expected = math.log(sq / sp) + (sp**2 + (mp - mq) ** 2) / (2 * sq**2) - 0.5
    kl = input_prior_kl(torch.tensor(x), torch.tensor(lamb), torch.tensor(m), mu, sd)
    assert kl.item() == pytest.approx(expected, rel=1e-5)


def test_input_prior_limits():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, 5, generator=g)
    lamb = torch.rand(4, 3, 5, 5, generator=g) * 0.98
    # m = 0: IBA's KL with an N(mu, sd) prior
    kl0 = input_prior_kl(x, lamb, torch.zeros_like(x), 0.3, 1.7)
    ref = feature_kl(x, lamb, torch.tensor(0.3), torch.tensor(1.7))
    assert torch.allclose(kl0, ref, atol=1e-5)
    # m = 1: keeping the element is free
    kl1 = input_prior_kl(x, lamb, torch.ones_like(x), 0.3, 1.7)
    assert torch.allclose(kl1, torch.zeros_like(kl1), atol=1e-5)
    # in between: non-negative and decreasing in m
    kl_half = input_prior_kl(x, lamb, torch.full_like(x, 0.5), 0.3, 1.7)
    assert (kl_half >= -1e-6).all() and (kl_half <= kl0 + 1e-6).all()


def test_gaussian_kernel():
    k = gaussian_kernel_1d(1.0)
    assert k.numel() == 5  # 2 * round(2 * sigma) + 1
    assert k.sum().item() == pytest.approx(1.0)
    e = math.exp(-0.5)
    e2 = math.exp(-2)
    z = 1 + 2 * e + 2 * e2
    assert torch.allclose(k, torch.tensor([e2, e, 1, e, e2]) / z, atol=1e-6)
    assert gaussian_kernel_1d(2.4).numel() == 11


def test_gaussian_smooth_impulse_and_constant():
    x = torch.zeros(1, 2, 11, 11)
    x[0, 0, 5, 5] = 1.0
    y = gaussian_smooth(x, 1.0)
    k = gaussian_kernel_1d(1.0)
    assert torch.allclose(y[0, 0, 3:8, 3:8], torch.outer(k, k), atol=1e-6)
    assert torch.all(y[0, 1] == 0)  # depthwise: channels do not mix
    c = torch.full((2, 3, 6, 7), 0.7)
    assert torch.allclose(gaussian_smooth(c, 1.0), c, atol=1e-6)  # reflection keeps constants


def test_capacity_map_bits_and_total():
    kl = torch.rand(2, 4, 7, 7)
    bits = capacity_map(kl)
    assert bits.shape == (2, 1, 7, 7)
    assert torch.allclose(bits[:, 0], kl.sum(1) / math.log(2))
    up = capacity_map(kl, (28, 28))
    assert up.shape == (2, 1, 28, 28)
    # upsampling keeps the layer's total information (bilinear keeps the mean)
    assert torch.allclose(up.sum((1, 2, 3)), bits.sum((1, 2, 3)), rtol=0.05)


def test_classification_loss_softmax_and_binary():
    logits = torch.tensor([[1.0, 2.0, 0.5]])
    loss = classification_loss(logits, torch.tensor([1]))
    assert loss.item() == pytest.approx(-torch.log_softmax(logits, -1)[0, 1].item())
    z = torch.tensor([[0.3], [0.3]])
    lb = classification_loss(z, torch.tensor([1, 0]))
    p = torch.sigmoid(torch.tensor(0.3)).item()
    assert lb[0].item() == pytest.approx(-math.log(p), rel=1e-5)
    assert lb[1].item() == pytest.approx(-math.log(1 - p), rel=1e-5)


def test_normalized_logits_hand_computed_per_sample_and_finite_on_zero_maps():
    cap = torch.tensor([[0.0, 1.0, 2.0, 4.0], [0.0, 0.1, 0.2, 0.4], [0.0, 0.0, 0.0, 0.0]])
    got = normalized_logits(cap)
    # c / max c, clamped to [0.05, 0.95]: [0.05, 0.25, 0.5, 0.95]
    want = torch.logit(torch.tensor([0.05, 0.25, 0.5, 0.95]))
    torch.testing.assert_close(got[0], want)
    # each sample is normalised by its own maximum: a scaled map gives the same logits
    torch.testing.assert_close(got[1], want)
    # an all-zero map gives the lower clamp everywhere, not NaN
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[2], torch.full((4,), math.log(0.05 / 0.95)))
    # any trailing shape; the clamp bounds are arguments
    img = torch.rand(2, 1, 3, 3) * torch.tensor([1.0, 50.0]).view(2, 1, 1, 1)
    out = normalized_logits(img, lo=0.1, hi=0.9)
    assert out.shape == img.shape
    assert torch.allclose(torch.sigmoid(out).flatten(1).amax(1), torch.tensor([0.9, 0.9]))
    assert torch.sigmoid(out).min() >= 0.1 - 1e-6


def test_reduce_members_hand_computed():
    # two samples, three runs each, sample-major; a (1, 2) map per run
    maps = torch.tensor([[[0.1, 0.9]], [[0.5, 0.3]], [[0.2, 0.6]],
                         [[1.0, 0.0]], [[0.0, 1.0]], [[0.4, 0.4]]])
    assert torch.allclose(reduce_members(maps, 3), torch.tensor([[[0.8 / 3, 0.6]], [[1.4 / 3,
                                                                                     1.4 / 3]]]))
    assert torch.equal(reduce_members(maps, 3, "min"), torch.tensor([[[0.1, 0.3]], [[0.0, 0.0]]]))
    assert torch.equal(reduce_members(maps, 3, "median"), torch.tensor([[[0.2, 0.6]],
                                                                        [[0.4, 0.4]]]))
    # an even K: the mean of the two middle values
    even = torch.tensor([[4.0], [1.0], [3.0], [2.0]])
    assert torch.equal(reduce_members(even, 4, "median"), torch.tensor([[2.5]]))
    assert reduce_members(maps, 1) is maps
    with pytest.raises(ValueError, match="not whole ensembles"):
        reduce_members(maps, 4)
    with pytest.raises(ValueError, match="how must be one of"):
        reduce_members(maps, 3, "max")
