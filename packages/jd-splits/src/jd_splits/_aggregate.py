"""From weights or an explicit Jacobian to the update of every input."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch
from torch import Tensor
from torchjd.aggregation import WeightedAggregator

from ._aggregators import Aggregator, gramian_weighting
from ._diagnostics import gramian_statistics, update_statistics

Updates = list[Tensor | None]
"""One update per input (None: the input got no gradient)."""


@attrs.frozen
class Aggregation:
    """The updates of the parameters and of the extra inputs, with diagnostic statistics."""

    params: Updates
    extras: Updates
    statistics: dict[str, float]


def weights_from_gramian(aggregator: Aggregator, gramian: Tensor) -> Tensor:
    """The aggregator's weights for the Gramian (Gramian-based aggregators only)."""
    weighting = gramian_weighting(aggregator)
    if weighting is None:
        raise ValueError(f"{aggregator} needs the Jacobian itself, not only its Gramian")
    with torch.no_grad():
        return weighting(gramian)


def gramian_of(jacobians: Sequence[Tensor | None]) -> Tensor:
    """`J J^T` summed over the blocks `[m, ...]` of the Jacobian, in float32 or wider."""
    total: Tensor | None = None
    for jacobian in jacobians:
        if jacobian is None:
            continue
        flat = jacobian.reshape(jacobian.shape[0], -1)
        if flat.dtype in (torch.float16, torch.bfloat16):
            flat = flat.float()
        part = flat @ flat.T
        total = part if total is None else total + part
    if total is None:
        raise ValueError("no input received a gradient from any objective")
    return total


def combine(weights: Tensor, jacobians: Sequence[Tensor | None]) -> Updates:
    """`J^T w` for each block of the Jacobian."""
    return [
        None if j is None else torch.tensordot(weights.to(j.dtype), j, dims=1) for j in jacobians
    ]


def aggregate_jacobian(
    aggregator: Aggregator,
    params: Sequence[Tensor | None],
    extras: Sequence[Tensor | None],
    *,
    covers_extras: bool,
) -> Aggregation:
    """Aggregate explicit Jacobians (`[m, *input.shape]` per input).

    With `covers_extras`, the aggregator sees the united Jacobian `[J_params | J_extras]`
    (for Gramian-based ones, `G = J_p J_p^T + J_e J_e^T`). Otherwise the weights come from
    the parameters' Jacobian only and extra inputs receive `J_extra^T w` with the same
    weights; aggregators without weights (e.g. `graddrop`, `config`) are then applied to
    the parameters' Jacobian and, separately, to the extra inputs' Jacobian."""
    covered = [*params, *extras] if covers_extras else list(params)
    with torch.no_grad():
        gramian = gramian_of(covered)
        if gramian_weighting(aggregator) is not None:
            weights = weights_from_gramian(aggregator, gramian)
        elif isinstance(aggregator, WeightedAggregator):
            weights = aggregator.weighting(_united(covered))
        else:
            return _unweighted(aggregator, params, extras, gramian, covers_extras)
        statistics = gramian_statistics(gramian, weights)
        return Aggregation(combine(weights, params), combine(weights, extras), statistics)


def _united(jacobians: Sequence[Tensor | None]) -> Tensor:
    return torch.cat([j.reshape(j.shape[0], -1) for j in jacobians if j is not None], 1)


def _split_like(vector: Tensor, jacobians: Sequence[Tensor | None]) -> Updates:
    updates: Updates = []
    offset = 0
    for jacobian in jacobians:
        if jacobian is None:
            updates.append(None)
            continue
        size = jacobian[0].numel()
        updates.append(vector[offset : offset + size].view(jacobian.shape[1:]))
        offset += size
    return updates


def _unweighted(
    aggregator: Aggregator,
    params: Sequence[Tensor | None],
    extras: Sequence[Tensor | None],
    gramian: Tensor,
    covers_extras: bool,
) -> Aggregation:
    covered = [*params, *extras] if covers_extras else list(params)
    united = _united(covered)
    update = aggregator(united)
    mean_direction = united.sum(0)
    statistics = gramian_statistics(gramian, None)
    statistics["cosine_to_mean"] = update_statistics(
        float(update.double() @ mean_direction.double()),
        float(update.double() @ update.double()),
        float(mean_direction.double() @ mean_direction.double()),
    )
    updates = _split_like(update, covered)
    if covers_extras:
        return Aggregation(updates[: len(params)], updates[len(params) :], statistics)
    extra_updates: Updates = [None] * len(extras)
    if any(e is not None for e in extras):
        extra_updates = _split_like(aggregator(_united(extras)), extras)
    return Aggregation(updates, extra_updates, statistics)
