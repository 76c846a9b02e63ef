"""inputiba's errors: every error raised on purpose is an :class:`InputIBAError` and still the
built-in exception callers catch, in every layer (core, methods, metrics, models, data)."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import inputiba.errors as errors
from inputiba.errors import InputIBAError

SRC = Path(__file__).resolve().parents[1] / "src" / "inputiba"
BUILTIN_ERRORS = {name for name in dir(builtins)
                  if isinstance(getattr(builtins, name), type)
                  and issubclass(getattr(builtins, name), BaseException)}


def _bare_raises(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of each ``raise`` of a built-in exception outside the allowed places: an
    abstract method's ``NotImplementedError`` and a module ``__getattr__``'s
    ``AttributeError`` (Python's protocol)."""
    found = []
    for func in [tree, *[n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]]:
        body = func.body if isinstance(func, ast.FunctionDef) else [
            n for n in func.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        for node in (n for stmt in body for n in ast.walk(stmt)):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = exc.id if isinstance(exc, ast.Name) else getattr(exc, "attr", None)
            if name not in BUILTIN_ERRORS or name == "NotImplementedError":
                continue
            if name == "AttributeError" and getattr(func, "name", "") == "__getattr__":
                continue
            found.append((node.lineno, name))
    return found


def test_no_bare_builtin_error_is_raised():
    bad = [f"{path.relative_to(SRC)}:{line}: raise {name}"
           for path in sorted(SRC.rglob("*.py"))
           for line, name in _bare_raises(ast.parse(path.read_text()))]
    assert bad == [], "raise inputiba's own errors (inputiba.errors):\n" + "\n".join(sorted(set(bad)))


def test_the_scan_finds_a_bare_raise():
    tree = ast.parse("def f(x):\n    if x:\n        raise ValueError('bad')\n"
                     "    raise NotImplementedError\n"
                     "def __getattr__(name):\n    raise AttributeError(name)\n"
                     "raise KeyError('k')\n")
    assert sorted(_bare_raises(tree)) == [(3, "ValueError"), (7, "KeyError")]


@pytest.mark.parametrize(("name", "builtin"), [
    ("ConfigError", ValueError), ("UnknownSettingError", TypeError),
    ("LayerNotFoundError", KeyError), ("ModelNotFoundError", FileNotFoundError),
    ("DataNotFoundError", FileNotFoundError), ("StatisticsError", RuntimeError),
    ("ArgumentTypeError", TypeError), ("ModelError", RuntimeError), ("ModelError", ValueError),
    ("MissingExtraError", ImportError), ("AssetError", RuntimeError),
    ("UnknownNameError", KeyError), ("UnknownNameError", ValueError),
])
def test_each_error_is_also_its_builtin(name, builtin):
    cls = getattr(errors, name)
    assert issubclass(cls, InputIBAError) and issubclass(cls, builtin)


def test_every_listed_error_derives_from_the_base():
    listed = [getattr(errors, n) for n in errors.__all__]
    assert all(issubclass(c, InputIBAError) for c in listed if not issubclass(c, Warning))
    assert errors.InputIBAWarning in listed


class _Skips(nn.Module):
    """A model whose ``unused`` layer is never called in the forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.unused = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


def test_core_errors():
    from inputiba.core.functional import gaussian_kernel_1d, gaussian_smooth, reduce_members
    from inputiba.core.layers import layer_output

    with pytest.raises(errors.InputError, match=r"\(N, C, H, W\)"):
        gaussian_smooth(torch.zeros(3, 3), 1.0)
    with pytest.raises(errors.ConfigError, match="sigma must be positive"):
        gaussian_kernel_1d(-1.0)
    with pytest.raises(errors.ConfigError, match="not whole ensembles of 2"):
        reduce_members(torch.zeros(3, 4, 4), 2, "mean")
    with pytest.raises(errors.ModelError, match="not called") as info:
        layer_output(_Skips(), "unused", torch.zeros(1, 3, 8, 8))
    assert isinstance(info.value, RuntimeError)


def test_method_errors():
    from inputiba import InputIBA
    from inputiba.methods import get_explainer

    with pytest.raises(errors.ArgumentTypeError, match="nn.Module") as info:
        InputIBA("resnet", "layer1")  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError)
    with pytest.raises(errors.ConfigError, match="Unknown attribution method 'gradcamm'"):
        get_explainer("gradcamm", _Skips())


def test_metric_errors():
    from inputiba.metrics.functional import deletion, mass_in_box

    model = _Skips().eval()
    x = torch.rand(2, 3, 8, 8)
    maps = torch.rand(2, 8, 8)
    with pytest.raises(errors.ConfigError, match="step must be"):
        deletion(model, x, [0, 1], maps, step=1.5)
    with pytest.raises(errors.TargetError, match="3 entries for a batch of 2"):
        deletion(model, x, [0, 1, 0], maps)
    with pytest.raises(errors.InputError, match="do not match inputs"):
        deletion(model, x, [0, 1], maps[:, :4])
    with pytest.raises(errors.InputError, match="non-negative"):
        mass_in_box(-np.ones((8, 8)), np.array([[0, 0, 4, 4]]))


def test_data_and_model_errors(tmp_path):
    from inputiba.data.assets import builtin_photos
    from inputiba.models.image import load_model, load_weights

    with pytest.raises(errors.UnknownNameError, match="choose from") as info:
        builtin_photos(["chelsee"])
    assert isinstance(info.value, KeyError) and not str(info.value).startswith("'")
    with pytest.raises(errors.ModelNotFoundError, match="does not exist") as missing:
        load_weights(_Skips(), tmp_path / "none.pt")
    assert isinstance(missing.value, FileNotFoundError)
    with pytest.raises(errors.ModelNotFoundError, match="Cannot import"):
        load_model("no_such_module_xyz:factory")


def test_a_layer_without_a_feature_map_is_named():
    """Grad-CAM and InputIBA at a layer with a (B, classes) output: one error naming the
    layer and its shape (it was torch's interpolate error, and a critic 'too small')."""
    from tests._tiny_model import factory

    from inputiba import InputIBA
    from inputiba.methods import get_explainer

    net, _, _ = factory()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(errors.ModelError, match=r"layer '8' gives \(1, 5\)"):
        get_explainer("gradcam", net, layer="8").attribute(x, target=0)
    assert get_explainer("gradcam", net, layer="3").attribute(x, target=0).shape == (2, 1, 64, 64)
    with pytest.raises(errors.ModelError, match=r"shape \(5,\) per sample"):
        InputIBA(net, "8").estimate([x], progress=False)
