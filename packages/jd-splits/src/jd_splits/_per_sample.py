"""The `per_sample` engine: Jacobian rows from module hooks during ordinary backward passes.

For a model whose trainable parameters all live in `nn.Linear` / `nn.Embedding` leaves fed
batch-first tensors, the gradient of a weight for sample `b` is `dY_b^T X_b` summed over the
module's calls. So one ordinary backward, asked for the gradients of the recorded module
outputs `Y` (not of the weights), gives a Jacobian row per sample at about the cost of a
gradient-descent backward. Objectives whose atoms sit in different samples share a backward
pass; objectives sharing a sample need one pass each ("colours").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ._objective_set import ObjectiveBlock, ObjectiveSet


def per_sample_problems(model: nn.Module) -> list[str]:
    """Why the `per_sample` engine cannot handle `model` (empty when it can)."""
    problems = []
    for name, module in model.named_modules():
        if not any(p.requires_grad for p in module.parameters(recurse=False)):
            continue
        label = f"{name or '<model>'} ({type(module).__name__})"
        if isinstance(module, nn.Linear):
            continue
        if isinstance(module, nn.Embedding):
            if module.max_norm is not None or module.scale_grad_by_freq or module.sparse:
                problems.append(f"{label}: max_norm, scale_grad_by_freq and sparse are unsupported")
            continue
        problems.append(f"{label} owns trainable parameters but is not nn.Linear or nn.Embedding")
    return problems


@attrs.frozen
class _Call:
    module: nn.Linear | nn.Embedding
    input: Tensor
    output: Tensor
    versions: tuple[int, int]


class CallRecorder:
    """Records the grad-enabled calls of the model's Linear and Embedding leaves while
    attached (forward hooks; nothing is added to the autograd graph)."""

    def __init__(self, model: nn.Module) -> None:
        self._modules = [
            module
            for module in model.modules()
            if isinstance(module, nn.Linear | nn.Embedding)
            and any(p.requires_grad for p in module.parameters(recurse=False))
        ]
        self._handles: list[RemovableHandle] = []
        self.calls: list[_Call] = []

    def attach(self) -> None:
        self.calls = []
        self._handles = [
            module.register_forward_hook(self._hook, with_kwargs=True) for module in self._modules
        ]

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.calls = []

    def _hook(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        if not (torch.is_grad_enabled() and isinstance(output, Tensor) and output.requires_grad):
            return
        value = args[0] if args else kwargs["input"]
        assert isinstance(module, nn.Linear | nn.Embedding)
        self.calls.append(_Call(module, value, output, (value._version, output._version)))


@attrs.frozen
class _Colour:
    """One backward pass: the cotangent of a block's atoms and, per sample, the objective
    its gradient belongs to (-1: none). `single` is set when every sample feeds the same
    objective, so per-sample gradients need not be separated."""

    block: ObjectiveBlock
    cotangent: Tensor
    owner: Tensor
    single: int | None


def colours(objectives: ObjectiveSet) -> list[_Colour]:
    """Backward passes covering every atom once, such that within a pass each sample feeds
    at most one objective. Their number is the largest count of distinct objectives one
    sample feeds in one block."""
    result = []
    m = objectives.count
    for block in objectives.blocks:
        valid = block.index >= 0
        samples, columns = valid.nonzero(as_tuple=True)
        if samples.numel() == 0:
            continue
        owners = block.index[samples, columns]
        pairs, inverse = torch.unique(samples * m + owners, return_inverse=True)
        pair_sample = pairs // m
        first = torch.searchsorted(pair_sample, pair_sample, side="left")
        rank = torch.arange(pairs.numel(), device=pairs.device) - first
        atom_colour = rank[inverse]
        for colour in range(int(rank.max()) + 1):
            in_colour = atom_colour == colour
            cotangent = torch.zeros_like(block.atoms)
            cotangent[samples[in_colour], columns[in_colour]] = 1
            owner = torch.full((block.atoms.shape[0],), -1, device=pairs.device)
            chosen = rank == colour
            owner[pair_sample[chosen]] = pairs[chosen] % m
            distinct = torch.unique(owner[owner >= 0])
            single = int(distinct[0]) if distinct.numel() == 1 else None
            result.append(_Colour(block, cotangent, owner, single))
    return result


def per_sample_jacobians(
    objectives: ObjectiveSet,
    calls: Sequence[_Call],
    params: Sequence[Tensor],
    extras: Sequence[Tensor],
    *,
    verify: bool,
) -> tuple[list[Tensor | None], list[Tensor | None]]:
    """The Jacobians `[m, *shape]` of the parameters and of the extra inputs."""
    batch = objectives.batch_size
    if batch is None:
        raise ValueError("the per_sample engine needs objectives with per-sample structure")
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
    m = objectives.count
    slot = {id(p): i for i, p in enumerate(params)}
    jac_params: list[Tensor | None] = [None] * len(params)
    jac_extras: list[Tensor | None] = [None] * len(extras)
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
        target: list[Tensor | None] = [None] * len(params) if check else jac_params
        with torch.no_grad():
            for call, grad in zip(calls, grads[: len(calls)], strict=True):
                if grad is not None:
                    _accumulate_call(call, grad, colour, m, slot, target)
            if check:
                _verify(params, target, grads[len(calls) + len(extras) :])
                jac_params = [_sum(a, b) for a, b in zip(jac_params, target, strict=True)]
            for i, grad in enumerate(grads[len(calls) : len(calls) + len(extras)]):
                if grad is not None:
                    jac_extras[i] = _accumulate_extra(jac_extras[i], grad, colour, m)
    return jac_params, jac_extras


def _sum(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


def _rows(jacobian: Tensor | None, m: int, like: Tensor) -> Tensor:
    return like.new_zeros((m, *like.shape)) if jacobian is None else jacobian


def _accumulate_call(
    call: _Call,
    grad: Tensor,
    colour: _Colour,
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


def _add_row(parts: dict[Tensor, Tensor], row: int, m: int, slot: dict[int, int], target: list[Tensor | None]) -> None:
    for param, value in parts.items():
        index = slot.get(id(param))
        if index is None:
            continue
        jacobian = _rows(target[index], m, param)
        jacobian[row] += value
        target[index] = jacobian


def _add_rows(parts: dict[Tensor, Tensor], owner: Tensor, m: int, slot: dict[int, int], target: list[Tensor | None]) -> None:
    for param, value in parts.items():
        index = slot.get(id(param))
        if index is None:
            continue
        jacobian = _rows(target[index], m, param)
        jacobian.index_add_(0, owner, value)
        target[index] = jacobian


def _accumulate_extra(jacobian: Tensor | None, grad: Tensor, colour: _Colour, m: int) -> Tensor:
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


def _verify(params: Sequence[Tensor], jacobians: Sequence[Tensor | None], reference: Sequence[Tensor | None]) -> None:
    """The per-sample rows of the first pass must sum to autograd's gradient for it: this
    catches parameters used outside their module's call (e.g. `module.weight` read
    directly), which hooks cannot see."""
    wrong = []
    for i, (jacobian, expected) in enumerate(zip(jacobians, reference, strict=True)):
        total = None if jacobian is None else jacobian.sum(0)
        if expected is None and total is None:
            continue
        if expected is None:
            expected = torch.zeros_like(params[i])
        if total is None:
            total = torch.zeros_like(params[i])
        scale = float(expected.norm()) + float(total.norm())
        if float((total - expected).norm()) > 1e-3 * scale + 1e-12:
            wrong.append(f"#{i} {tuple(params[i].shape)}")
    if wrong:
        raise RuntimeError(
            "the per_sample engine does not reproduce autograd's gradient for parameters "
            f"{', '.join(wrong)}: they are used outside a call of their nn.Linear / nn.Embedding "
            "(e.g. the weight is read directly) or a hooked call is not batch-first. Use "
            "engine='autojac' (or fix the model)."
        )
