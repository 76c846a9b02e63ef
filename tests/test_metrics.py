"""Hand-computed tiny cases for every metric of ``inputiba.metrics``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from inputiba.metrics import functional as MF


class SumModel(nn.Module):
    """logits = [sum(w * x), 0]: the target-0 logit is a weighted pixel sum (hand-computable)."""

    def __init__(self, w: torch.Tensor, dropout: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (self.drop(x) * self.w).flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


X = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1, 1, 2, 2)
A = torch.tensor([[[0.1, 0.4], [0.3, 0.2]]])  # order: 2, 3, 4, 1
ONES = torch.ones(1, 2, 2)


def test_step_counts():
    assert MF.step_counts(4, 1).tolist() == [0, 1, 2, 3, 4]
    assert MF.step_counts(5, 2).tolist() == [0, 2, 4, 5]
    assert MF.step_counts(50176, 10).numel() == 5019  # the paper's 10 pixels a step
    assert MF.step_counts(50176, 0.01).tolist()[:3] == [0, 502, 1004]
    assert MF.step_counts(50176, 0.01).numel() == 101
    with pytest.raises(ValueError, match="step"):
        MF.step_counts(4, 0)


def test_pixel_ranks_stable_ties():
    r = MF.pixel_ranks(torch.tensor([[0.5, 1.0, 0.5, 0.0]]))
    assert r.tolist() == [[1, 0, 2, 3]]


def test_deletion_insertion_hand_case():
    model = SumModel(ONES)
    d = MF.deletion(model, X, [0], A, step=1, score="logit", batch_size=2)
    assert d.fractions.tolist() == [0, 0.25, 0.5, 0.75, 1.0]
    assert d.scores.tolist() == [[10, 8, 5, 1, 0]]
    assert d.auc.item() == pytest.approx(0.25 * (9 + 6.5 + 3 + 0.5))
    i = MF.insertion(model, X, [0], A, step=1, score="logit", baseline=0.0, batch_size=3)
    assert i.scores.tolist() == [[0, 2, 5, 9, 10]]
    assert i.auc.item() == pytest.approx(0.25 * (1 + 3.5 + 7 + 9.5))
    d2 = MF.deletion(model, X, [0], A, step=2, score="logit")
    assert d2.scores.tolist() == [[10, 5, 0]] and d2.auc.item() == pytest.approx(5.0)


def test_curve_chunking_never_aliases_and_matches_direct_forwards():
    """Every point is its own input (mistake 1): any chunk size gives the same distinct scores."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 4)
    a = torch.rand(2, 5, 4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(60, 7))
    ref = MF.deletion(model, x, [1, 4], a, step=3, batch_size=1000)
    for bs in (1, 4, 5):
        got = MF.deletion(model, x, [1, 4], a, step=3, batch_size=bs)
        torch.testing.assert_close(got.scores, ref.scores)
    # direct: remove the top-k pixels one by one by hand
    order = a[0].flatten().argsort(descending=True, stable=True)
    xi = x[0].clone()
    for j, k in enumerate(ref.fractions.mul(20).round().long().tolist()):
        xi = x[0].clone().view(3, -1)
        xi[:, order[:k]] = 0
        p = torch.softmax(model(xi.view(1, 3, 5, 4)), 1)[0, 1]
        assert ref.scores[0, j].item() == pytest.approx(p.item(), abs=1e-6)
    assert len(set(ref.scores[0].tolist())) == ref.scores.shape[1]  # all distinct


def test_curve_probability_and_blur_baseline():
    model = SumModel(ONES)
    d = MF.deletion(model, X, 0, A, step=4)
    # softmax([s, 0])[0] = sigmoid(s)
    assert d.scores[0].tolist() == pytest.approx(torch.sigmoid(torch.tensor([10.0, 0.0])).tolist())
    i = MF.insertion(model, X, 0, A, step=4, blur_sigma=1.0, score="logit")
    assert i.scores[0, 0].item() == pytest.approx(MF.blur(X, 1.0).sum().item(), rel=1e-5)
    assert i.scores[0, -1].item() == pytest.approx(10.0)


def test_curves_run_in_eval_mode_and_restore_training():
    model = SumModel(ONES, dropout=0.9).train()
    a = MF.deletion(model, X, [0], A, step=1, score="logit")
    assert a.scores.tolist() == [[10, 8, 5, 1, 0]]  # dropout off
    assert model.training and model.w.requires_grad


def test_curve_shape_errors():
    model = SumModel(ONES)
    with pytest.raises(ValueError, match="do not match inputs"):
        MF.deletion(model, X, [0], torch.rand(1, 3, 3))
    with pytest.raises(ValueError, match="targets"):
        MF.deletion(model, X, [0, 1], A)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        MF.deletion(model, X[0], [0], A)


