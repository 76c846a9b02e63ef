"""InputIBA and IBA on a small CNN trained here on real digits (scikit-learn)."""

import pytest
import torch

from inputiba import IBA, InputIBA, LayerNotFoundError, LayerStatistics
from inputiba.core.bottleneck import fit_feature_bottleneck, fit_input_bottleneck
from inputiba.core.config import BottleneckSettings, GanSettings
from inputiba.core.gan import ImageCritic, fit_gan_mask
from inputiba.core.layers import LayerSplit, layer_output
from inputiba.core.rng import SampleRNG
from inputiba.errors import ConfigError

SMALL = dict(gan_epochs=2, gan_dataset_size=32, gan_subset_size=8, gan_batch_size=16,
             input_steps=8, input_draws=4, feat_draws=4)


def _explainer(model, stats, preset="fast", **kw):
    return InputIBA(model, "features.4", stats, preset=preset, **{**SMALL, **kw})


def test_gradients_reach_alpha_and_theta(digits, digits_model, digits_stats):
    x = digits[2][:2]
    target = digits_model(x).argmax(1)
    rng = SampleRNG([0, 1])
    split = LayerSplit(digits_model, "features.4")
    r, ctx = split.head(x)
    mean, std = digits_stats.mean, digits_stats.std.clamp_min(0.01)
    active = digits_stats.active().float()

    # stage 1: one step moves alpha away from its initial value, driven by the class loss
    res = fit_feature_bottleneck(lambda z, _rows: split.tail(z, ctx), r, target,
                                 mean, std, active, rng,
                                 BottleneckSettings(beta=0.0, steps=2, draws=1))
    assert (res.alpha != 5.0).any()

    alpha = torch.full_like(r, 5.0, requires_grad=True)
    lamb = torch.sigmoid(alpha)
    z = lamb * r + (1 - lamb) * mean
    loss = torch.nn.functional.cross_entropy(split.tail(z, ctx), target)
    (g,) = torch.autograd.grad(loss, alpha)
    assert g.abs().sum() > 0

    # stage 3: class-loss gradient reaches the input alpha
    res3 = fit_input_bottleneck(lambda inp, _s: digits_model(inp), x, target, torch.zeros_like(x), rng,
                                BottleneckSettings(beta=0.0, steps=1, draws=1, sigma=0.0))
    assert (res3.alpha != 5.0).any()

    # stage 2: the generator loss reaches theta through the network up to the layer
    critic = ImageCritic(2, r.shape[1], tuple(r.shape[-2:])).init_per_sample(rng)
    theta0 = torch.zeros_like(x)
    gan = fit_gan_mask(lambda inp, _s: layer_output(digits_model, "features.4", inp), x, r,
                       torch.sigmoid(alpha.detach()), critic, rng,
                       GanSettings(dataset_size=8, subset_size=4, batch_size=8, epochs=1,
                                   critic_iters=1, lr_theta=0.1),
                       theta_init=theta0)
    assert (gan.theta != 0).any()
    assert gan.losses["generator"].shape == (2, 1)


def test_attribute_shapes_ranges_and_details(digits, digits_model, digits_stats):
    x = digits[2][:3]
    ex = _explainer(digits_model, digits_stats)
    maps = ex.attribute(x)
    assert maps.shape == (3, 1, 32, 32) and maps.dtype == torch.float32
    assert maps.min() >= 0 and maps.max() <= 1 and torch.isfinite(maps).all()
    res = ex.attribute(x, target=[1, 2, 3], return_details=True)
    assert res.targets.tolist() == [1, 2, 3]
    assert res.feature_map.shape == (3, 1, 32, 32) and res.feature_capacity.shape == (3, 1, 8, 8)
    assert res.gan_mask.shape == (3, 1, 32, 32)
    assert ((res.gan_mask >= 0) & (res.gan_mask <= 1)).all()
    assert res.losses["feature"]["total"].shape == (3, ex.config.feat_steps)
    assert res.losses["input"]["total"].shape == (3, SMALL["input_steps"])
    assert set(res.seconds) == {"setup", "feature", "gan", "input"}
    # the bottleneck optimisation lowers each sample's loss
    tot = res.losses["input"]["total"]
    assert (tot[:, -1] < tot[:, 0]).all()


