"""Baseline explainers: the map convention, determinism, Grad-CAM against Captum, DeepSHAP's
summation property on a model that reuses its ReLU, Extremal Perturbation on a planted region."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inputiba.methods.image import (
    EXPLAINERS,
    available_explainers,
    fresh_nonlinearities,
    get_explainer,
    map_to_uint8,
    normalize_map,
    resolve_targets,
)

captum = pytest.importorskip("captum")


class DigitNet(nn.Module):
    """Small CNN for 16x16 digits. Reuses ``self.relu`` and calls ``F.relu``, has dropout
    and BatchNorm, so eval mode and fresh nonlinearities matter."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 32, 3, padding=1, stride=2)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.relu = nn.ReLU()
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.conv2(x))  # the same module, called again
        x = F.relu(self.conv3(x))
        return self.fc(self.drop(x.mean(dim=(2, 3))))


pytestmark = pytest.mark.usefixtures("one_thread")


@functools.cache
def digit_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's digits as (N, 1, 16, 16) images normalised to [-1, 1], and labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    return (x - 0.5) / 0.5, torch.tensor(data.target)


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """DigitNet trained for a few epochs on sklearn's digits (upsampled to 16x16)."""
    torch.manual_seed(0)
    x, y = digit_tensors()
    model = DigitNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(8):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.85, f"the test model did not train ({acc:.2f})"
    return model, x[:4].clone(), y[:4].clone()


FAST = {
    "gradcam": {"layer": "conv3"},
    "integrated_gradients": {"n_steps": 16},
    "guided_backprop": {},
    "deepshap": {"n_background": 4},
    "extremal_perturbation": {"steps": 40, "areas": (0.1, 0.3)},
    "random": {},
}


def _build(name: str, model: nn.Module, **extra: object):
    kw = dict(FAST[name])
    layer = kw.pop("layer", None)
    kw.update(extra)
    return get_explainer(name, model, layer, **kw)


def test_registry_names_and_errors(digits):
    model = digits[0]
    assert available_explainers() == [
        "inputiba",
        "iba",
        "gradcam",
        "integrated_gradients",
        "guided_backprop",
        "deepshap",
        "extremal_perturbation",
        "random",
    ]
    with pytest.raises(ValueError, match="Did you mean gradcam"):
        get_explainer("gradcma", model)
    with pytest.raises(ValueError, match="needs a layer"):
        get_explainer("iba", model)
    with pytest.raises(KeyError, match="conv3"):  # close-match error from inputiba.core.layers
        get_explainer("gradcam", model, layer="conv_3")
    assert type(get_explainer("Integrated-Gradients", model)) is EXPLAINERS["integrated_gradients"]


@pytest.mark.parametrize("name", list(FAST))
def test_map_convention_and_determinism(digits, name):
    model, x, y = digits
    model.train()  # the explainer must switch to eval (dropout off) and restore the mode
    explainer = _build(name, model, seed=3)
    res = explainer.attribute(x, y, return_raw=True)
    m = res.map
    assert m.shape == (4, 1, 16, 16) and m.dtype == torch.float32
    assert torch.isfinite(m).all() and torch.isfinite(res.raw).all()
    assert m.min() >= 0
    assert torch.allclose(m.amax(dim=(1, 2, 3)), torch.ones(4))  # per-sample max is 1
    assert torch.equal(res.targets, y)
    assert model.training and all(p.requires_grad for p in model.parameters())
    again = explainer.attribute(x, y)
    assert torch.equal(m, again)
    # the raw output is the method's own: the map is a function of it, recomputed the same way
    assert torch.equal(explainer.raw_attribute(x, y), res.raw)
    model.eval()
    if name != "random":
        # eval mode was really used: same as attributing the model already in eval mode
        assert torch.allclose(explainer.attribute(x, y), m, atol=1e-6)
    # maps of different samples differ (the method looks at the input)
    assert not torch.allclose(m[0], m[1])


def test_random_seed_changes_maps_and_global_rng_untouched(digits):
    model, x, _ = digits
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = get_explainer("random", model, seed=1).attribute(x)
    assert torch.equal(torch.rand(1), before)  # forked RNG: the caller's stream is unchanged
    b = get_explainer("random", model, seed=2).attribute(x)
    assert not torch.equal(a, b)


def test_targets_resolution(digits):
    model, x, y = digits
    pred = model(x).argmax(1)
    assert torch.equal(resolve_targets(model, x, None), pred)
    assert torch.equal(resolve_targets(model, x, 3), torch.full((4,), 3))
    assert torch.equal(resolve_targets(model, x, y.tolist()), y)
    with pytest.raises(ValueError, match="Got 3 targets for a batch of 4"):
        resolve_targets(model, x, [1, 2, 3])
    ig = get_explainer("integrated_gradients", model, n_steps=8)
    assert torch.equal(ig.attribute(x, return_raw=True).targets, pred)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        ig.attribute(x[0])


