"""Running a dataset job on several processes or GPUs (torchrun) and at lower precision: the rank's
share of the items, barriers and gathers (:class:`DistributedContext`), and autocast around the
explainer (:func:`accelerated`)."""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from inputiba.workflows.explain import (
    ExplainError,
)

#: ``precision`` values: full float32, or autocast to bfloat16 / float16.
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class DistributedContext:
    """Rank, world size and device of this process.

    ``from_environment`` joins the group ``torchrun`` describes (``WORLD_SIZE`` > 1 in the
    environment), or uses an already initialised group; otherwise one process, rank 0.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_environment(cls, device: str | None) -> DistributedContext:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(),
                       int(os.environ.get("LOCAL_RANK", dist.get_rank())))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_available():
            raise ExplainError("WORLD_SIZE > 1 but this torch has no torch.distributed")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
        if cuda:
            torch.cuda.set_device(local)
        # the final barrier waits for the slowest shard: allow long runs
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(days=7))
        return cls(dist.get_rank(), dist.get_world_size(), local, initialised_here=True)

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (a list on every rank)."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self, wait: bool = True) -> None:
        """Destroy the process group if it was made here; with ``wait`` (a run that finished
        on this rank), first wait until every rank is here: a rank that tore its connections
        down while another was still finishing its last collective made that one abort
        ("terminate called without an active exception", SIGABRT, about 1 run in 6 under
        load). A rank that failed does not wait (the others may never come)."""
        if self.initialised_here:
            import torch.distributed as dist

            if wait:
                dist.barrier()
            dist.destroy_process_group()


@contextlib.contextmanager
def accelerated(explainer: Any, precision: str = "fp32", device: str | torch.device = "cpu",
                channels_last: bool = False) -> Iterator[None]:
    """Run the explainer's network in reduced precision and/or channels-last memory format,
    while everything InputIBA optimises stays float32.

    ``torch.autocast`` covers the forward passes; a hook turns the bottleneck layer's output
    back into a float32, contiguous (NCHW) tensor, so stage 1's alpha, the features stage 2's
    critic sees and every loss are float32, and only the network's own layers run in
    ``bfloat16`` / ``float16`` and/or channels-last. The model's weights are converted to
    channels-last for the duration and back afterwards.

    Args:
        explainer: an :class:`inputiba.InputIBA` (``.module`` is the bottleneck layer).
        precision: a key of :data:`PRECISIONS` (``"fp32"``: no autocast).
        device: where the model runs (autocast's device type).
        channels_last: channels-last weights (faster convolutions on recent GPUs).
    """
    if precision not in PRECISIONS:
        raise ExplainError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None and not channels_last:
        yield
        return

    def to_float(_m: nn.Module, _i: Any, out: Any) -> Any:
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            return out.float().contiguous()
        return out

    handle = explainer.module.register_forward_hook(to_float)
    # the hooks of layer_output (stage 2) must see the converted output: run this one first
    explainer.module._forward_hooks.move_to_end(handle.id, last=False)
    if channels_last:
        explainer.model.to(memory_format=torch.channels_last)
    try:
        with torch.autocast(torch.device(device).type, dtype=dtype or torch.float32,
                            enabled=dtype is not None):
            yield
    finally:
        handle.remove()
        if channels_last:
            explainer.model.to(memory_format=torch.contiguous_format)
