"""The `per_sample` engine: Jacobian rows from module hooks during ordinary backward passes.

For a model whose trainable parameters all live in `nn.Linear` / `nn.Embedding` leaves fed
batch-first tensors, the gradient of a weight for sample `b` is `dY_b^T X_b` summed over the
module's calls. So one ordinary backward, in which a hook on each recorded module output
`Y` turns its gradient into rows as autograd produces it (`_hooked`; the weights' own
gradients are never computed), gives a Jacobian row per sample at about the cost of a
gradient-descent backward. Objectives whose atoms sit in different samples share a backward
pass; objectives sharing a sample need one pass each ("colours"). Everything is computed for
the base objectives, then folded into the objectives (see `ObjectiveSet`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor, nn

from ._colours import Colour, colours
from ._hooked import hooked_pass, requested_calls
from ._objective_set import ObjectiveSet, fold_jacobians
from ._passes import batch_size_of, check_calls, verify_sums
from ._recording import Call


def per_sample_jacobians(
    objectives: ObjectiveSet,
    calls: Sequence[Call],
    params: Sequence[Tensor],
    extras: Sequence[Tensor],
    *,
    verify: bool,
    requested: Sequence[int] | None = None,
) -> tuple[list[Tensor | None], list[Tensor | None]]:
    """The Jacobians `[m, *shape]` of the parameters and of the extra inputs, their rows
    made in hooks during each pass (see `_hooked`; `requested`: `requested_calls`, found
    here when not given). With `verify`, the first pass also asks for the parameters'
    gradients, which the sums of its rows must reproduce."""
    m = objectives.base_count
    slot = {id(p): i for i, p in enumerate(params)}
    jac_params: list[Tensor | None] = [None] * len(params)
    jac_extras: list[Tensor | None] = [None] * len(extras)
    plan = colours(objectives)
    check_calls(calls, batch_size_of(objectives))
    if requested is None:
        requested = requested_calls([block.atoms for block in objectives.blocks], calls, extras)

    def on_gradient(colour: Colour, position: int, grad: Tensor) -> None:
        accumulate_module([(calls[position], grad)], colour, m, slot, jac_params)

    for position, colour in enumerate(plan):
        check = verify and position == 0
        grads = hooked_pass(
            colour,
            calls,
            requested,
            [*extras, *(params if check else ())],
            on_gradient,
            retain_graph=position < len(plan) - 1,
        )
        with torch.no_grad():
            for i, grad in enumerate(grads[: len(extras)]):
                if grad is not None:
                    jac_extras[i] = _accumulate_extra(jac_extras[i], grad, colour, m)
            if check:
                # The rows so far are this pass's alone: their sums are its gradient.
                sums = [None if j is None else j.sum(0) for j in jac_params]
                # Half-precision forwards round differently from the float32 sums made here.
                low = any(c.output.dtype in (torch.float16, torch.bfloat16) for c in calls)
                verify_sums(params, sums, grads[len(extras) :], 5e-2 if low else 1e-3)
        del grads
    return fold_jacobians(objectives, jac_params), fold_jacobians(objectives, jac_extras)


def _rows(jacobian: Tensor | None, m: int, like: Tensor) -> Tensor:
    return like.new_zeros((m, *like.shape)) if jacobian is None else jacobian


def accumulate_module(
    pairs: Sequence[tuple[Call, Tensor]],
    colour: Colour,
    m: int,
    slot: dict[int, int],
    target: list[Tensor | None],
) -> None:
    """Add one pass's rows for every call of one module (`pairs`: each call with the
    gradient of its output) to the Jacobians in `target` (indexed by `slot`)."""
    if not pairs:
        return
    module = pairs[0][0].module
    if isinstance(module, nn.Linear):
        _linear(module, pairs, colour, m, slot, target)
        return
    for call, grad in pairs:
        _embedding(module, call, grad, colour, m, slot, target)


def _linear(
    module: nn.Linear,
    pairs: Sequence[tuple[Call, Tensor]],
    colour: Colour,
    m: int,
    slot: dict[int, int],
    target: list[Tensor | None],
) -> None:
    """`dY^T X` per sample, summed over the given calls, accumulated in place (`addmm_`,
    `baddbmm_`) into the Jacobian's rows where the pass allows it rather than made one per
    call and then added or scattered: on CPU those allocations and copies cost about half
    as much again as the products themselves."""
    weight, bias = module.weight, module.bias
    w_slot = slot.get(id(weight))
    b_slot = None if bias is None else slot.get(id(bias))
    if w_slot is None and b_slot is None:
        return
    pieces: list[tuple[Tensor, Tensor]] = []
    for call, grad in pairs:
        batch = grad.shape[0]
        x = call.input.reshape(batch, -1, module.in_features).to(weight.dtype)
        dy = grad.reshape(batch, -1, module.out_features).to(weight.dtype)
        if colour.single is None and colour.live is not None:
            # Samples outside the pass have a zero cotangent, hence zero rows: left out.
            x, dy = x[colour.live], dy[colour.live]
        pieces.append((x, dy))
    if colour.single is not None:
        # Every sample feeds one objective: one row, made like an ordinary weight gradient.
        row = colour.single
        if w_slot is not None:
            jacobian = _rows(target[w_slot], m, weight)
            for x, dy in pieces:
                jacobian[row].addmm_(dy.flatten(0, 1).T, x.flatten(0, 1))
            target[w_slot] = jacobian
        if b_slot is not None and bias is not None:
            jacobian = _rows(target[b_slot], m, bias)
            for _, dy in pieces:
                jacobian[row] += dy.sum((0, 1))
            target[b_slot] = jacobian
        return
    if w_slot is not None:
        products = [(dy.transpose(1, 2), x) for x, dy in pieces]
        target[w_slot] = _add_rows(target[w_slot], colour, m, weight, partial(_bmm, products))
    if b_slot is not None and bias is not None:
        sums = [dy.sum(1) for _, dy in pieces]
        target[b_slot] = _add_rows(target[b_slot], colour, m, bias, partial(_sum, sums))


def _bmm(products: Sequence[tuple[Tensor, Tensor]], out: Tensor | None) -> Tensor:
    """`sum_k a_k @ b_k` (batched), added to `out` in place (a new tensor if None)."""
    for a, b in products:
        out = torch.bmm(a, b) if out is None else out.baddbmm_(a, b)
    assert out is not None
    return out


def _sum(parts: Sequence[Tensor], out: Tensor | None) -> Tensor:
    """`sum_k parts_k`, added to `out` in place (a new tensor if None)."""
    for part in parts:
        out = part.clone() if out is None else out.add_(part)
    assert out is not None
    return out


def _add_rows(
    jacobian: Tensor | None,
    colour: Colour,
    m: int,
    like: Tensor,
    fill: Callable[[Tensor | None], Tensor],
) -> Tensor:
    """Add the live samples' rows `[n, *like.shape]`, which `fill(out)` adds to `out` (or
    makes, given None), to rows `colour.live_owner` of the Jacobian."""
    n = colour.live_owner.shape[0]
    if colour.start is None:
        total = fill(None)
        return _rows(jacobian, m, like).index_add_(0, colour.live_owner, total)
    if jacobian is None and n == m:
        # The pass fills every row in order (IWRM): its products are the Jacobian.
        return fill(None)
    jacobian = _rows(jacobian, m, like)
    fill(jacobian[colour.start : colour.start + n])
    return jacobian


def _embedding(
    module: nn.Embedding,
    call: Call,
    grad: Tensor,
    colour: Colour,
    m: int,
    slot: dict[int, int],
    target: list[Tensor | None],
) -> None:
    weight = module.weight
    index = slot.get(id(weight))
    if index is None:
        return
    batch = grad.shape[0]
    tokens = call.input.reshape(batch, -1)
    dy = grad.reshape(batch, -1, module.embedding_dim).to(weight.dtype)
    if module.padding_idx is not None:
        dy = torch.where((tokens == module.padding_idx)[..., None], 0.0, dy)
    vocabulary = module.num_embeddings
    if colour.single is not None:
        rows = colour.single * vocabulary + tokens
    else:
        if colour.live is not None:
            tokens, dy = tokens[colour.live], dy[colour.live]
        rows = colour.live_owner[:, None] * vocabulary + tokens
    jacobian = _rows(target[index], m, weight)
    jacobian.view(m * vocabulary, -1).index_add_(0, rows.flatten(), dy.flatten(0, 1))
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
