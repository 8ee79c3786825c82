"""The `per_sample` engine without the whole Jacobian: the Gramian built one module at a
time from every pass's gradients, then the weights applied with one product per call."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ._aggregate import gramian_of
from ._colours import Colour, extras_gramian
from ._objective_set import ObjectiveSet
from ._passes import backward_passes, weighted_sums
from ._per_sample import accumulate_module
from ._recording import Call


def per_sample_streamed(
    objectives: ObjectiveSet,
    calls: Sequence[Call],
    params: Sequence[Tensor],
    extras: Sequence[Tensor],
    weights_of: Callable[[Tensor], Tensor],
    *,
    verify: bool,
    covers_extras: bool,
) -> tuple[Tensor, Tensor, list[Tensor | None], list[Tensor | None]]:
    """The Gramian without ever holding the whole Jacobian: keep the passes' gradients,
    build the Jacobian one module at a time to accumulate `G` (plus the extra inputs' part
    when `covers_extras`), then apply the weights with one weighted product per call.
    Returns `G`, `w` and the updates."""
    m = objectives.base_count
    passes = list(backward_passes(objectives, calls, params, extras, verify=verify))
    with torch.no_grad():
        gramian: Tensor | None = None
        for positions in calls_by_module(calls):
            module = calls[positions[0]].module
            owned = [p for p in module.parameters(recurse=False) if p.requires_grad]
            slot = {id(p): i for i, p in enumerate(owned)}
            rows: list[Tensor | None] = [None] * len(owned)
            for one in passes:
                pairs = [(calls[i], g) for i in positions if (g := one.call_grads[i]) is not None]
                accumulate_module(pairs, one.colour, m, slot, rows)
            for jacobian in rows:
                if jacobian is not None:
                    part = gramian_of([jacobian])
                    gramian = part if gramian is None else gramian + part
        if covers_extras:
            plan = [one.colour for one in passes]
            gramian = add_optional(
                gramian, extras_gramian(plan, [one.extra_grads for one in passes], m)
            )
        if gramian is None:
            raise ValueError("no input received a gradient from any objective")
        gramian = objectives.fold_gramian(gramian)
        weights = weights_of(gramian)
        base_weights = objectives.base_weights(weights)
        per_pass = [_sample_weights(one.colour, base_weights) for one in passes]
        updates = weighted_sums(calls, passes, params, per_pass)
        extra_updates: list[Tensor | None] = [None] * len(extras)
        for one, sample_weights in zip(passes, per_pass, strict=True):
            for i, grad in enumerate(one.extra_grads):
                if grad is None:
                    continue
                if one.colour.single is None and grad.shape[:1] != sample_weights.shape:
                    raise ValueError(
                        f"an extra input of shape {tuple(grad.shape)} is not batch-first; the "
                        "per_sample engine cannot attribute its gradient to objectives"
                    )
                if one.colour.single is None:
                    scaled = grad * sample_weights.to(grad.dtype).view(-1, *[1] * (grad.ndim - 1))
                else:
                    scaled = grad * base_weights[one.colour.single].to(grad.dtype)
                extra_updates[i] = add_optional(extra_updates[i], scaled)
    return gramian, weights, updates, extra_updates


def calls_by_module(calls: Sequence[Call]) -> list[list[int]]:
    """The positions of the calls of each module (a weight shared across calls, as TRM's
    network applied several times, gets all its calls' rows at once)."""
    by_module: dict[int, list[int]] = {}
    for position, call in enumerate(calls):
        by_module.setdefault(id(call.module), []).append(position)
    return list(by_module.values())


def _sample_weights(colour: Colour, weights: Tensor) -> Tensor:
    """The weight of the objective each sample feeds in this pass (0 for none)."""
    live = colour.owner >= 0
    return torch.where(live, weights[colour.owner.clamp_min(0)], 0.0)


def add_optional(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b