def test_batch_samples_are_independent(digits, digits_model, digits_stats):
    x = digits[2][:4]
    ex = _explainer(digits_model, digits_stats)
    a = ex.attribute(x[[0, 1]], target=[3, 5], seed=[10, 11])
    b = ex.attribute(x[[0, 2]], target=[3, 7], seed=[10, 12])
    alone = ex.attribute(x[[0]], target=[3], seed=[10])
    assert torch.allclose(a[0], b[0], atol=1e-4)
    assert torch.allclose(a[0], alone[0], atol=1e-4)
    assert not torch.allclose(a[1], b[1], atol=1e-3)


def test_memory_bound_does_not_change_the_maps(digits, digits_model, digits_stats):
    """Chunked forward passes (max_batch) accumulate exactly the gradient of one big pass."""
    x = digits[2][:3]
    whole = _explainer(digits_model, digits_stats, max_batch=None).attribute(x, return_details=True)
    chunked = _explainer(digits_model, digits_stats, max_batch=5).attribute(x, return_details=True)
    assert torch.allclose(whole.feature_capacity, chunked.feature_capacity, atol=1e-4)
    assert torch.allclose(whole.gan_mask, chunked.gan_mask, atol=1e-4)
    assert torch.allclose(whole.attribution, chunked.attribution, atol=1e-3)


def test_reproducible_under_seed(digits, digits_model, digits_stats):
    x = digits[2][:2]
    ex = _explainer(digits_model, digits_stats)
    assert torch.equal(ex.attribute(x, seed=3), ex.attribute(x, seed=3))
    assert not torch.equal(ex.attribute(x, seed=3), ex.attribute(x, seed=4))


def test_gan_real_sample_modes(digits, digits_model, digits_stats):
    x = digits[2][:2]
    for mode in ("capacity", "lambda"):
        m = _explainer(digits_model, digits_stats, gan_real=mode).attribute(x)
        assert m.shape == (2, 1, 32, 32) and torch.isfinite(m).all()
    with pytest.raises(ValueError, match="gan_real"):
        _explainer(digits_model, digits_stats, gan_real="bogus").attribute(x)


def test_hooks_removed_and_weights_untouched_after_an_exception(digits, digits_model, digits_stats):
    before = {k: v.clone() for k, v in digits_model.state_dict().items()}
    ex = _explainer(digits_model, digits_stats, gan_real="lambda")
    head = digits_model.head
    calls = {"n": 0}

    def boom(*_):
        calls["n"] += 1
        if calls["n"] > 3:  # fail in the middle of the run (stage 1 has passed)
            raise RuntimeError("boom")

    h = head.register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            ex.attribute(digits[2][:2])
    finally:
        h.remove()
    assert calls["n"] > 3
    for m in digits_model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    assert all(p.requires_grad for p in digits_model.parameters())
    after = digits_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not digits_model.training


def test_model_mode_and_weights_restored(digits, digits_model, digits_stats):
    before = {k: v.clone() for k, v in digits_model.state_dict().items()}
    digits_model.train()
    try:
        _explainer(digits_model, digits_stats).attribute(digits[2][:1])
        assert digits_model.training  # restored
    finally:
        digits_model.eval()
    after = digits_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # the channels-last run restores the weights' memory layout too
    assert all(p.is_contiguous() for p in digits_model.parameters())


