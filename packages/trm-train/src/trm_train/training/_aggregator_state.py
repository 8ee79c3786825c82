"""A stateful torchjd aggregator's state in a checkpoint, and back onto the run's device.

torchjd (0.18) keeps that state mostly in buffers, registered as None until the first
step fills them (so `load_state_dict` would reject them as unexpected keys), and partly
in plain attributes that `state_dict` misses:

- `_state_key` of GradVac, ExcessMTL and PCD says that the buffers fit the current
  objectives; left None, the next step throws the restored buffers away and starts over.
  It follows from the buffers (their shape, dtype and device), so it is rebuilt from
  them rather than stored.
- ExcessMTL's `_n_steps` counts its warm-up; it is stored with the buffers.

Buffers go back where torchjd keeps them: GradVac and PCD on the CPU (they solve their
m x m problems there), every other one on the device of the run's parameters.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torchjd import Stateful
from torchjd.aggregation import (
    PCD,
    CRMOGMWeighting,
    ExcessMTL,
    ExcessMTLWeighting,
    GradVac,
    GradVacWeighting,
    PCDWeighting,
)

# (module type, buffer) that torchjd creates and keeps on the CPU whatever the device.
_ON_CPU = {
    (GradVacWeighting, "_phi_t"),
    (PCDWeighting, "_sq_norm_ema"),
    (PCDWeighting, "_n_steps"),
}
# Plain integer attributes that are state, per module type.
_COUNTS: dict[type[nn.Module], tuple[str, ...]] = {ExcessMTLWeighting: ("_n_steps",)}
# Stateful modules whose whole state the above covers (the aggregators themselves only
# delegate to their weighting).
_COVERED: frozenset[type[nn.Module]] = frozenset(
    {
        GradVac,
        GradVacWeighting,
        ExcessMTL,
        ExcessMTLWeighting,
        PCD,
        PCDWeighting,
        CRMOGMWeighting,
    }
)


def aggregator_counts(aggregator: nn.Module) -> dict[str, int]:
    """The aggregator's integer state that is no buffer, by qualified attribute name."""
    counts: dict[str, int] = {}
    for name, module in aggregator.named_modules():
        for attribute in _COUNTS.get(type(module), ()):
            counts[f"{name}.{attribute}" if name else attribute] = int(getattr(module, attribute))
    return counts


def load_aggregator_state(
    aggregator: nn.Module,
    buffers: dict[str, torch.Tensor],
    counts: dict[str, int],
    *,
    device: torch.device,
) -> None:
    """Put a checkpoint's aggregator buffers and counts back (`device`: that of the run's
    parameters). Warns when the aggregator keeps state a checkpoint does not hold."""
    for name, value in buffers.items():
        owner, leaf = _owner(aggregator, name)
        place = torch.device("cpu") if (type(owner), leaf) in _ON_CPU else device
        owner._buffers[leaf] = value.to(place, copy=True)
    for name, count in counts.items():
        owner, leaf = _owner(aggregator, name)
        setattr(owner, leaf, int(count))
    for module in aggregator.modules():
        _rebuild_state_key(module)
    uncovered = sorted(
        {
            type(module).__name__
            for module in aggregator.modules()
            if isinstance(module, Stateful) and type(module) not in _COVERED
        }
    )
    if uncovered:
        warnings.warn(
            f"the aggregator's {', '.join(uncovered)} keeps state outside its buffers, which "
            "checkpoints do not hold: it restarts on resume, so this resume is not bit-exact",
            stacklevel=2,
        )


def _owner(aggregator: nn.Module, name: str) -> tuple[nn.Module, str]:
    owner_name, _, leaf = name.rpartition(".")
    return (aggregator.get_submodule(owner_name) if owner_name else aggregator), leaf


def _rebuild_state_key(module: nn.Module) -> None:
    """The `_state_key` torchjd's `_ensure_state` would have set for these buffers."""
    if isinstance(module, GradVacWeighting):
        phi: torch.Tensor | None = module._buffers.get("_phi_t")
        if phi is not None:
            module._state_key = (phi.shape[0], phi.dtype)
    elif isinstance(module, ExcessMTLWeighting):
        squares: torch.Tensor | None = module._buffers.get("_sq_grad_sum")
        if squares is not None:
            module._state_key = (squares.shape[0], squares.shape[1], squares.dtype, squares.device)
    elif isinstance(module, PCDWeighting):
        ema: torch.Tensor | None = module._buffers.get("_sq_norm_ema")
        if ema is not None:
            module._state_key = ema.shape[0]
