"""Per-sample random streams: sample ``i`` of a batch draws from its own generator.

With one generator per sample, a sample's noise (and therefore its map) does not depend on
which other samples share its batch, so a batched run equals running the samples one by one.
For sequences padded to the batch's longest one, the padded length would still change how many
values each draw takes from a stream; given the real-token mask, :class:`SampleRNG` draws
sequence noise for the real tokens only, so that it does not.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from inputiba.errors import ConfigError, InputError

__all__ = ["SampleRNG", "ensemble_seeds", "run_base_seeds", "sample_seeds"]


def sample_seeds(seed: int | Sequence[int] | None, batch: int) -> list[int]:
    """Seeds per sample: an int gives ``seed + i``; a sequence is used as is; None draws seeds."""
    if seed is None:
        return [int(s) for s in torch.randint(0, 2**62, (batch,))]
    if isinstance(seed, int):
        return [seed + i for i in range(batch)]
    seeds = [int(s) for s in seed]
    if len(seeds) != batch:
        raise ConfigError(f"Got {len(seeds)} seeds for a batch of {batch} samples")
    return seeds


def ensemble_seeds(seed: int | Sequence[int] | None, batch: int, members: int) -> list[int]:
    """Seeds of ``members`` runs per sample, sample-major (``batch * members`` seeds).

    Member ``k`` of sample ``i`` gets ``s_i + k``, where ``s_i`` is sample ``i``'s base seed: a
    sequence gives the base seeds as they are; an int gives ``seed + i * members`` (so that no
    two runs of the batch share a seed); None draws them. ``members=1`` gives
    :func:`sample_seeds`.
    """
    if members < 1:
        raise ConfigError(f"members must be >= 1, got {members}")
    if isinstance(seed, int):
        base = run_base_seeds(seed, range(batch), members)
    else:
        base = sample_seeds(seed, batch)
    return [s + k for s in base for k in range(members)]


def run_base_seeds(seed: int, indices: Sequence[int], members: int = 1) -> list[int]:
    """Base seeds of the items at ``indices`` of a run done in chunks: ``seed + i * members``.

    Item ``i``'s ``members`` ensemble runs use ``base + k`` (:func:`ensemble_seeds` with a
    sequence), so no two runs of the whole run share a seed, however it is chunked; with
    ``members=1`` item ``i`` uses ``seed + i``.
    """
    if members < 1:
        raise ConfigError(f"members must be >= 1, got {members}")
    return [seed + int(i) * members for i in indices]


class SampleRNG:
    """A ``torch.Generator`` per sample; every draw returns a (B, *shape) tensor.

    Args:
        seeds: one seed per sample.
        device: device of the generators and of the returned tensors.
        token_mask: for a batch of padded sequences, the (B, T) mask of real tokens. Then a
            :meth:`randn` draw whose second dimension is T (``(n, T, ...)``: noise per token)
            takes from sample ``b``'s stream only ``n * L_b * ...`` values, for its ``L_b`` real
            tokens, and is zero at padding: a sample's noise does not depend on how long its
            batch neighbours are, nor on which side it is padded.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu",
                 token_mask: torch.Tensor | None = None) -> None:
        self.device = torch.device(device)
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]
        if token_mask is not None and token_mask.shape[0] != len(self.generators):
            raise InputError(f"token_mask has {token_mask.shape[0]} rows for "
                             f"{len(self.generators)} seeds")
        self.token_mask = None if token_mask is None else token_mask.to(self.device).bool()

    def __len__(self) -> int:
        return len(self.generators)

    def select(self, indices: Sequence[int]) -> SampleRNG:
        """The streams of the samples at ``indices`` (the same generators, not copies: a draw
        from the selection advances these samples' streams here too)."""
        out = SampleRNG.__new__(SampleRNG)
        out.device = self.device
        out.generators = [self.generators[i] for i in indices]
        out.token_mask = None if self.token_mask is None else self.token_mask[list(indices)]
        return out

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        mask = self.token_mask
        if mask is not None and len(shape) >= 2 and shape[1] == mask.shape[1]:
            out = torch.zeros(len(self.generators), *shape, device=self.device, dtype=dtype)
            for b, g in enumerate(self.generators):
                real = (shape[0], int(mask[b].sum()), *shape[2:])
                out[b][:, mask[b]] = torch.randn(real, generator=g, device=self.device,
                                                 dtype=dtype)
            return out
        return torch.stack(
            [torch.randn(shape, generator=g, device=self.device, dtype=dtype) for g in self.generators]
        )

    def rand(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.stack(
            [torch.rand(shape, generator=g, device=self.device, dtype=dtype) for g in self.generators]
        )

    def randperm(self, n: int) -> torch.Tensor:
        return torch.stack(
            [torch.randperm(n, generator=g, device=self.device) for g in self.generators]
        )

    def seed_module(self, index: int) -> int:
        """A seed drawn from sample ``index``'s stream (to initialise its own parameters)."""
        g = self.generators[index]
        return int(torch.randint(0, 2**62, (1,), generator=g, device=self.device).item())