def test_gradcam_matches_captum_and_hand_computation(digits):
    from captum.attr import LayerAttribution, LayerGradCam

    model, x, y = digits
    ours = get_explainer("gradcam", model, layer="conv3").attribute(x, y, return_raw=True)
    assert ours.raw.shape == (4, 1, 8, 8)  # raw stays at the layer, signed
    ref = LayerGradCam(model, model.conv3).attribute(x, target=y, relu_attributions=True)
    ref = LayerAttribution.interpolate(ref, (16, 16), interpolate_mode="bilinear")
    assert torch.allclose(ours.map, normalize_map(ref), atol=1e-5)
    # by hand: weights = spatial mean of d logit / d A, cam = sum_c w_c A_c
    acts = {}
    handle = model.conv3.register_forward_hook(lambda _m, _i, out: acts.setdefault("a", out))
    logits = model(x)
    handle.remove()
    grads = torch.autograd.grad(logits[torch.arange(4), y].sum(), acts["a"])[0]
    cam = (grads.mean(dim=(2, 3), keepdim=True) * acts["a"]).sum(1, keepdim=True)
    assert torch.allclose(ours.raw, cam, atol=1e-5)
    up = F.interpolate(cam.clamp(min=0), size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(ours.map, normalize_map(up.detach()), atol=1e-5)
    # default layer: the last module with a spatial output (conv3 here: F.relu is functional)
    auto = get_explainer("gradcam", model)
    assert torch.allclose(auto.attribute(x, y), ours.map, atol=1e-6) and auto.layer == "conv3"


def test_integrated_gradients_completeness(digits):
    model, x, y = digits
    raw = get_explainer("integrated_gradients", model, n_steps=64).raw_attribute(x, y)
    with torch.no_grad():
        gap = model(x)[torch.arange(4), y] - model(torch.zeros_like(x))[torch.arange(4), y]
    assert torch.allclose(raw.sum(dim=(1, 2, 3)), gap, rtol=0.05, atol=0.05)


def test_fresh_nonlinearities_same_function_separate_modules(digits):
    model, x, _ = digits
    fresh = fresh_nonlinearities(model)
    assert torch.allclose(fresh(x), model(x), atol=1e-6)
    relus = [m for m in fresh.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 3  # reused self.relu twice + F.relu -> three distinct modules
    six = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU6(), nn.Conv2d(2, 2, 1), nn.ReLU6())
    xs = torch.randn(3, 1, 8, 8) * 10
    assert torch.allclose(fresh_nonlinearities(six)(xs), six(xs), atol=1e-5)


def test_deepshap_summation_on_a_model_reusing_relu(digits):
    """DeepLift's multipliers satisfy sum(attr) = f(x) - mean_b f(b); a reused ReLU breaks this
    unless every call has its own module."""
    model, x, y = digits
    background = torch.randn(5, *x.shape[1:], generator=torch.Generator().manual_seed(0))
    raw = get_explainer("deepshap", model, background=background).raw_attribute(x, y)
    with torch.no_grad():
        gap = model(x)[torch.arange(4), y] - model(background)[:, y].mean(0)
    assert torch.allclose(raw.sum(dim=(1, 2, 3)), gap, atol=1e-3 * gap.abs().max())


def test_memory_bounds_do_not_change_the_maps(digits):
    """DeepSHAP's max_batch (sample x reference pairs per pass) and Integrated Gradients'
    internal_batch_size only cut the work into passes: the raw attributions are the same."""
    model, x, y = digits
    background = torch.randn(5, *x.shape[1:], generator=torch.Generator().manual_seed(0))
    one = get_explainer("deepshap", model, background=background, max_batch=1).raw_attribute(x, y)
    two = get_explainer("deepshap", model, background=background, max_batch=10).raw_attribute(x, y)
    every = get_explainer("deepshap", model, background=background, max_batch=100)
    assert torch.allclose(one, every.raw_attribute(x, y), atol=1e-6)
    assert torch.allclose(two, one, atol=1e-6)
    small = get_explainer("integrated_gradients", model, n_steps=8, internal_batch_size=4)
    large = get_explainer("integrated_gradients", model, n_steps=8, internal_batch_size=64)
    assert torch.allclose(small.raw_attribute(x, y), large.raw_attribute(x, y), atol=1e-5)
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        get_explainer("deepshap", model, max_batch=0)


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.conv(x))
        if h.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
            h = self.relu(h - 1)
        return self.fc(h.mean(dim=(2, 3)))