def _token_forward(emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    s = (emb[..., 0] * mask).sum(1)
    return torch.stack([s, torch.zeros_like(s)], 1)


def test_token_curves_hand_case_with_padding():
    emb = torch.zeros(2, 4, 3)
    emb[0, :, 0] = torch.tensor([1.0, 2.0, 3.0, 100.0])  # last token is padding
    emb[1, :, 0] = torch.tensor([5.0, 6.0, 7.0, 8.0])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    attr = torch.tensor([[0.0, 1.0, 0.5, 9.0], [4.0, 3.0, 2.0, 1.0]])
    d = MF.token_perturbation_curve(
        _token_forward, emb, [0, 0], attr, mask, score="logit", batch_size=3
    )
    assert d.scores[0].tolist() == [6, 4, 1, 0]  # padding (attribution 9) never removed
    assert d.fractions[0].tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert d.scores[1].tolist() == [26, 21, 15, 8, 0]
    assert d.auc[1].item() == pytest.approx(0.25 * (23.5 + 18 + 11.5 + 4))
    i = MF.token_perturbation_curve(
        _token_forward, emb, [0, 0], attr, mask, mode="insertion", score="logit"
    )
    assert i.scores[0].tolist() == [0, 2, 5, 6]


def test_subset_output_drops_hand_case():
    model = SumModel(torch.tensor([[[1.0, 1.0], [1.0, 2.0]]]))
    masks = torch.tensor([[[1, 0, 0, 1], [0, 1, 1, 0]]], dtype=torch.bool)  # {1, 4}, {2, 3}
    sums, drops = MF.subset_output_drops(model, X, [0], A, masks)
    assert sums[0].tolist() == pytest.approx([0.3, 0.7])
    assert drops.tolist() == [[1 + 8, 2 + 3]]


def test_pearson():
    assert MF.pearson(torch.tensor([1.0, 2, 3]), torch.tensor([2.0, 4, 7])).item() == pytest.approx(
        np.corrcoef([1, 2, 3], [2, 4, 7])[0, 1]
    )
    assert torch.isnan(MF.pearson(torch.ones(3), torch.tensor([1.0, 2, 3])))


def test_sensitivity_n_values_match_design():
    ns = MF.sensitivity_n_values(224 * 224)
    assert len(ns) == 42 and ns[0] == 1 and ns[-1] == 31622
    assert MF.sensitivity_n_values(8 * 8)[-1] <= 64


def test_sensitivity_n_exact_attribution_correlates_perfectly():
    """For a linear model, gradient x input sums to exactly the drop of any subset: r = 1."""
    torch.manual_seed(0)
    x = torch.randn(2, 1, 4, 4)
    w = torch.randn(1, 4, 4)
    model = SumModel(w)
    exact = (x * w)[:, 0]
    res = MF.sensitivity_n(model, x, [0, 0], exact, ns=[1, 3, 8, 16], n_subsets=20)
    assert res.correlations.shape == (2, 4)
    torch.testing.assert_close(res.correlations[:, :3], torch.ones(2, 3))
    assert torch.isnan(res.correlations[:, 3]).all()  # N = all pixels: one subset, undefined
    torch.testing.assert_close(res.mean, torch.ones(2))
    anti = MF.sensitivity_n(model, x, [0, 0], -exact, ns=[2, 5], n_subsets=20)
    torch.testing.assert_close(anti.correlations, -torch.ones(2, 2))


def test_token_sensitivity_n():
    torch.manual_seed(0)
    emb = torch.randn(2, 6, 2)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    exact = emb[..., 0] * mask
    res = MF.token_sensitivity_n(_token_forward, emb, [0, 0], exact, mask, n_subsets=15)
    assert res.correlations.shape == (2, 10)
    ok = ~torch.isnan(res.correlations)
    torch.testing.assert_close(res.correlations[ok], torch.ones(int(ok.sum())))
    assert torch.isnan(res.correlations[:, -1]).all()  # 100%: every subset is the whole sentence


def test_filter_by_probability():
    model = SumModel(ONES)
    x = torch.cat([X, -X, X * 0])  # logits 10, -10, 0 -> p 1, 0, 0.5
    keep, p = MF.filter_by_probability(model, x, [0, 0, 0])
    assert keep.tolist() == [True, False, False]
    assert p[2].item() == pytest.approx(0.5)


# ----------------------------------------------------------------------------- localisation


def test_ehr_hand_cases():
    h = np.array([[1.0, 0.5], [0.0, 0.0]])
    # region = the pixel holding 1: ratio 1/2 at q = 0, then 1
    assert MF.effective_heat_ratio(h, np.array([[0, 0, 1, 1]])) == pytest.approx(0.1 * 0.75 + 0.9)
    # region = the pixel holding 0.5
    box = np.array([[1, 0, 2, 1]])
    assert MF.effective_heat_ratio(h, box, weighted=True) == pytest.approx(0.1 * 0.25 / 2)
    assert MF.effective_heat_ratio(h, box, weighted=False) == pytest.approx(0.1 * 0.5 / 2)
    ehr, qs, ratios = MF.effective_heat_ratio(h, box, return_curve=True)
    assert ratios.tolist() == pytest.approx([0.25] + [0.0] * 10) and len(qs) == 11
    # the same region as a mask
    mask = np.zeros((2, 2), bool)
    mask[0, 1] = True
    assert MF.effective_heat_ratio(h, mask) == pytest.approx(ehr)


def test_ehr_below_threshold_does_not_crash():
    h = np.full((4, 4), 0.05)
    assert MF.effective_heat_ratio(h, np.array([[0, 0, 2, 2]])) == 0.0
    assert MF.effective_heat_ratio(np.zeros((4, 4)), np.array([[0, 0, 2, 2]])) == 0.0


def test_ehr_errors():
    with pytest.raises(MF.NoRegionError):
        MF.effective_heat_ratio(np.ones((3, 3)), np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        MF.effective_heat_ratio(np.full((3, 3), 2.0), np.array([[0, 0, 1, 1]]))
    with pytest.raises(ValueError, match="does not match"):
        MF.effective_heat_ratio(np.ones((3, 3)), np.ones((2, 2), bool))


def test_pointing_game_hand_case():
    h = np.zeros((10, 10))
    h[0, 0] = 1.0
    far = np.array([[3, 0, 6, 1]])  # columns 3..5 of row 0: distance 3 from (0, 0)
    assert not MF.pointing_game(h, far, tolerance=2)
    assert MF.pointing_game(h, far, tolerance=3)
    assert MF.pointing_game(h, np.array([[0, 0, 1, 1]]), tolerance=0)


def test_mass_in_box_hand_case():
    h = np.array([[1.0, 1.0], [2.0, 0.0]])
    share, ratio = MF.mass_in_box(h, np.array([[0, 1, 1, 2]]))  # pixel (1, 0)
    assert share == pytest.approx(0.5) and ratio == pytest.approx(2.0)
    share, ratio = MF.mass_in_box(np.ones((4, 4)), np.array([[0, 0, 2, 2]]))
    assert share == pytest.approx(0.25) and ratio == pytest.approx(1.0)
    assert np.isnan(MF.mass_in_box(np.zeros((2, 2)), np.array([[0, 0, 1, 1]]))[0])
    with pytest.raises(ValueError, match="non-negative"):
        MF.mass_in_box(-np.ones((2, 2)), np.array([[0, 0, 1, 1]]))


# ----------------------------------------------------------------------------- sanity check


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def saliency(model: nn.Module, x, y) -> np.ndarray:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()
    x = x.clone().requires_grad_(True)
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long()
    out = model(x).gather(1, y.view(-1, 1)).sum()
    (g,) = torch.autograd.grad(out, x)
    return g.abs().sum(1).numpy()


def test_randomization_layers_and_reinitialize():
    torch.manual_seed(0)
    net = TinyNet()
    assert MF.randomization_layers(net) == ["fc", "bn", "conv"]
    nested = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), nn.ReLU(), nn.Linear(2, 2)
    )
    assert MF.randomization_layers(nested) == ["2", "0.1", "0.0"]
    assert MF.randomization_layers(nested, depth=0) == ["2", "0"]
    net.bn.running_mean.fill_(3.0)
    net.bn.weight.data.fill_(2.0)
    big = nn.Linear(1000, 400)
    MF.reinitialize_(big)
    assert big.weight.std().item() == pytest.approx(0.05, rel=0.02) and big.bias.abs().max() == 0
    MF.reinitialize_(net.bn)
    assert net.bn.running_mean.abs().max() == 0 and (net.bn.running_var == 1).all()
    assert (net.bn.weight == 1).all()
    conv = nn.Conv2d(8, 16, 3)
    MF.reinitialize_(conv)
    bound = (6 / (8 * 9 + 16 * 9)) ** 0.5  # Xavier uniform
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
    assert conv.bias.abs().max() == 0


