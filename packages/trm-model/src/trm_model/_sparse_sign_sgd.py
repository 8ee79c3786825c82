"""SignSGD with decoupled weight decay for the rows of an embedding table."""

from __future__ import annotations

import torch
from torch import Tensor


class SparseSignSGD:
    """Update only the rows of ``table`` that received gradients, from ``(ids, grads)``.

    Per distinct id: ``g`` = the sum of that id's gradient rows, then
    ``row = row * (1 - lr * weight_decay) - lr * sign(g)``. Taking explicit ids and
    gradients (rather than reading them from a module) lets a distributed trainer
    all-gather them across ranks first, so every rank applies the same update. ``lr`` is
    a plain attribute for learning-rate schedules to set.
    """

    def __init__(self, table: Tensor, *, lr: float, weight_decay: float) -> None:
        if table.ndim != 2:
            raise ValueError(f"table must be [rows, dim], got shape {tuple(table.shape)}")
        self.table = table
        self.lr = lr
        self.weight_decay = weight_decay

    @torch.no_grad()
    def step(self, ids: Tensor, grads: Tensor) -> None:
        """Apply the update for ``ids`` (``[N]``) with their gradient rows ``grads`` (``[N, dim]``)."""
        if grads.shape != (ids.shape[0], self.table.shape[1]):
            raise ValueError(
                f"grads must be [{ids.shape[0]}, {self.table.shape[1]}] for {ids.shape[0]} ids, "
                f"got {tuple(grads.shape)}"
            )
        unique_ids, inverse = torch.unique(ids, return_inverse=True)
        summed = torch.zeros(
            unique_ids.shape[0], grads.shape[1], dtype=grads.dtype, device=grads.device
        )
        summed.index_add_(0, inverse, grads)
        rows = self.table[unique_ids]
        rows.mul_(1.0 - self.lr * self.weight_decay).add_(torch.sign(summed), alpha=-self.lr)
        self.table[unique_ids] = rows
