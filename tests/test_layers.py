import pytest
import torch
import torchvision
from torch import nn

from inputiba.core.layers import (
    LayerNotFoundError,
    LayerSplit,
    get_layer,
    layer_output,
    replace_output,
)


def test_unknown_layer_lists_close_matches():
    model = torchvision.models.resnet18()
    with pytest.raises(LayerNotFoundError) as err:
        get_layer(model, "layer2.0.conv")
    msg = str(err.value)
    assert "'layer2.0.conv'" in msg and "layer2.0.conv1" in msg


def test_layer_output_stops_after_the_layer():
    calls = []
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    model[2].register_forward_hook(lambda *a: calls.append(1))
    out = layer_output(model, "1", torch.randn(3, 4))
    assert out.shape == (3, 4) and calls == []
    assert not model[1]._forward_hooks  # our hook is gone


@pytest.mark.parametrize("layer", ["layer2", "layer2.0.conv1", "layer3.1.bn2"])
def test_split_reproduces_the_model_with_skip_connections(layer):
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 64, 64)
    split = LayerSplit(model, layer)
    assert split.traced
    with torch.no_grad():
        r, ctx = split.head(x)
        assert torch.allclose(split.tail(r, ctx), model(x), atol=1e-5)
        # a modified R gives the same output as replacing R by a hook in the full model
        with replace_output(get_layer(model, layer), lambda o: o * 0.5):
            ref = model(x)
        assert torch.allclose(split.tail(r * 0.5, ctx), ref, atol=1e-5)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 2)

    def forward(self, x):
        h = self.a(x)
        if h.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
            h = h * 2
        return self.b(h)


def test_split_falls_back_when_untraceable():
    model = Untraceable().eval()
    with pytest.warns(UserWarning, match="could not be traced"):
        split = LayerSplit(model, "a")
    assert not split.traced
    x = torch.randn(4, 3)
    with torch.no_grad():
        r, ctx = split.head(x)
        assert torch.allclose(split.tail(r, ctx), model(x))
    assert not model.a._forward_hooks
