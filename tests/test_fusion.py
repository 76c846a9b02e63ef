"""The folded copy of a classifier: the same function, faster, and the original untouched."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inputiba import InputIBA
from inputiba.core.fusion import fold_batchnorm, foldable_pairs
from inputiba.core.layers import layer_output
from inputiba.models.small_cnn import SmallCNN


def _with_running_stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, then eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen))
                m.running_var.copy_(torch.rand(n, generator=gen) * 2 + 0.1)
                m.weight.copy_(torch.randn(n, generator=gen))
                m.bias.copy_(torch.randn(n, generator=gen))
    return model.eval()


class SamePadConv(nn.Conv2d):
    """A convolution that zero-pads its input first, like EfficientNet's Conv2dStaticSamePadding."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, groups: int = 1) -> None:
        super().__init__(cin, cout, k, stride, groups=groups, bias=False)
        total = k - stride  # "same" for even inputs
        self.static_padding = nn.ZeroPad2d((total // 2, total - total // 2) * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.static_padding(x), self.weight, self.bias, self.stride,
                        self.padding, self.dilation, self.groups)


class MBNet(nn.Module):
    """Depthwise "same" convolutions with uneven padding, BN, ReLU6, a residual and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = SamePadConv(3, 8, 3, 2)
        self.bn0 = nn.BatchNorm2d(8)
        self.act = nn.ReLU6()
        self.dw = SamePadConv(8, 8, 5, 2, groups=8)
        self.bn1 = nn.BatchNorm2d(8)
        self.pad = nn.ZeroPad2d(1)
        self.conv = nn.Conv2d(8, 8, 3)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn0(self.stem(x)))
        x = self.act(self.bn1(self.dw(x)))
        x = x + self.bn2(self.conv(self.pad(x)))
        return self.fc(x.mean((2, 3)))


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _with_running_stats(MBNet(), seed)


def test_folded_copy_matches_values_and_input_gradients_in_float64() -> None:
    model = _model().double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    fast, n = fold_batchnorm(model, x[:1])
    assert fast is not model
    assert n == 3 + 3  # three BN pairs; paddings of stem, dw (uneven) and the explicit pad
    kinds = {name: type(m).__name__ for name, m in fast.named_modules()}
    assert kinds["bn0"] == kinds["bn1"] == kinds["bn2"] == kinds["pad"] == "Identity"
    assert kinds["stem.static_padding"] == kinds["dw.static_padding"] == "Identity"
    assert fast.dw.kernel_size == (6, 6) and fast.dw.padding == (2, 2)  # (1, 2) padding, k 5
    assert fast.act.inplace and not model.act.inplace
    assert all(not p.requires_grad for p in fast.parameters())

    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = model(xa), fast(xb)
    torch.testing.assert_close(yb, ya, rtol=1e-10, atol=1e-10)
    ya[:, 1].sum().backward()
    yb[:, 1].sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-10, atol=1e-10)
    # the original keeps its modules and bit-identical weights
    assert isinstance(model.bn0, nn.BatchNorm2d) and isinstance(model.stem.static_padding, nn.ZeroPad2d)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_kept_layer_output_is_unchanged() -> None:
    model = _model()
    x = torch.randn(2, 3, 32, 32)
    fast, _ = fold_batchnorm(model, x[:1], keep=("dw",))
    assert isinstance(fast.bn1, nn.BatchNorm2d)  # dw's output is the bottleneck: not folded
    assert isinstance(fast.bn0, nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(layer_output(fast, "dw", x), layer_output(model, "dw", x))
        # a folded BN under its old name still gives the BN's output
        torch.testing.assert_close(layer_output(fast, "bn0", x), layer_output(model, "bn0", x),
                                   rtol=1e-5, atol=1e-5)


class SharedConvOutput(nn.Module):
    """The convolution's output is read by the BN *and* by the residual: not foldable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return self.fc((self.bn(h) + h).mean((2, 3)))


def test_a_wrong_fold_is_caught_by_the_probe_and_the_model_is_used() -> None:
    torch.manual_seed(0)
    model = _with_running_stats(SharedConvOutput())
    x = torch.randn(1, 3, 16, 16)
    assert foldable_pairs(model, x) == [("conv", "bn")]  # hooks cannot see the second reader
    with pytest.warns(UserWarning, match="using the model unchanged"):
        fast, n = fold_batchnorm(model, x)
    assert fast is model and n == 0


class ActOnSharedBN(nn.Module):
    """ReLU reads a BN output that the residual also reads: in place would be wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.act = nn.ReLU()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.conv(x))
        return self.fc((self.act(h) + h).mean((2, 3)))


def test_in_place_activation_is_dropped_when_it_would_change_the_output() -> None:
    torch.manual_seed(0)
    model = _with_running_stats(ActOnSharedBN())
    x = torch.randn(2, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast, n = fold_batchnorm(model, x[:1])
    assert n == 1 and isinstance(fast.bn, nn.Identity) and not fast.act.inplace
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-5, atol=1e-5)


def test_models_without_batch_norm_or_padding_are_not_copied() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 8, 8))
    fast, n = fold_batchnorm(model.eval(), torch.zeros(1, 3, 8, 8))
    assert fast is model and n == 0


def test_dense_convolutions_keep_uneven_padding() -> None:
    """A larger kernel would cost a dense convolution 16/9 the work: only cheap ones absorb it."""
    model = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(16, 16, 3, 2), nn.Flatten(),
                          nn.Linear(16 * 8 * 8, 2)).eval()
    fast, n = fold_batchnorm(model, torch.randn(1, 16, 16, 16))
    assert fast is model and n == 0


def test_inputiba_on_a_float64_batchnorm_cnn_folded_or_not_gives_the_same_maps() -> None:
    """Float64, so that three chained optimisations (Adam at lr 1 amplifies rounding noise)
    show the folded network computes the same function. Float64 models also failed before:
    the WGAN critic was always float32."""
    torch.manual_seed(0)
    model = _with_running_stats(SmallCNN(num_classes=4)).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    estimation = [torch.randn(16, 3, 32, 32, dtype=torch.float64)]
    settings = dict(feat_steps=3, gan_epochs=1, gan_dataset_size=16, gan_subset_size=8,
                    gan_batch_size=8, input_steps=4, input_draws=2, feat_draws=2)
    res = {}
    for fold in (True, False):
        ex = InputIBA(model, "features.1", fold_batchnorm=fold, **settings)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few estimation samples
            ex.estimate(estimation, progress=False)
        res[fold] = ex.attribute(x, target=[0, 1], return_details=True)
    assert res[True].attribution.dtype == torch.float64
    for key in ("feature_map", "gan_mask", "attribution"):
        a, b = getattr(res[True], key), getattr(res[False], key)
        assert (a - b).abs().max() < 1e-9, key
    assert isinstance(model.features[0][1], nn.BatchNorm2d)


class DictOutput(nn.Module):
    def __init__(self, wrapped: nn.Module, key: str) -> None:
        super().__init__()
        self.net, self.key = wrapped, key

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self.key: self.net(x)}


def test_outputs_are_checked_as_logits_of_a_mapping_or_not_folded_at_all() -> None:
    x = torch.randn(1, 3, 32, 32)
    fast, n = fold_batchnorm(DictOutput(_model(), "logits").eval(), x)
    assert n == 6 and isinstance(fast.net.bn0, nn.Identity)
    torch.testing.assert_close(fast(x)["logits"], fast.net(x))
    # an output the check cannot read: the model runs unchanged
    unreadable = DictOutput(_model(), "scores").eval()
    fast, n = fold_batchnorm(unreadable, x)
    assert fast is unreadable and n == 0
