"""The backward passes of the streamed `per_sample` path: each asks autograd for the gradients
of the recorded `nn.Linear` / `nn.Embedding` outputs (not of the weights), from which the
per-sample weight gradients follow, and the first one checks itself against autograd. (The
whole-Jacobian path makes its rows in hooks instead: `_hooked`.)"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import attrs
import torch
from torch import Tensor, nn

from ._colours import Colour, colours
from ._objective_set import ObjectiveSet
from ._recording import Call


@attrs.frozen
class Pass:
    """One backward pass: its colour and the gradients of the recorded call outputs and of
    the extra inputs."""

    colour: Colour
    call_grads: tuple[Tensor | None, ...]
    extra_grads: tuple[Tensor | None, ...]


def check_calls(calls: Sequence[Call], batch: int) -> None:
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


def backward_passes(
    objectives: ObjectiveSet,
    calls: Sequence[Call],
    params: Sequence[Tensor],
    extras: Sequence[Tensor],
    *,
    verify: bool,
) -> Iterator[Pass]:
    """The backward passes, one at a time. With `verify`, the first one also asks autograd
    for the parameters' gradients and checks the per-sample sums against them."""
    check_calls(calls, batch_size_of(objectives))
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
        result = Pass(colour, grads[: len(calls)], grads[len(calls) : len(calls) + len(extras)])
        if check:
            # Half-precision forwards round differently from the float32 sums made here.
            low = any(c.output.dtype in (torch.float16, torch.bfloat16) for c in calls)
            with torch.no_grad():
                sums = weighted_sums(
                    calls, [result], params, [(colour.owner >= 0).to(params[0].dtype)]
                )
                verify_sums(params, sums, grads[len(calls) + len(extras) :], 5e-2 if low else 1e-3)
        yield result
        # Release this pass's gradients before the next backward: otherwise two passes'
        # worth (the memory plan counts one) are alive at its end.
        del grads, result


def batch_size_of(objectives: ObjectiveSet) -> int:
    batch = objectives.batch_size
    if batch is None:
        raise ValueError("the per_sample engine needs objectives with per-sample structure")
    return batch


def weighted_sums(
    calls: Sequence[Call],
    passes: Sequence[Pass],
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


def verify_sums(
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
