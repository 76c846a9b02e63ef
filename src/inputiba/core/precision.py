"""How the network passes of the optimisation loops run: precision and compilation.

InputIBA optimises float32 parameters (alpha, the generator's mask and noise, the critics)
through thousands of passes of a frozen network. :func:`network_pass` wraps one such pass
(a callable whose first argument is the tensor that flows through the network) so that:

* with ``precision`` ``"bf16"`` or ``"fp16"``, the network's own layers run under
  :func:`torch.autocast` and the pass returns float32: everything that is optimised, every
  loss and the critics stay float32;
* with ``"fp16"``, the gradient flowing back through the network is multiplied by
  :data:`FP16_GRAD_SCALE` at the output and divided by it again at the input, so that small
  gradients do not underflow float16's range (the gradient reaching the input is the same);
* with ``compile``, the callable is compiled with :func:`torch.compile` first (the first passes
  of each input shape then take the compile time; see the README's speed section).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from inputiba.errors import ConfigError

__all__ = ["PRECISIONS", "FP16_GRAD_SCALE", "network_pass", "compiled"]

#: The network passes' precision: the autocast dtype of each choice (None: float32, no autocast).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16,
                                              "fp16": torch.float16}

#: The constant gradient scale of float16 passes (a power of two: scaling is exact).
FP16_GRAD_SCALE = 1024.0


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by ``scale``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:  # noqa: D102
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return grad * ctx.scale, None


def compiled(fn: Callable[..., Any], enabled: bool = True) -> Callable[..., Any]:
    """``torch.compile(fn)`` with static shapes (each chunk size compiles once), or ``fn``."""
    if not enabled:
        return fn
    return torch.compile(fn, dynamic=False)


def network_pass(fn: Callable[..., torch.Tensor], precision: str = "fp32",
                 device_type: str = "cpu") -> Callable[..., torch.Tensor]:
    """``fn`` (``fn(x, *args) -> tensor``) run in ``precision``, returning ``x``'s dtype
    (float32; autocast does not touch float64 models).

    Args:
        fn: one network pass; gradients flow from its output to ``x``.
        precision: a key of :data:`PRECISIONS`.
        device_type: autocast's device type (``"cpu"``, ``"cuda"``).

    Returns:
        ``fn`` itself for ``"fp32"``; else a wrapper with the same signature.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return fn
    scale = FP16_GRAD_SCALE if dtype == torch.float16 else None

    def run(x: torch.Tensor, *args: Any) -> torch.Tensor:
        if scale is not None and x.requires_grad:
            x = _ScaleGrad.apply(x, 1.0 / scale)
        with torch.autocast(device_type, dtype=dtype):
            out = fn(x, *args)
        out = out.to(x.dtype)  # autocast leaves float64 alone: so does this
        if scale is not None and out.requires_grad:
            out = _ScaleGrad.apply(out, scale)
        return out

    return run
