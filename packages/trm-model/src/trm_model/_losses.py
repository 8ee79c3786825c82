"""Per-token cross entropies (stablemax and softmax)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_LABEL_ID = -100


def _stablemax_s(x: Tensor) -> Tensor:
    # The clamps keep the branch that `where` discards finite (1/(1-x) has a pole at x = 1),
    # so its zero gradient never becomes 0 * inf = nan.
    return torch.where(x < 0, 1 / (1 - x.clamp(max=0)), x.clamp(min=0) + 1)


def stablemax_cross_entropy(
    logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_LABEL_ID
) -> Tensor:
    """Per-token stablemax cross entropy in float64; tokens labelled ``ignore_index`` give 0.

    ``s(x) = x + 1`` for ``x >= 0`` and ``1 / (1 - x)`` below; the probability of class
    ``c`` is ``s(x_c) / sum_j s(x_j)``. ``logits``: ``[..., vocab]``, ``labels``: ``[...]``.
    """
    s = _stablemax_s(logits.double())
    log_probs = torch.log(s / s.sum(dim=-1, keepdim=True))
    valid = labels != ignore_index
    picked = log_probs.gather(-1, torch.where(valid, labels, 0).long().unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, picked, 0.0)


def softmax_cross_entropy(
    logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_LABEL_ID
) -> Tensor:
    """Per-token softmax cross entropy in float32; tokens labelled ``ignore_index`` give 0."""
    return F.cross_entropy(
        logits.float().flatten(0, -2),
        labels.long().flatten(),
        ignore_index=ignore_index,
        reduction="none",
    ).view(labels.shape)
