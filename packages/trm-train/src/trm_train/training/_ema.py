"""Exponential moving average of the trainable parameters, swapped in for evaluation.

Only parameters are averaged (as in TRM); buffers such as the puzzle-embedding table
are used as they are. A full copy of the model (`torch.optim.swa_utils.AveragedModel`)
would also duplicate that table, which is gigabytes at ARC scale.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class ParameterEMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self._params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.shadow = {n: p.detach().clone() for n, p in self._params.items()}

    @torch.no_grad()
    def update(self) -> None:
        """`shadow = decay * shadow + (1 - decay) * param`, after each optimizer step."""
        for name, param in self._params.items():
            self.shadow[name].lerp_(param.detach(), 1 - self.decay)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Run the model with the averaged parameters; the trained ones come back after."""
        saved = {n: p.detach().clone() for n, p in self._params.items()}
        with torch.no_grad():
            for name, param in self._params.items():
                param.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, param in self._params.items():
                    param.copy_(saved[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state.keys() != self.shadow.keys():
            raise ValueError("EMA state does not match the model's parameters")
        with torch.no_grad():
            for name, value in state.items():
                self.shadow[name].copy_(value)
