"""Fresh non-linearities for the gradient methods that replace ReLU's backward pass.

Guided Backprop and DeepSHAP (Captum) override the backward of every ``nn.ReLU`` module; a model
that reuses one ReLU module at several places, calls ``F.relu`` or uses ReLU6 would be explained
wrongly. :func:`fresh_nonlinearities` returns a copy where each call site has its own module.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from inputiba.errors import ModelError

__all__ = ["fresh_nonlinearities"]

# ---------------------------------------------------------------------------------------------
# fresh nonlinearities for DeepLift / Guided Backprop


class _ReLU6AsReLUs(nn.Module):
    """``relu6(x) = relu(x) - relu(x - 6)`` with two ReLU modules, so that Captum's DeepLift and
    Guided Backprop (which only know ``nn.ReLU``) apply their rules to it exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.low = nn.ReLU()
        self.high = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.low(x) - self.high(x - 6.0)


_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu_}
_RELU6_FUNCTIONS = {F.relu6}
_NONLINEAR_MODULES = (nn.ReLU, nn.ReLU6, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus)
_UNSUPPORTED_MODULES = (nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish, nn.Hardtanh, nn.Hardsigmoid)


def _fresh_module(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.ReLU6):
        return _ReLU6AsReLUs()
    if isinstance(module, nn.ReLU):
        return nn.ReLU()
    new = copy.deepcopy(module)
    if hasattr(new, "inplace"):
        new.inplace = False
    return new


def fresh_nonlinearities(model: nn.Module) -> nn.Module:
    """A copy of ``model`` where every *call* of a nonlinearity has its own, non-inplace module.

    Captum's DeepLift/DeepLiftShap and Guided Backprop override the backward pass of
    ``nn.ReLU`` (and a few other) *modules*. A module called twice in one forward pass (e.g.
    ``self.relu`` reused in a ResNet block, or EfficientNet's shared ``_swish``) and functional
    calls (``F.relu``, ``torch.relu``, ``x.relu()``) break that silently. This traces the model
    with :mod:`torch.fx` and gives each call site a fresh module; ``ReLU6`` becomes
    ``relu(x) - relu(x - 6)`` with two ReLUs. The original model is not modified.

    Raises:
        ValueError: the model cannot be traced *and* reuses a nonlinearity module (the message
            names the reused modules); untraceable models without reuse are returned as a deep
            copy with a warning that functional ReLUs cannot be checked.
    """
    model = copy.deepcopy(model).eval()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - untraceable: fall back to checking for reuse
        reused = _reused_nonlinearities(model)
        if reused:
            raise ModelError(
                f"{type(model).__name__} calls the nonlinearity module(s) {', '.join(reused)} "
                "more than once per forward pass, which breaks DeepLift/Guided Backprop, and it "
                f"cannot be traced with torch.fx to fix that ({type(exc).__name__}: "
                f"{str(exc)[:120]}). Give every activation call its own nn.ReLU module."
            ) from exc
        warnings.warn(
            f"{type(model).__name__} cannot be traced with torch.fx; functional ReLU calls (if "
            "any) are invisible to DeepLift/Guided Backprop and get plain gradients.",
            stacklevel=2,
        )
        return model
    modules = dict(gm.named_modules())
    unsupported: set[str] = set()
    count = 0
    for node in list(gm.graph.nodes):
        new: nn.Module | None = None
        if node.op == "call_module":
            mod = modules[node.target]
            if isinstance(mod, _NONLINEAR_MODULES):
                new = _fresh_module(mod)
            elif isinstance(mod, _UNSUPPORTED_MODULES):
                unsupported.add(type(mod).__name__)
        elif node.op == "call_function" and node.target in _RELU_FUNCTIONS:
            new = nn.ReLU()
        elif node.op == "call_function" and node.target in _RELU6_FUNCTIONS:
            new = _ReLU6AsReLUs()
        elif node.op == "call_method" and node.target in ("relu", "relu_"):
            new = nn.ReLU()
        if new is None:
            continue
        name = f"_fresh_nonlinearity_{count}"
        count += 1
        gm.add_submodule(name, new)
        with gm.graph.inserting_after(node):
            replacement = gm.graph.call_module(name, (node.args[0],))
        node.replace_all_uses_with(replacement)
        gm.graph.erase_node(node)
    if unsupported:
        warnings.warn(
            f"Captum's DeepLift/Guided Backprop have no rule for {', '.join(sorted(unsupported))}; "
            "plain gradients pass through them.",
            stacklevel=2,
        )
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return gm.eval()


def _reused_nonlinearities(model: nn.Module, size: int = 32) -> list[str]:
    """Nonlinearity modules called more than once in a forward pass (needs a probe input)."""
    calls: dict[str, int] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, _NONLINEAR_MODULES):

            def hook(*_a: Any, name: str = name) -> None:
                calls[name] = calls.get(name, 0) + 1

            handles.append(mod.register_forward_hook(hook))
    probe = _probe_input(model, size)
    try:
        if probe is not None:
            with torch.no_grad():
                model(probe)
    except Exception:  # noqa: BLE001 - the probe shape may not fit; then we cannot tell
        calls.clear()
    finally:
        for h in handles:
            h.remove()
    return sorted(n for n, c in calls.items() if c > 1)


def _probe_input(model: nn.Module, size: int) -> torch.Tensor | None:
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            p = next(model.parameters())
            return torch.zeros(1, mod.in_channels, size, size, device=p.device, dtype=p.dtype)
    return None


