"""Learning-rate schedule: linear warm-up, then cosine decay to `min_ratio` x the base."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate at `step` (0 at step 0 when warming up).

    `min_ratio` 1.0 gives a constant rate after warm-up, as TRM's ARC runs use.
    """
    if step < warmup_steps:
        return step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(progress, 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: Optimizer, *, warmup_steps: int, total_steps: int, min_ratio: float
) -> LambdaLR:
    """The multiplier of optimizer step i (1-based, as TRM counts) is
    `warmup_cosine(i)`: the first step already moves, at `1 / warmup_steps` of the rate."""
    return LambdaLR(
        optimizer,
        lambda index: warmup_cosine(
            index + 1, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=min_ratio
        ),
    )
