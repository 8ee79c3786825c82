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

from collections.abc import Callable, Iterator, Sequence

import attrs
import torch
from torch import Tensor, nn

from ._aggregate import gramian_of
from ._colours import Colour, colours, extras_gramian
from ._objective_set import ObjectiveSet, fold_jacobians
from ._recording import Call


@attrs.frozen
class _Pass:
    """One backward pass: its colour and the gradients of the recorded call outputs and of
    the extra inputs."""

    colour: Colour
    call_grads: tuple[Tensor | None, ...]
    extra_grads: tuple[Tensor | None, ...]


def _check_calls(calls: Sequence[Call], batch: int) -> None:
    for call in calls:
        if (call.input._version, call.output._version) != call.versions:
            raise RuntimeError(
                f"a {type(call.module).__name__}'s input or output was modified in place after "
                "its call; the per_sample engine needs them intact"
            )
        if call.input.shape[:1] != (batch,) or call.output.shape[:1] != (batch,):
            raise ValueError(
                f"a {type(call.module).__name__} got input {tuple(call.input.shape)} and output "
                f"{tuple(call.output.shape)}, not batch-first with the {batch} samples of the "
                "objectives; the per_sample engine needs every hooked call batch-first"
            )


def _passes(
    objectives: ObjectiveSet,
    calls: Sequence[Call],
    params: Sequence[Tensor],
    extras: Sequence[Tensor],
    *,
    verify: bool,
) -> Iterator[_Pass]:
    """The backward passes, one at a time. With `verify`, the first one also asks autograd
    for the parameters' gradients and checks the per-sample sums against them."""
    batch = objectives.batch_size
    if batch is None:
        raise ValueError("the per_sample engine needs objectives with per-sample structure")
    _check_calls(calls, batch)
    plan = colours(objectives)
    outputs = [call.output for call in calls]
    for position, colour in enumerate(plan):
        check = verify and position == 0
        grads = torch.autograd.grad(
            [colour.block.atoms],
            [*outputs, *extras, *(params if check else ())],
            grad_outputs=[colour.cotangent],
            retain_graph=position < len(plan) - 1,
            allow_unused=True,
        )
        result = _Pass(colour, grads[: len(calls)], grads[len(calls) : len(calls) + len(extras)])
        if check:
            # Half-precision forwards round differently from the float32 sums made here.
            low = any(c.output.dtype in (torch.float16, torch.bfloat16) for c in calls)
            with torch.no_grad():
                sums = weighted_sums(
                    calls, [result], params, [(colour.owner >= 0).to(params[0].dtype)]
                )
                _verify(params, sums, grads[len(calls) + len(extras) :], 5e-2 if low else 1e-3)
        yield result
        # Release this pass's gradients before the next backward: otherwise two passes'
        # worth (the memory plan counts one) are alive at its end.
        del grads, result


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
    for one in _passes(objectives, calls, params, extras, verify=verify):
        _accumulate_pass(one, calls, m, slot, jac_params, jac_extras)
        # The loop variable would keep this pass's gradients alive during the next backward.
        del one
    return fold_jacobians(objectives, jac_params), fold_jacobians(objectives, jac_extras)


