"""The `per_sample` engine: Jacobian rows from module hooks during ordinary backward passes.

For a model whose trainable parameters all live in `nn.Linear` / `nn.Embedding` leaves fed
batch-first tensors, the gradient of a weight for sample `b` is `dY_b^T X_b` summed over the
module's calls. So one ordinary backward, asked for the gradients of the recorded module
outputs `Y` (not of the weights), gives a Jacobian row per sample at about the cost of a
gradient-descent backward. Objectives whose atoms sit in different samples share a backward
pass; objectives sharing a sample need one pass each ("colours"). Everything is computed for
the base objectives, then folded into the objectives (see `ObjectiveSet`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ._colours import Colour
from ._objective_set import ObjectiveSet, fold_jacobians
from ._passes import Pass, backward_passes
from ._recording import Call


def per_sample_jacobians(
    objectives: ObjectiveSet,
    calls: Sequence[Call],
    params: Sequence[Tensor],
    extras: Sequence[Tensor],
    *,
    verify: bool,
) -> tuple[list[Tensor | None], list[Tensor | None]]:
    """The Jacobians `[m, *shape]` of the parameters and of the extra inputs."""
    m = objectives.base_count
    slot = {id(p): i for i, p in enumerate(params)}
    jac_params: list[Tensor | None] = [None] * len(params)
    jac_extras: list[Tensor | None] = [None] * len(extras)
    for one in backward_passes(objectives, calls, params, extras, verify=verify):
        _accumulate_pass(one, calls, m, slot, jac_params, jac_extras)
        # The loop variable would keep this pass's gradients alive during the next backward.
        del one
    return fold_jacobians(objectives, jac_params), fold_jacobians(objectives, jac_extras)


def _accumulate_pass(
    one: Pass,
    calls: Sequence[Call],
    m: int,
    slot: dict[int, int],
    jac_params: list[Tensor | None],
    jac_extras: list[Tensor | None],
) -> None:
    """Add one pass's rows to the Jacobians (a function of its own, so that no loop
    variable outlives the pass)."""
    with torch.no_grad():
        for call, grad in zip(calls, one.call_grads, strict=True):
            if grad is not None:
                accumulate_call(call, grad, one.colour, m, slot, jac_params)
        for i, grad in enumerate(one.extra_grads):
            if grad is not None:
                jac_extras[i] = _accumulate_extra(jac_extras[i], grad, one.colour, m)


def _rows(jacobian: Tensor | None, m: int, like: Tensor) -> Tensor:
    return like.new_zeros((m, *like.shape)) if jacobian is None else jacobian


def accumulate_call(
    call: Call,
    grad: Tensor,
    colour: Colour,
    m: int,
    slot: dict[int, int],
    target: list[Tensor | None],
) -> None:
    module = call.module
    weight = module.weight
    batch = grad.shape[0]
    # Samples outside the colour have a zero cotangent, hence zero gradients: with a single
    # objective they can stay in the sums; otherwise they are left out.
    live = colour.owner >= 0
    everyone = colour.single is not None or bool(live.all())
    owner = colour.owner if everyone else colour.owner[live]
    if isinstance(module, nn.Linear):
        x = call.input.reshape(batch, -1, module.in_features).to(weight.dtype)
        dy = grad.reshape(batch, -1, module.out_features).to(weight.dtype)
        if not everyone:
            x, dy = x[live], dy[live]
        if colour.single is not None:
            parts = {weight: dy.flatten(0, 1).T @ x.flatten(0, 1)}
            if module.bias is not None:
                parts[module.bias] = dy.sum((0, 1))
            _add_row(parts, colour.single, m, slot, target)
        else:
            parts = {weight: torch.bmm(dy.transpose(1, 2), x)}
            if module.bias is not None:
                parts[module.bias] = dy.sum(1)
            _add_rows(parts, owner, m, slot, target)
        return
    index = slot.get(id(weight))
    if index is None:
        return
    tokens = call.input.reshape(batch, -1)
    dy = grad.reshape(batch, -1, module.embedding_dim).to(weight.dtype)
    if module.padding_idx is not None:
        dy = torch.where((tokens == module.padding_idx)[..., None], 0.0, dy)
    if not everyone:
        tokens, dy = tokens[live], dy[live]
    vocabulary = module.num_embeddings
    if colour.single is not None:
        rows = colour.single * vocabulary + tokens
    else:
        rows = owner[:, None] * vocabulary + tokens
    jacobian = _rows(target[index], m, weight)
    jacobian.view(m * vocabulary, -1).index_add_(0, rows.flatten(), dy.flatten(0, 1))
    target[index] = jacobian


def _add_row(
    parts: dict[Tensor, Tensor], row: int, m: int, slot: dict[int, int], target: list[Tensor | None]
) -> None:
    for param, value in parts.items():
        index = slot.get(id(param))
        if index is None:
            continue
        jacobian = _rows(target[index], m, param)
        jacobian[row] += value
        target[index] = jacobian


def _add_rows(
    parts: dict[Tensor, Tensor],
    owner: Tensor,
    m: int,
    slot: dict[int, int],
    target: list[Tensor | None],
) -> None:
    for param, value in parts.items():
        index = slot.get(id(param))
        if index is None:
            continue
        jacobian = _rows(target[index], m, param)
        jacobian.index_add_(0, owner, value)
        target[index] = jacobian


def _accumulate_extra(jacobian: Tensor | None, grad: Tensor, colour: Colour, m: int) -> Tensor:
    jacobian = _rows(jacobian, m, grad)
    if colour.single is not None:
        jacobian[colour.single] += grad
        return jacobian
    if grad.shape[:1] != colour.owner.shape:
        raise ValueError(
            f"an extra input of shape {tuple(grad.shape)} is not batch-first with the "
            f"{colour.owner.shape[0]} samples; the per_sample engine cannot attribute its "
            "gradient to objectives"
        )
    live = (colour.owner >= 0).nonzero().squeeze(1)
    jacobian[colour.owner[live], live] += grad[live]
    return jacobian