def test_clear_errors(digits, digits_model, digits_stats):
    x = digits[2][:2]
    with pytest.raises(LayerNotFoundError, match="features.4"):
        InputIBA(digits_model, "features.44")
    ex = InputIBA(digits_model, "features.4")
    with pytest.raises(RuntimeError, match="estimate"):
        ex.attribute(x)
    ex.statistics = digits_stats
    with pytest.raises(ValueError, match="out of range"):
        ex.attribute(x, target=10)
    with pytest.raises(ValueError, match="2 targets"):
        ex.attribute(x[:1], target=[1, 2])
    with pytest.raises(ValueError, match="batch"):
        ex.attribute(x[0])
    ex.statistics = LayerStatistics((16, 8, 8))
    with pytest.raises(ValueError, match="statistics were estimated"):
        ex.attribute(x)
    with pytest.raises(TypeError, match="input_stepz"):
        InputIBA(digits_model, "features.4", input_stepz=3)


def test_iba_capacity_map(digits, digits_model, digits_stats):
    iba = IBA(digits_model, "features.4", digits_stats, steps=5)
    x = digits[2][:2]
    bits = iba.attribute(x, upsample=False)
    assert bits.shape == (2, 1, 8, 8) and (bits >= 0).all()
    up = iba.attribute(x)
    assert up.shape == (2, 1, 32, 32)
    assert torch.allclose(up.sum((1, 2, 3)), bits.sum((1, 2, 3)), rtol=0.05)


def _prob(model, x, t):
    with torch.no_grad():
        return torch.softmax(model(x), 1).gather(1, t.view(-1, 1)).squeeze(1)


def test_deleting_top_pixels_hurts_more_than_random(digits, digits_model, digits_stats):
    """A real property of the maps: the pixels InputIBA ranks highest carry the decision."""
    x = digits[2][:24]
    t = digits_model(x).argmax(1)
    ex = _explainer(digits_model, digits_stats, input_steps=20, gan_epochs=3)
    maps = ex.attribute(x, target=t)
    k = int(0.15 * 32 * 32)
    background = float(x.min())
    flat = maps.flatten(1)
    top = flat.topk(k, dim=1).indices
    g = torch.Generator().manual_seed(0)
    rand = torch.stack([torch.randperm(32 * 32, generator=g)[:k] for _ in range(len(x))])
    xt, xr = x.clone().flatten(1), x.clone().flatten(1)
    xt.scatter_(1, top, background)
    xr.scatter_(1, rand, background)
    p0 = _prob(digits_model, x, t)
    drop_top = (p0 - _prob(digits_model, xt.view_as(x), t)).mean()
    drop_rand = (p0 - _prob(digits_model, xr.view_as(x), t)).mean()
    print("drop", float(drop_top), float(drop_rand))
    assert drop_top > drop_rand + 0.1, (drop_top, drop_rand)


def test_float64_models_are_explained_in_float64(digits, digits_model, digits_stats):
    """Regression: the WGAN critic was always float32, so a float64 model failed in stage 2."""
    import copy

    model = copy.deepcopy(digits_model).double()
    maps = _explainer(model, digits_stats, gan_epochs=1).attribute(digits[2][:1].double())
    assert maps.dtype == torch.float64 and torch.isfinite(maps).all()