def _accumulate_pass(
    one: _Pass,
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
                _accumulate_call(call, grad, one.colour, m, slot, jac_params)
        for i, grad in enumerate(one.extra_grads):
            if grad is not None:
                jac_extras[i] = _accumulate_extra(jac_extras[i], grad, one.colour, m)


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
    passes = list(_passes(objectives, calls, params, extras, verify=verify))
    with torch.no_grad():
        by_module: dict[int, list[int]] = {}
        for position, call in enumerate(calls):
            by_module.setdefault(id(call.module), []).append(position)
        gramian: Tensor | None = None
        for positions in by_module.values():
            module = calls[positions[0]].module
            owned = [p for p in module.parameters(recurse=False) if p.requires_grad]
            slot = {id(p): i for i, p in enumerate(owned)}
            rows: list[Tensor | None] = [None] * len(owned)
            for one in passes:
                for position in positions:
                    grad = one.call_grads[position]
                    if grad is not None:
                        _accumulate_call(calls[position], grad, one.colour, m, slot, rows)
            for jacobian in rows:
                if jacobian is not None:
                    part = gramian_of([jacobian])
                    gramian = part if gramian is None else gramian + part
        if covers_extras:
            plan = [one.colour for one in passes]
            gramian = _sum(gramian, extras_gramian(plan, [one.extra_grads for one in passes], m))
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
                extra_updates[i] = _sum(extra_updates[i], scaled)
    return gramian, weights, updates, extra_updates


def _sample_weights(colour: Colour, weights: Tensor) -> Tensor:
    """The weight of the objective each sample feeds in this pass (0 for none)."""
    live = colour.owner >= 0
    return torch.where(live, weights[colour.owner.clamp_min(0)], 0.0)


def weighted_sums(
    calls: Sequence[Call],
    passes: Sequence[_Pass],
    params: Sequence[Tensor],
    sample_weights: Sequence[Tensor],
) -> list[Tensor | None]:
    """`sum_b v_b * grad_b` for every parameter, with per-sample weights `v` per pass: one
    product per call, like the weight gradient of an ordinary backward."""
    slot = {id(p): i for i, p in enumerate(params)}
    out: list[Tensor | None] = [None] * len(params)

    def add(param: Tensor | None, value: Tensor) -> None:
        if param is None or id(param) not in slot:
            return
        i = slot[id(param)]
        current = out[i]
        out[i] = value if current is None else current + value

    for one, weights in zip(passes, sample_weights, strict=True):
        for call, grad in zip(calls, one.call_grads, strict=True):
            if grad is None:
                continue
            module = call.module
            batch = grad.shape[0]
            dtype = module.weight.dtype
            v = weights.to(dtype)
            if isinstance(module, nn.Linear):
                x = call.input.reshape(batch, -1, module.in_features).to(dtype)
                dy = grad.reshape(batch, -1, module.out_features).to(dtype) * v[:, None, None]
                add(module.weight, dy.flatten(0, 1).T @ x.flatten(0, 1))
                add(module.bias, dy.sum((0, 1)))
            else:
                tokens = call.input.reshape(-1)
                dy = grad.reshape(batch, -1, module.embedding_dim).to(dtype) * v[:, None, None]
                dy = dy.flatten(0, 1)
                if module.padding_idx is not None:
                    dy = torch.where((tokens == module.padding_idx)[:, None], 0.0, dy)
                add(module.weight, torch.zeros_like(module.weight).index_add_(0, tokens, dy))
    return out


def _sum(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


def _rows(jacobian: Tensor | None, m: int, like: Tensor) -> Tensor:
    return like.new_zeros((m, *like.shape)) if jacobian is None else jacobian


def _accumulate_call(
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


def _verify(
    params: Sequence[Tensor],
    sums: Sequence[Tensor | None],
    reference: Sequence[Tensor | None],
    rtol: float,
) -> None:
    """The per-sample gradients of the first pass must sum to autograd's gradient for it:
    this catches parameters used outside their module's call (e.g. `module.weight` read
    directly), which hooks cannot see."""
    wrong = []
    for i, (total, expected) in enumerate(zip(sums, reference, strict=True)):
        if expected is None and total is None:
            continue
        expected = torch.zeros_like(params[i]) if expected is None else expected
        total = torch.zeros_like(params[i]) if total is None else total
        scale = float(expected.norm()) + float(total.norm())
        if float((total - expected).norm()) > rtol * scale + 1e-12:
            wrong.append(f"#{i} {tuple(params[i].shape)}")
    if wrong:
        raise RuntimeError(
            "the per_sample engine does not reproduce autograd's gradient for parameters "
            f"{', '.join(wrong)}: they are used outside a call of their nn.Linear / nn.Embedding "
            "(e.g. the weight is read directly) or a hooked call is not batch-first. Use "
            "engine='autojac' (or fix the model)."
        )
