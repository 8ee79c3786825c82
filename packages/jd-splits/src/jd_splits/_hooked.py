"""Backward passes that turn each recorded output's gradient into Jacobian rows as autograd
produces it, through a tensor hook, instead of returning every output gradient at the end.

The products then read a gradient while it is still in cache and each gradient is freed as
soon as its node has run, as in an ordinary backward: on the tiny TRM (CPU) this costs about
half as much over a gradient-descent backward as computing the rows after the pass did.

Autograd runs only the nodes between the atoms and the tensors it is asked for, so a hooked
output must lie on such a path. `requested_calls` finds the calls whose output has no other
recorded output and no extra input upstream (e.g. the token embedding): their gradients are
asked for; every other recorded output lies between the atoms and one of those, or an extra
input, so its node runs and its hook fires.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor
from torch.autograd.graph import Node
from torch.utils.hooks import RemovableHandle

from ._colours import Colour
from ._recording import Call

OnGradient = Callable[[Colour, int, Tensor], None]
"""Receives a pass's colour, a call's position and the gradient of that call's output."""


def requested_calls(
    roots: Sequence[Tensor], calls: Sequence[Call], extras: Sequence[Tensor]
) -> list[int]:
    """The positions of the calls whose output gradient a hooked pass must ask for: those
    from whose node no other recorded output's node, nor an extra input, can be reached."""
    targets = {call.output.grad_fn: position for position, call in enumerate(calls)}
    extra_ids = {id(extra) for extra in extras}
    reaches = _reaching(
        [*(root.grad_fn for root in roots), *targets],
        lambda node: node in targets or id(getattr(node, "variable", None)) in extra_ids,
    )
    requested = []
    for position, call in enumerate(calls):
        node = call.output.grad_fn
        assert node is not None
        if not any(reaches[child] for child, _ in node.next_functions if child is not None):
            requested.append(position)
    return requested


def _reaching(starts: Sequence[Node | None], is_target: Callable[[Node], bool]) -> dict[Node, bool]:
    """For every node reachable from `starts`: whether it is a target or reaches one
    (iterative: autograd graphs are deeper than Python's recursion limit)."""
    reaches: dict[Node, bool] = {}
    pending: list[tuple[Node, bool]] = [(node, False) for node in starts if node is not None]
    while pending:
        node, expanded = pending.pop()
        children = [child for child, _ in node.next_functions if child is not None]
        if expanded:
            reaches[node] = is_target(node) or any(reaches[child] for child in children)
        elif node not in reaches:
            reaches[node] = False  # visited; set when its children are done
            pending.append((node, True))
            pending.extend((child, False) for child in children if child not in reaches)
    return reaches


def hooked_pass(
    colour: Colour,
    calls: Sequence[Call],
    requested: Sequence[int],
    inputs: Sequence[Tensor],
    on_gradient: OnGradient,
    *,
    retain_graph: bool,
) -> tuple[Tensor | None, ...]:
    """One backward pass in which `on_gradient` receives every recorded output's gradient
    (none for an output that gets no gradient); returns the gradients of `inputs` (the
    extra inputs, and the parameters on the checked pass)."""

    def hook(position: int, grad: Tensor) -> None:
        with torch.no_grad():
            on_gradient(colour, position, grad)

    handles = [
        _register(call.output, partial(hook, position)) for position, call in enumerate(calls)
    ]
    try:
        grads = torch.autograd.grad(
            [colour.block.atoms],
            [*inputs, *(calls[position].output for position in requested)],
            grad_outputs=[colour.cotangent],
            retain_graph=retain_graph,
            allow_unused=True,
        )
    finally:
        for handle in handles:
            handle.remove()
    return tuple(grads[: len(inputs)])


def _register(tensor: Tensor, hook: Callable[[Tensor], None]) -> RemovableHandle:
    """`Tensor.register_hook`, which torch leaves untyped."""
    register: Callable[[Callable[[Tensor], None]], RemovableHandle] = tensor.register_hook
    return register(hook)
