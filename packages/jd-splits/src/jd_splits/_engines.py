"""The Jacobian engines that need no hooks (plain, weighted, sequential, autojac) and the
Gramian one that uses torchjd's autogram Engine."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchjd.autogram import Engine
from torchjd.autojac import jac

from ._aggregate import Aggregation, Updates, weights_from_gramian
from ._aggregators import Aggregator
from ._colours import colours, extras_gramian
from ._diagnostics import empty_statistics, gramian_statistics
from ._objective_set import ObjectiveSet, fold_jacobians


def _grad(
    outputs: Sequence[Tensor],
    inputs: Sequence[Tensor],
    cotangents: Sequence[Tensor],
    *,
    retain_graph: bool = False,
) -> Updates:
    grads = torch.autograd.grad(
        list(outputs),
        list(inputs),
        grad_outputs=list(cotangents),
        retain_graph=retain_graph,
        allow_unused=True,
    )
    return list(grads)


def _split_updates(updates: Updates, n_params: int, statistics: dict[str, float]) -> Aggregation:
    return Aggregation(updates[:n_params], updates[n_params:], statistics)


def plain(
    objectives: ObjectiveSet, params: Sequence[Tensor], extras: Sequence[Tensor]
) -> Aggregation:
    """A single objective: one ordinary backward."""
    loss = objectives.values.sum()
    updates = _grad([loss], [*params, *extras], [torch.ones_like(loss)])
    statistics = empty_statistics(cosine=1.0)
    statistics["conflict_share"] = 0.0
    return _split_updates(updates, len(params), statistics)


def weighted(
    objectives: ObjectiveSet, weights: Tensor, params: Sequence[Tensor], extras: Sequence[Tensor]
) -> Aggregation:
    """Weights known without the Jacobian: one backward of `sum_i w_i f_i`."""
    values = objectives.values
    updates = _grad([values], [*params, *extras], [weights.to(values)])
    equal = bool((weights == weights[0]).all())
    return _split_updates(updates, len(params), empty_statistics(1.0 if equal else float("nan")))


def _touching(objectives: ObjectiveSet) -> list[set[int]]:
    return [
        set(torch.unique(block.index[block.index >= 0]).tolist()) for block in objectives.blocks
    ]


def sequential_jacobians(objectives: ObjectiveSet, inputs: Sequence[Tensor]) -> Updates:
    """One backward per base objective, through the blocks it touches only (the reference
    way), folded into the objectives' Jacobian."""
    if not objectives.structured:
        values = objectives.values
        rows = [
            _grad([value], inputs, [torch.ones_like(value)], retain_graph=i < len(values) - 1)
            for i, value in enumerate(values)
        ]
        return [_stack_rows([row[k] for row in rows], inputs[k]) for k in range(len(inputs))]
    touching = _touching(objectives)
    touched = sorted(set().union(*touching))
    by_id: dict[int, Updates] = {}
    for position, i in enumerate(touched):
        pairs = [
            (block.atoms, (block.index == i).to(block.atoms.dtype))
            for block, ids in zip(objectives.blocks, touching, strict=True)
            if i in ids
        ]
        outputs, cotangents = [p[0] for p in pairs], [p[1] for p in pairs]
        by_id[i] = _grad(outputs, inputs, cotangents, retain_graph=position < len(touched) - 1)
    # A base objective without atoms (an objective holding only its share) has zero rows.
    rows = [by_id.get(i, [None] * len(inputs)) for i in range(objectives.base_count)]
    jacobians = [_stack_rows([row[k] for row in rows], inputs[k]) for k in range(len(inputs))]
    return fold_jacobians(objectives, jacobians)


def _stack_rows(rows: Sequence[Tensor | None], like: Tensor) -> Tensor | None:
    if all(r is None for r in rows):
        return None
    return torch.stack([torch.zeros_like(like) if r is None else r for r in rows])


def autojac_jacobians(
    objectives: ObjectiveSet, inputs: Sequence[Tensor], chunk_size: int | None
) -> Updates:
    """torchjd's `autojac.jac` of the base objectives, block by block (so objectives of one
    block do not traverse the graphs of the others), folded into the objectives' Jacobian."""
    if not objectives.structured:
        return list(jac(objectives.values, list(inputs), parallel_chunk_size=chunk_size))
    m = objectives.base_count
    result: Updates = [None] * len(inputs)
    blocks = objectives.blocks
    for position, block in enumerate(blocks):
        ids = torch.unique(block.index[block.index >= 0])
        if ids.numel() == 0:
            continue
        cotangents = (block.index[None] == ids[:, None, None]).to(block.atoms.dtype)
        part = jac(
            block.atoms,
            list(inputs),
            jac_outputs=cotangents,
            retain_graph=position < len(blocks) - 1,
            parallel_chunk_size=chunk_size,
        )
        for k, rows in enumerate(part):
            total = result[k]
            if total is None:
                total = rows.new_zeros((m, *rows.shape[1:]))
            result[k] = total.index_add(0, ids, rows)
    return fold_jacobians(objectives, result)


def autogram(
    engine: Engine,
    objectives: ObjectiveSet,
    aggregator: Aggregator,
    params: Sequence[Tensor],
    extras: Sequence[Tensor],
    *,
    covers_extras: bool,
) -> Aggregation:
    """Gramian of the per-sample atoms by torchjd's Engine (`batch_dim=0`), mapped to the
    base objectives and folded into the objectives' (`A G A^T`), weights from it, then one
    backward of the atoms weighted by the base weights `A^T w`.

    The Engine covers the modules' parameters only. With `covers_extras`, the extra
    inputs' part `J_e J_e^T` is added from one backward per colour with the extra inputs
    as the only inputs (one for IWRM): a batch-first extra input is per-sample (row `b`
    feeds sample `b` only), so each pass gives per-sample rows (see `extras_gramian`).
    Otherwise the extra inputs get `J_e^T w` with weights from the parameters alone."""
    if not objectives.structured:
        raise ValueError(
            "the autogram engine needs objectives with per-sample structure (an ObjectiveSet "
            "from a Split or ObjectiveSet.per_instance), not a plain vector"
        )
    atoms = torch.cat([block.atoms for block in objectives.blocks], 1)
    index = torch.cat([block.index for block in objectives.blocks], 1)
    used = (index >= 0).any(0)
    atoms, index = atoms[:, used], index[:, used]
    flat = index.reshape(-1)
    valid = (flat >= 0).nonzero().squeeze(1)
    ids = flat[valid]
    base = objectives.base_count
    atom_gramian = engine.compute_gramian(atoms).detach()
    partial = atom_gramian.new_zeros(base, atom_gramian.shape[1]).index_add_(
        0, ids, atom_gramian[valid]
    )
    gramian = partial.new_zeros(base, base).index_add_(1, ids, partial[:, valid])
    if covers_extras and extras:
        plan = colours(objectives)
        extra_grads = [
            _grad([colour.block.atoms], extras, [colour.cotangent], retain_graph=True)
            for colour in plan
        ]
        extra = extras_gramian(plan, extra_grads, base)
        if extra is not None:
            gramian = gramian + extra.to(gramian.dtype)
    gramian = objectives.fold_gramian(gramian)
    weights = weights_from_gramian(aggregator, gramian)
    cotangent = torch.zeros_like(flat, dtype=atoms.dtype)
    cotangent[valid] = objectives.base_weights(weights).to(atoms.dtype)[ids]
    updates = _grad([atoms], [*params, *extras], [cotangent.view_as(atoms)])
    return _split_updates(updates, len(params), gramian_statistics(gramian, weights))
