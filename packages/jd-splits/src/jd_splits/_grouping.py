"""Random grouping of objectives into near-equal buckets, reproducible from (seed, step)."""

from __future__ import annotations

import torch
from torch import Tensor

_MASK64 = (1 << 64) - 1


def step_seed(seed: int, step: int) -> int:
    """A 63-bit seed for training step `step` of a run seeded with `seed` (SplitMix64), so
    neighbouring steps or seeds do not give correlated streams."""
    z = (seed * 0x9E3779B97F4A7C15 + step + 1) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


def random_buckets(count: int, groups: int, generator: torch.Generator) -> Tensor:
    """Bucket of each of `count` objectives among `min(groups, count)` buckets whose sizes
    differ by at most one, assigned by a random permutation (int64, on the CPU)."""
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    buckets = min(groups, count)
    permutation = torch.randperm(count, generator=generator)
    bucket_of_rank = torch.arange(count) * buckets // max(count, 1)
    assignment = torch.empty(count, dtype=torch.long)
    assignment[permutation] = bucket_of_rank
    return assignment
