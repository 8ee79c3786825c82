"""The optimizer of the network's weights, by name (the puzzle table always uses SignSGD)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import Optimizer

from .._config import OPTIMIZER_NAMES, OptimizerName
from ._adam_atan2 import make_adam_atan2


def make_optimizer(
    name: OptimizerName,
    params: Iterable[torch.Tensor],
    *,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    momentum: float,
    device: torch.device,
) -> Optimizer:
    """`adam_atan2` (TRM's; invariant to a positive rescaling of the update, so JD acts
    through the update's direction only), `adamw` (decoupled decay, eps 1e-8) or `sgd`
    (the TorchJD paper's setting, where the update's size matters too; `weight_decay` is
    its L2 penalty). `betas` serve the Adam family, `momentum` SGD."""
    if name == "adam_atan2":
        return make_adam_atan2(params, lr=lr, betas=betas, weight_decay=weight_decay, device=device)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZER_NAMES)}")