def test_map_similarity():
    a = np.arange(36.0).reshape(6, 6)
    assert MF.map_similarity(a, a * 3 + 1) == pytest.approx((1.0, 1.0))
    ssim, rho = MF.map_similarity(a, a[::-1].copy())
    assert ssim < 0.5 and rho < 0


def test_sanity_check_never_touches_model_and_detects_model_independence():
    torch.manual_seed(0)
    net = TinyNet().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(3, 1, 8, 8)
    y = torch.tensor([0, 1, 2])
    res = MF.sanity_check(net, x, y, saliency, keep_maps=True)
    assert res.layers == ["fc", "bn", "conv"]
    assert res.ssim.shape == (3, 3) and res.spearman.shape == (3, 3) and len(res.maps) == 3
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert net.training
    np.testing.assert_allclose(res.original, saliency(net.eval(), x, y))
    # saliency depends on the weights: after all layers are randomised it has changed
    assert res.ssim[:, -1].mean() < 0.9 and res.spearman[:, -1].mean() < 0.9
    # a "method" ignoring the model (|x|) passes through unchanged: SSIM = Spearman = 1
    edge = MF.sanity_check(net, x, y, lambda m, xx, yy: xx.abs()[:, 0])
    np.testing.assert_allclose(edge.ssim, 1.0)
    np.testing.assert_allclose(edge.spearman, 1.0)
    # reproducible under a seed
    again = MF.sanity_check(net, x, y, saliency)
    np.testing.assert_allclose(again.ssim, res.ssim)
    with pytest.raises(KeyError, match="nope"):
        MF.sanity_check(net, x, y, saliency, layers=["nope"])


