"""A private, faster copy of a frozen classifier for the optimisation loops.

Attribution runs the same frozen network thousands of times (stage 2 alone makes about 5,000
image passes per sample at the paper's settings). Profiles of EfficientNet-Lite0 up to
``_blocks.5`` on a CPU showed the convolutions taking under half of a forward+backward pass;
the rest went to passes over memory that a frozen network does not need:

* in eval mode a BatchNorm layer is a fixed per-channel affine map, so when it reads a
  convolution's output directly it folds into that convolution's weights and bias;
* a zero-padding module in front of a convolution copies the whole activation, while the
  convolution can pad by itself;
* an activation that reads such a folded output can run in place.

:func:`fold_batchnorm` finds these by running the model once on a probe input with hooks (so
it works for models that :mod:`torch.fx` cannot trace), applies them to a deep copy, and checks
the copy against the original on the probe. The original model is never modified.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from inputiba.core.layers import _first_tensor, _probe_with_hooks

__all__ = ["fold_batchnorm", "foldable_pairs"]


def _is_foldable_bn(m: nn.Module) -> bool:
    return (
        isinstance(m, nn.BatchNorm2d)
        and not m.training
        and m.track_running_stats
        and m.running_mean is not None
        and m.running_var is not None
    )


def foldable_pairs(
    model: nn.Module, probe: torch.Tensor, keep: tuple[str, ...] = ()
) -> list[tuple[str, str]]:
    """``(convolution, batch norm)`` names where the batch norm reads that convolution's output.

    Found by running ``model(probe)`` once under ``torch.no_grad`` with forward hooks. A pair
    counts when both modules ran exactly once, the batch norm is in eval mode with running
    statistics, and its input is the very tensor the convolution returned.

    Args:
        model: the network (in eval mode).
        probe: one input batch, e.g. the first sample to explain.
        keep: names of modules whose output must stay exactly as it is (the bottleneck
            layer): a convolution listed here is not folded.
    """
    conv_out: dict[int, tuple[str, torch.Tensor]] = {}
    calls: dict[str, int] = {}
    found: list[tuple[str, str]] = []
    handles = []

    def on_conv(name: str) -> Any:
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            if isinstance(out, torch.Tensor):
                conv_out[id(out)] = (name, out)  # holding the tensor keeps its id unique

        return hook

    def on_bn(name: str) -> Any:
        def hook(_m: nn.Module, inp: Any, _out: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            src = conv_out.get(id(inp[0])) if inp else None
            if src is not None and src[1] is inp[0]:
                found.append((src[0], name))

        return hook

    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and not isinstance(m, nn.ConvTranspose2d):
            handles.append(m.register_forward_hook(on_conv(name)))
        elif _is_foldable_bn(m):
            handles.append(m.register_forward_hook(on_bn(name)))
    _probe_with_hooks(model, probe, handles)
    return [
        (c, b) for c, b in found
        if calls.get(c) == 1 and calls.get(b) == 1 and c not in keep
    ]


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    shift = -bn.running_mean.double() * scale
    if bn.affine:
        scale = scale * bn.weight.double()
        shift = shift * bn.weight.double() + bn.bias.double()
    w = conv.weight
    conv.weight = nn.Parameter(
        (w.double() * scale.view(-1, *([1] * (w.dim() - 1)))).to(w.dtype), requires_grad=False
    )
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    conv.bias = nn.Parameter((bias * scale + shift).to(w.dtype), requires_grad=False)


def _zero_pad(m: nn.Module) -> tuple[int, int, int, int] | None:
    """(left, right, top, bottom) of a constant-zero 2-d padding module, else None."""
    if isinstance(m, (nn.ZeroPad2d, nn.ConstantPad2d)) and float(m.value) == 0.0:
        pad = tuple(int(v) for v in m.padding)
        if len(pad) == 4 and min(pad) >= 0:
            return pad  # type: ignore[return-value]
    return None


def _can_absorb(conv: nn.Conv2d, pad: tuple[int, int, int, int]) -> bool:
    if conv.padding_mode != "zeros" or tuple(conv.dilation) != (1, 1):
        return False
    if isinstance(conv.padding, str) or tuple(conv.padding) != (0, 0):
        return False
    left, right, top, bottom = pad
    if left == right and top == bottom:
        return True
    # uneven padding costs a larger kernel: only where the kernel is cheap (depthwise, few inputs)
    return conv.in_channels // conv.groups <= 4


@torch.no_grad()
def _absorb_padding(conv: nn.Conv2d, pad: tuple[int, int, int, int]) -> None:
    """Make ``conv(x)`` equal ``conv(zero_pad(x, pad))``.

    The convolution pads ``max`` of each side pair by itself; the side that needs less gets
    that many zero taps in front of (or behind) the kernel, so every output reads the same
    inputs with the same weights as before.
    """
    left, right, top, bottom = pad
    ph, pw = max(top, bottom), max(left, right)
    w = torch.nn.functional.pad(conv.weight, (pw - left, pw - right, ph - top, ph - bottom))
    conv.weight = nn.Parameter(w, requires_grad=False)
    conv.kernel_size = tuple(w.shape[-2:])
    conv.padding = (ph, pw)


def _pad_pairs(model: nn.Module, probe: torch.Tensor, keep: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(padding, convolution)`` names where the convolution reads the padding's output.

    Either the padding module's output is the convolution module's input, or the padding is a
    child of a convolution subclass that pads its input first ("same" padding convolutions
    such as EfficientNet's ``Conv2dStaticSamePadding``); the probe check of
    :func:`fold_batchnorm` confirms the second case.
    """
    mods = dict(model.named_modules())
    pad_out: dict[int, tuple[str, torch.Tensor]] = {}
    calls: dict[str, int] = {}
    found: list[tuple[str, str]] = []
    handles = []

    def count(name: str) -> None:
        calls[name] = calls.get(name, 0) + 1

    def on_pad(name: str) -> Any:
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            count(name)
            pad_out[id(out)] = (name, out)

        return hook

    def on_conv(name: str) -> Any:
        def hook(_m: nn.Module, inp: Any, _out: Any) -> None:
            count(name)
            src = pad_out.get(id(inp[0])) if inp else None
            if src is not None and src[1] is inp[0]:
                found.append((src[0], name))

        return hook

    convs = {n: m for n, m in mods.items()
             if isinstance(m, nn.Conv2d) and not isinstance(m, nn.ConvTranspose2d)}
    for name, m in mods.items():
        if _zero_pad(m) is not None:
            handles.append(m.register_forward_hook(on_pad(name)))
        elif name in convs:
            handles.append(m.register_forward_hook(on_conv(name)))
    _probe_with_hooks(model, probe, handles)
    for name, conv in convs.items():
        children = [(f"{name}.{c}", m) for c, m in conv.named_children()]
        if len(children) == 1 and _zero_pad(children[0][1]) is not None:
            found.append((children[0][0], name))
    return [
        (p, c) for p, c in found
        if calls.get(p) == 1 and calls.get(c) == 1 and p not in keep and c not in keep
        and _can_absorb(convs[c], _zero_pad(mods[p]))  # type: ignore[arg-type]
    ]