def test_inplace_relu_right_after_the_layer(digits):
    """Regression: a tail that starts with ReLU(inplace=True) (VGG16 at features.17) failed."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(inplace=True),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(inplace=True),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10),
    ).eval()
    x = digits[2][:2]
    ex = InputIBA(model, "2", **{**SMALL, "gan_epochs": 1})
    ex.estimate([digits[0][:64]], progress=False)
    maps = ex.attribute(x)
    assert maps.shape == (2, 1, *x.shape[-2:]) and torch.isfinite(maps).all()


def test_gan_real_subsets_keep_their_mean_and_std_across_epochs():
    """Regression: the sub-sets' noise means and stds were redrawn every epoch; the original
    code draws them once per GAN (only the noise of each sample is new at every visit)."""
    real_means = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, feats):  # (B, N, C, H, W) -> (B, N)
            m = feats.detach().mean().item()
            if m < 50:  # fake features are 100: record the real batches only
                real_means.append(m)
            return feats.flatten(2).mean(-1) * self.w

    x = torch.zeros(1, 1, 4, 4)
    feat = (1, 16, 16, 16)
    gan = fit_gan_mask(lambda inp, _s: torch.full((inp.shape[0], *feat[1:]), 100.0) + 0 * inp.sum(),
                       x, torch.zeros(feat), torch.zeros(feat), Recorder(), SampleRNG([3]),
                       GanSettings(dataset_size=32, subset_size=32, batch_size=32, epochs=4))
    assert gan.losses["critic"].shape == (1, 4) and len(real_means) == 4
    # one sub-set: every epoch's real batch is noise of the same mean (131,072 values each)
    assert max(real_means) - min(real_means) < 0.1, real_means


def test_stage1_reports_the_last_evaluated_bottleneck(digits, digits_model, digits_stats):
    """Regression: the map came from one Adam update after the last evaluated loss; IBA and the
    original code report the capacity of the last forward pass (on EfficientNet-Lite0 that
    update raised the mean capacity by 7-20% over the original's maps)."""
    from inputiba.core.functional import feature_kl

    x = digits[2][:2]
    split = LayerSplit(digits_model, "features.4")
    r, ctx = split.head(x)
    mean, std = digits_stats.mean, digits_stats.std.clamp_min(0.01)
    active = digits_stats.active().float()
    target = digits_model(x).argmax(1)
    one = fit_feature_bottleneck(lambda z, _rows: split.tail(z, ctx), r, target, mean, std,
                                 active, SampleRNG([0, 1]), BottleneckSettings(steps=1, draws=2))
    assert (one.alpha == 5.0).all()  # one evaluation: nothing reported after an update
    three = fit_feature_bottleneck(lambda z, _rows: split.tail(z, ctx), r, target, mean, std,
                                   active, SampleRNG([0, 1]),
                                   BottleneckSettings(steps=3, draws=2))
    kl = feature_kl(r, torch.sigmoid(three.alpha), mean, std) * active
    torch.testing.assert_close(three.kl, kl)
    # the reported capacity is the one of the last loss evaluation
    torch.testing.assert_close(three.kl.flatten(1).mean(1), three.losses["info"][:, -1])


def test_another_model_gets_its_own_statistics(digits, digits_model):
    """A sanity check explains a randomised copy: its layer statistics must come from that copy
    (reusing the original model's hides the randomisation: mistake 5 of the original code)."""
    import copy

    from inputiba import estimate_layer_statistics

    x_est, x = torch.split(digits[0][:300], 200)[0], digits[2][:2]
    ex = _explainer(digits_model, None)
    ex.estimate([x_est], progress=False)
    other = copy.deepcopy(digits_model)
    with torch.no_grad():
        other.features[0].weight.normal_(generator=torch.Generator().manual_seed(1))
    new = ex.with_model(other)
    assert new.model is other and new.config == ex.config
    own = estimate_layer_statistics(other, "features.4", [x_est], progress=False)
    assert torch.allclose(new.statistics.mean, own.mean) and torch.allclose(new.statistics.std, own.std)
    assert not torch.allclose(new.statistics.mean, ex.statistics.mean)
    maps = ex.explain_func(other, x.numpy(), None)
    assert maps.shape == (2, 1, 32, 32)
    assert ex.model is digits_model  # the explainer itself is unchanged

    # batches that cannot be iterated again: the statistics are shared, with a warning
    ex.estimate(iter([x_est]), progress=False)
    with pytest.warns(UserWarning, match="statistics of 'features.4' in the original model"):
        shared = ex.with_model(other)
    assert shared.statistics is ex.statistics


def test_no_gan_keeps_the_initial_mask_as_prior(digits, digits_model, digits_stats):
    """gan_epochs=0: stage 2 is skipped; its mask is sigmoid(theta_init), the stage-1 capacity
    in bits per pixel, and stage 3 still runs on it. A trained GAN moves the mask off it."""
    x = digits[2][:2]
    res = _explainer(digits_model, digits_stats, gan_epochs=0).attribute(x, return_details=True)
    assert torch.allclose(res.gan_mask, torch.sigmoid(res.feature_map), atol=1e-6)
    assert res.losses["gan"]["generator"].shape == (2, 0)
    assert res.losses["input"]["total"].shape == (2, SMALL["input_steps"])
    assert ((res.attribution >= 0) & (res.attribution <= 1)).all()
    trained = _explainer(digits_model, digits_stats, gan_lr_theta=0.1,
                         gan_critic_iters=1).attribute(x, return_details=True)
    assert (trained.gan_mask - torch.sigmoid(trained.feature_map)).abs().max() > 1e-3


def test_ensemble_is_the_mean_of_its_members(digits, digits_model, digits_stats):
    """ensemble=K: sample i's map is the mean of the single-seed maps of seeds s_i + k."""
    x = digits[2][:2]
    ex = _explainer(digits_model, digits_stats)
    k = 3
    ens = ex.attribute(x, target=[3, 5], seed=7, ensemble=k)
    assert ens.shape == (2, 1, 32, 32)
    for i, t in enumerate([3, 5]):
        members = [ex.attribute(x[[i]], target=[t], seed=[7 + i * k + j]) for j in range(k)]
        assert torch.allclose(ens[i], torch.stack(members).mean(0)[0], atol=1e-4)
        # the members differ, so the mean is not any one of them
        assert not torch.allclose(members[0], members[1], atol=1e-3)
    # a sequence of seeds gives the base seeds; a batch neighbour does not change a map
    seq = ex.attribute(x[[1, 0]], target=[5, 3], seed=[7 + k, 7], ensemble=k)
    assert torch.allclose(seq[0], ens[1], atol=1e-4) and torch.allclose(seq[1], ens[0], atol=1e-4)
    det = ex.attribute(x, target=[3, 5], seed=7, ensemble=k, return_details=True)
    assert torch.allclose(det.attribution, ens, atol=1e-6)
    assert det.targets.tolist() == [3, 5] and det.gan_mask.shape == (2, 1, 32, 32)
    assert det.losses["input"]["total"].shape[0] == 2 * k
    for bad in (0, True, 1.5):  # inputiba's own error (a ValueError) naming the setting
        with pytest.raises(ConfigError, match=r"ensemble must be an integer >= 1"):
            ex.attribute(x, ensemble=bad)


def test_shared_stage1_ensemble_is_k_stage3_runs_on_the_first_members_stage1(
        digits, digits_model, digits_stats, monkeypatch):
    """ensemble_shared_stage1: stage 1 runs once per image (its first member's seed and
    stream); member 0's map is the unshared single-seed map, member k's the single run at seed
    s + k given member 0's stage-1 result; a batch neighbour still changes nothing."""
    import inputiba.core.pipeline as pipeline

    x = digits[2][:2]
    k = 3
    ex = _explainer(digits_model, digits_stats, ensemble_shared_stage1=True,
                    ensemble_reduce="min")
    calls = []

    def recording(tail, features, target, *args, **kw):
        out = fit_feature_bottleneck(tail, features, target, *args, **kw)
        calls.append((features.shape[0], target.tolist(), out))
        return out

    monkeypatch.setattr(pipeline, "fit_feature_bottleneck", recording)
    shared = ex.attribute(x, target=[3, 5], seed=7, ensemble=k, return_details=True)
    assert [(n, t) for n, t, _ in calls] == [(2, [3, 5])]  # one stage-1 row per image
    stage1 = calls[0][2]
    assert torch.equal(shared.losses["feature"]["total"],
                       stage1.losses["total"].repeat_interleave(k, dim=0))
    single = _explainer(digits_model, digits_stats)
    for i, t in enumerate([3, 5]):
        s = 7 + i * k
        members = [single.attribute(x[[i]], target=[t], seed=[s])]
        row = pipeline.BottleneckResult(stage1.lamb[[i]], stage1.alpha[[i]], stage1.kl[[i]],
                                        {n: v[[i]] for n, v in stage1.losses.items()})
        monkeypatch.setattr(pipeline, "fit_feature_bottleneck", lambda *a, _r=row, **kw: _r)
        members += [single.attribute(x[[i]], target=[t], seed=[s + j]) for j in range(1, k)]
        monkeypatch.setattr(pipeline, "fit_feature_bottleneck", recording)
        torch.testing.assert_close(shared.attribution[i], torch.stack(members).amin(0)[0])
        assert not torch.allclose(members[1], members[2], atol=1e-3)
    alone = ex.attribute(x[[1]], target=[5], seed=[7 + k], ensemble=k)
    torch.testing.assert_close(alone[0], shared.attribution[1])
    # not shared: every member fits its own stage 1 (2 x 3 rows)
    calls.clear()
    ex.config = ex.config.replace(ensemble_shared_stage1=False)
    ex.attribute(x, target=[3, 5], seed=7, ensemble=k)
    assert [n for n, _, _ in calls] == [2 * k]


def test_ensemble_setting_is_the_default_of_attribute(digits, digits_model, digits_stats):
    """The setting ``ensemble`` K (constructor or resolve_config) is what attribute(ensemble=K)
    does with the default config; an explicit argument still wins."""
    from inputiba.core.config import resolve_config

    x = digits[2][:2]
    no_gan = dict(gan_epochs=0)  # stage 2 is not what this is about
    plain = _explainer(digits_model, digits_stats, **no_gan)
    want = plain.attribute(x, seed=5, ensemble=2)
    assert not torch.allclose(want, plain.attribute(x, seed=5), atol=1e-3)
    by_override = _explainer(digits_model, digits_stats, **no_gan, ensemble=2)
    assert by_override.config.ensemble == 2
    torch.testing.assert_close(by_override.attribute(x, seed=5), want)
    by_config = InputIBA(digits_model, "features.4", digits_stats,
                         preset=resolve_config("fast", **{**SMALL, **no_gan}, ensemble=2))
    torch.testing.assert_close(by_config.attribute(x, seed=5), want)
    torch.testing.assert_close(by_override.attribute(x, seed=5, ensemble=1),
                               plain.attribute(x, seed=5))


def test_gan_theta_init_normalized_starts_the_mask_at_the_shaped_capacity(
        digits, digits_model, digits_stats):
    """gan_theta_init="normalized": with no GAN steps the mask is
    sigmoid(normalized_logits(capacity)), spanning 0.05..0.95 per image; "capacity" (bits per
    pixel as logits) starts near 0.5 everywhere."""
    from inputiba.core.functional import normalized_logits

    x = digits[2][:2]
    norm = _explainer(digits_model, digits_stats, gan_epochs=0,
                      gan_theta_init="normalized").attribute(x, return_details=True)
    torch.testing.assert_close(norm.gan_mask, torch.sigmoid(normalized_logits(norm.feature_map)))
    lo, hi = norm.gan_mask.flatten(1).aminmax(dim=1)
    assert torch.allclose(hi, torch.full((2,), 0.95)) and torch.allclose(lo, torch.full((2,), 0.05))
    cap = _explainer(digits_model, digits_stats, gan_epochs=0).attribute(x, return_details=True)
    torch.testing.assert_close(cap.feature_map, norm.feature_map)  # stage 1 is the same
    assert ((cap.gan_mask - 0.5).abs() < 0.2).all()
    # stage 3 runs on the other prior, so the maps differ
    assert not torch.allclose(cap.attribution, norm.attribution, atol=1e-3)


def test_fast_nogan_preset_runs_stage_3_on_the_initial_mask(digits, digits_model, digits_stats):
    x = digits[2][:2]
    res = InputIBA(digits_model, "features.4", digits_stats, preset="fast-nogan").attribute(
        x, return_details=True)
    assert torch.allclose(res.gan_mask, torch.sigmoid(res.feature_map), atol=1e-6)
    assert res.losses["input"]["total"].shape == (2, 20)
    assert ((res.attribution >= 0) & (res.attribution <= 1)).all()