# ----------------------------------------------------------------------------- class layer


def test_curve_classes_accumulate_and_summarise():
    from inputiba.metrics import Deletion, Insertion

    model = SumModel(ONES)
    dele = Deletion(model, step=1, score="logit")
    ins = Insertion(model, step=1, score="logit", baseline=0.0)
    r = dele.update(torch.cat([X, X]), [0, 0], torch.cat([A, -A]), names=["a", "b"])
    ins.update(X, [0], A)
    assert r.auc.shape == (2,)
    s = dele.summary()
    # order 2, 3, 4, 1 -> 4.75; reversed order 1, 4, 3, 2 -> 10, 9, 5, 2, 0 -> 0.25 * 21
    assert s["auc"]["mean"] == pytest.approx((4.75 + 5.25) / 2) and s["auc"]["n"] == 2
    assert s["auc"]["std"] == pytest.approx(abs(4.75 - 5.25) / 2)
    assert dele.per_sample()[1] == {"name": "b", "auc": pytest.approx(5.25)}
    assert len(dele.curves) == 2 and ins.summary()["auc"]["mean"] == pytest.approx(5.25)
    assert Deletion.higher_is_better["auc"] is False and Insertion.higher_is_better["auc"]
    dele.reset()
    assert dele.summary()["auc"]["n"] == 0


def test_box_classes_skip_and_report():
    from inputiba.metrics import EffectiveHeatRatio, MassInBox, PointingGame

    h = np.zeros((10, 10))
    h[1, 1] = 1.0
    maps = [h, h, h, h]
    regions = [np.array([[0, 0, 3, 3]]), None, np.zeros((0, 4)), np.array([[0, 0, 10, 10]])]
    ehr = EffectiveHeatRatio()
    out = ehr.update(maps, regions, names=["in", "none", "empty", "huge"])
    assert out[0]["ehr"] == pytest.approx(1.0) and out[1] is None
    s = ehr.summary()
    assert s["ehr"]["n"] == 1
    assert [d["name"] for d in s["skipped"]] == ["none", "empty", "huge"]
    assert "no boxes" in s["skipped"][0]["reason"] and "cover" in s["skipped"][2]["reason"]
    pg = PointingGame(tolerance=0)
    pg.update([h, h], [np.array([[0, 0, 3, 3]]), np.array([[5, 5, 9, 9]])])
    assert pg.summary()["hit"]["mean"] == 0.5
    mib = MassInBox()
    mib.update([h], [np.array([[0, 0, 5, 5]])])
    assert mib.summary()["mass_in_box"]["mean"] == 1.0
    assert mib.summary()["mass_in_box_ratio"]["mean"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="regions"):
        mib.update([h], [])


def test_sensitivity_and_sanity_classes():
    from inputiba.metrics import SanityCheck, SensitivityN

    torch.manual_seed(0)
    x = torch.randn(2, 1, 4, 4)
    w = torch.randn(1, 4, 4)
    sn = SensitivityN(SumModel(w), ns=[1, 4], n_subsets=10)
    sn.update(x, [0, 0], (x * w)[:, 0])
    s = sn.summary()
    assert s["mean_correlation"]["mean"] == pytest.approx(1.0) and set(s["per_n"]) == {1, 4}
    net = TinyNet()
    sc = SanityCheck(net, saliency)
    sc.update(torch.randn(2, 1, 8, 8), [0, 1])
    s = sc.summary()
    assert [d["layer"] for d in s["per_layer"]] == ["fc", "bn", "conv"]
    assert s["ssim_last"]["n"] == 2