_INPLACE_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.ELU, nn.SiLU,
                        nn.Hardswish, nn.Hardsigmoid, nn.Mish)


def _inplace_activations(
    model: nn.Module, probe: torch.Tensor, sources: set[str], keep: tuple[str, ...]
) -> list[str]:
    """Activation modules that, every time they run, read the output of a batch norm in
    ``sources`` (the ones being folded, so in the copy: a convolution's output).

    Those may run in place in the folded copy: nothing else reads a tensor that only went
    from a convolution into a batch norm (the probe check confirms it), and a convolution's
    input gradient does not need its output. Excluded: activations whose input was made before
    a ``keep`` layer ran and who run after it, because a split at that layer reuses such a
    tensor (a skip connection) across optimisation steps.
    """
    produced: dict[int, tuple[torch.Tensor, int]] = {}
    verdict: dict[str, bool] = {}
    kept = [0]
    handles = []

    def on_source(_m: nn.Module, _i: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            produced[id(out)] = (out, kept[0])

    def on_keep(_m: nn.Module, _i: Any, _out: Any) -> None:
        kept[0] += 1

    def on_act(name: str) -> Any:
        def hook(_m: nn.Module, inp: Any) -> None:
            src = produced.get(id(inp[0])) if inp else None
            ok = src is not None and src[0] is inp[0] and src[1] == kept[0]
            verdict[name] = verdict.get(name, True) and ok

        return hook

    for name, m in model.named_modules():
        if name in keep:
            handles.append(m.register_forward_hook(on_keep))
        if name in sources:
            handles.append(m.register_forward_hook(on_source))
        elif isinstance(m, _INPLACE_ACTIVATIONS) and not getattr(m, "inplace", True):
            handles.append(m.register_forward_pre_hook(on_act(name)))
    _probe_with_hooks(model, probe, handles)
    return [n for n, ok in verdict.items() if ok]


def fold_batchnorm(
    model: nn.Module,
    probe: torch.Tensor,
    keep: tuple[str, ...] = (),
    rtol: float = 1e-4,
) -> tuple[nn.Module, int]:
    """A frozen copy of ``model`` (eval mode) with batch norms and paddings folded into
    convolutions.

    * Every eval-mode ``BatchNorm2d`` that reads a convolution's output directly (see
      :func:`foldable_pairs`) is folded into that convolution (computed in float64) and
      replaced by ``nn.Identity`` under the same name, so dotted layer names still resolve and
      a hook on a folded batch norm sees the same values as before.
    * Every zero-padding module that feeds a convolution is replaced by ``nn.Identity`` and
      the convolution pads by itself (uneven "same" padding: by a kernel one tap larger,
      only for depthwise-like convolutions where that is cheap). Copying each padded
      activation was a fifth of EfficientNet's CPU time.
    * Activations (ReLU, ReLU6, ...) that read a folded batch norm's output run in place.

    All parameters of the copy have ``requires_grad=False``. The copy is checked on
    ``probe``: if its output differs from the original's by more than ``rtol`` of the
    output's scale (a convolution whose output is also read elsewhere, say), the original
    model is returned with a warning. When the output is none of a tensor, a tuple starting
    with one, or a mapping with ``"logits"``, there is nothing to check against and the model
    itself is returned.

    Args:
        model: the classifier, in eval mode; it is not modified.
        probe: one input batch (a single sample is enough).
        keep: module names whose outputs must stay exact (the bottleneck layer).
        rtol: accepted deviation on the probe, relative to the largest absolute output.

    Returns:
        ``(network, number of folded modules)``; ``network`` is ``model`` itself when nothing
        was folded.
    """
    bn_pairs = foldable_pairs(model, probe, keep)
    pad_pairs = _pad_pairs(model, probe, keep)
    if not bn_pairs and not pad_pairs:
        return model, 0
    inplace = _inplace_activations(model, probe, {b for _, b in bn_pairs} - set(keep), keep)
    with torch.no_grad():
        ref = _output_tensor(model(probe))
    if ref is None:
        return model, 0  # nothing to check a copy against: run the model itself
    err, scale = float("nan"), ref.abs().max().item() or 1.0
    # in-place activations are the least certain step: retry without them before giving up
    for acts in ([inplace, []] if inplace else [[]]):
        try:
            fast = _folded_copy(model, bn_pairs, pad_pairs, acts)
        except Exception as exc:  # noqa: BLE001 - an uncopyable model just runs unfolded
            warnings.warn(f"Could not copy {type(model).__name__} to fold batch norm ({exc}); "
                          "using the model unchanged.", stacklevel=2)
            return model, 0
        with torch.no_grad():
            out = _output_tensor(fast(probe))
        if out is None or out.shape != ref.shape:
            return model, 0
        err = (ref - out).abs().max().item()
        if err <= rtol * scale:
            return fast, len(bn_pairs) + len(pad_pairs)
    warnings.warn(
        f"Folding batch norm and padding into convolutions changed {type(model).__name__}'s "
        f"output by {err:.3g} (scale {scale:.3g}); using the model unchanged.",
        stacklevel=2,
    )
    return model, 0


def _output_tensor(out: Any) -> torch.Tensor | None:
    """The model's output tensor: itself, the first of a tuple, or ``logits`` of a mapping;
    None when it is none of these."""
    if isinstance(out, Mapping):
        out = out.get("logits")
    try:
        return _first_tensor(out)
    except TypeError:
        return None


def _folded_copy(
    model: nn.Module,
    bn_pairs: list[tuple[str, str]],
    pad_pairs: list[tuple[str, str]],
    inplace: list[str],
) -> nn.Module:
    fast = copy.deepcopy(model)
    for c, b in bn_pairs:
        _fold_into(fast.get_submodule(c), fast.get_submodule(b))
        _set_module(fast, b, nn.Identity())
    for p, c in pad_pairs:
        _absorb_padding(fast.get_submodule(c), _zero_pad(fast.get_submodule(p)))  # type: ignore[arg-type]
        _set_module(fast, p, nn.Identity())
    for name in inplace:
        fast.get_submodule(name).inplace = True
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast.eval()