def test_deepshap_untraceable_reused_relu_is_a_clear_error():
    model = _Untraceable()
    with torch.no_grad():
        model.conv.bias.fill_(1.0)
    with pytest.raises(ValueError, match=r"nonlinearity module\(s\) relu more than once"):
        get_explainer("deepshap", model).attribute(torch.randn(2, 1, 8, 8))


class _BoxEnergy(nn.Module):
    """Class 0's logit is the mean of x^2 inside a fixed box (class 1: minus that)."""

    def __init__(self, box: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.box = box
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0, y1, x0, x1 = self.box
        e = (x[:, :, y0:y1, x0:x1] ** 2).mean(dim=(1, 2, 3)) + 0 * self.anchor
        return torch.stack([e, -e], dim=1)


def test_extremal_perturbation_recovers_a_planted_region():
    box = (20, 30, 6, 16)  # 10 x 10 box in a 40 x 40 image: 6.25% of the area
    model = _BoxEnergy(box)
    x = torch.randn(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    explainer = get_explainer(
        "extremal_perturbation", model, areas=(0.08,), steps=150, lr=0.1, seed=0
    )
    res = explainer.attribute(x, target=0, return_raw=True)
    inside = torch.zeros(40, 40, dtype=torch.bool)
    inside[box[0] : box[1], box[2] : box[3]] = True
    m = res.map[:, 0]
    share = m[:, inside].sum(1) / m.sum(dim=(1, 2))
    assert (share > 0.45).all(), share  # 6.25% of the pixels hold about half the mass
    assert (m[:, inside].mean(1) > 0.8).all()  # the box is kept ...
    assert (m[:, inside].mean(1) > 10 * m[:, ~inside].mean(1)).all()  # ... and little else
    # the area constraint holds: about 8% of the mask is on
    assert ((res.raw > 0.5).float().mean(dim=(1, 2, 3)) - 0.08).abs().max() < 0.04


def test_map_to_uint8_refuses_signed_maps():
    assert map_to_uint8(torch.tensor([0.0, 0.5, 1.0])).tolist() == [0, 128, 255]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        map_to_uint8(np.array([-0.2, 0.5]))


def test_normalize_map():
    m = torch.tensor([[[0.0, 2.0], [1.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    out = normalize_map(m)
    assert out[0].tolist() == [[0.0, 0.5], [0.25, 1.0]] and out[1].abs().sum() == 0
    with pytest.raises(ValueError, match="non-negative"):
        normalize_map(-m)


@pytest.mark.parametrize("name", ["iba", "inputiba"])
def test_core_wrappers(digits, name):
    from inputiba import estimate_layer_statistics

    model, x, y = digits
    stats = estimate_layer_statistics(model, "conv2", [digit_tensors()[0][:200]], progress=False)
    extra = {"preset": "fast"} if name == "inputiba" else {}
    explainer = get_explainer(name, model, "conv2", statistics=stats, seed=0, **extra)
    res = explainer.attribute(x[:2], y[:2], return_raw=True)
    assert res.map.shape == (2, 1, 16, 16) and torch.isfinite(res.map).all()
    assert res.map.min() >= 0 and torch.allclose(res.map.amax(dim=(1, 2, 3)), torch.ones(2))
    assert torch.equal(explainer.attribute(x[:2], y[:2]), res.map)


@pytest.mark.parametrize("name", ["gradcam", "guided_backprop", "iba"])
def test_explain_func_follows_a_changed_model(digits, name):
    """A sanity check randomises weights (in place or in a copy): maps must follow the model."""
    import copy

    model, x, y = digits
    kw = {}
    if name == "iba":
        from inputiba import estimate_layer_statistics

        kw["statistics"] = estimate_layer_statistics(
            model, "conv2", [digit_tensors()[0][:200]], progress=False
        )
    explainer = get_explainer(name, model, "conv3" if name == "gradcam" else "conv2", **kw)
    before = explainer.explain_func(model, x.numpy(), y.numpy())
    assert isinstance(before, np.ndarray) and before.shape == (4, 1, 16, 16)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.conv1.weight.normal_(generator=torch.Generator().manual_seed(1))
    after = explainer.explain_func(other, x.numpy(), y.numpy())
    assert not np.allclose(before, after)
    assert np.allclose(explainer.explain_func(model, x.numpy(), y.numpy()), before, atol=1e-6)


def test_every_image_method_and_the_inputiba_classes_follow_the_one_protocol():
    from inputiba import InputIBA
    from inputiba.methods import EXPLAINERS, available_explainers

    assert available_explainers() == list(EXPLAINERS)
    for cls in (*EXPLAINERS.values(), InputIBA):
        for attr in ("attribute", "explain_func", "with_model"):
            assert callable(getattr(cls, attr, None)), (cls.__name__, attr)
