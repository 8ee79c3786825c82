"""Peak-memory estimates of the `per_sample` engine and of its fallbacks, from the shapes the
forward recorded, and the engine they lead to within a budget."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import attrs
import torch
from torch import Tensor, nn
from torch.autograd.graph import Node

from ._colours import passes_per_block
from ._objective_set import ObjectiveSet
from ._recording import Call

CPU_BUDGET_BYTES = 4 << 30
"""The budget on CPU unless `max_jacobian_bytes` says otherwise."""
GPU_FREE_SHARE = 0.8
"""The share of the GPU memory still free after the forward that the JD step may take by
default; the rest absorbs fragmentation and what the estimates leave out."""
AGGREGATOR_COPIES = 6
"""Copies of the Jacobian an aggregator that needs the Jacobian itself may hold besides it:
the matrix united over the inputs, then its own (torchjd's ConFIG, the largest measured:
unit rows, and a pseudo-inverse with its SVD)."""


@attrs.frozen
class MemorySizes:
    """What the engines' peaks in one JD step are made of: bytes, except the counts
    `blocks` and `passes`."""

    jacobian: int
    """The base objectives' Jacobian, `[base objectives, parameters + extra inputs]`."""
    folded: int
    """The objectives' Jacobian folded from it when there are shared terms (else 0)."""
    aggregator: int
    """What aggregating adds to the objectives' Jacobian: `AGGREGATOR_COPIES` copies of it
    for aggregators that need the Jacobian itself, 0 for Gramian-based ones (an `m x m`
    Gramian)."""
    module_jacobian: int
    """The largest single module's Jacobian: the streamed path holds one at a time."""
    output_gradients: int
    """One backward pass's gradients of every recorded module output and extra input: the
    streamed path asks autograd for them all at once (it needs them twice), so all are
    alive at the pass's end."""
    requested_gradients: int
    """What a pass of the per_sample engine keeps to its end: the gradients of the extra
    inputs and of the outputs it asks autograd for (those with no recorded output
    upstream); every other output gradient becomes rows in a hook and is freed at once."""
    blocks: int
    """The objectives' blocks (computation graphs) with atoms."""
    passes: int
    """The backward passes the per_sample engine makes (one per base objective a sample
    feeds in a block: one for IWRM, one per pixel or pixel group for pixel-wise splits)."""
    cotangents: int
    """The passes' cotangents of the atoms, alive for the whole step."""
    verify: int
    """The parameters' gradients autograd returns on the checked first pass (else 0)."""
    work: int
    """The largest temporary of turning one call's output gradient into Jacobian rows:
    dtype copies of its input and output, and a per-sample weight gradient per sample."""
    in_flight: int
    """The gradients one backward holds in flight besides those it returns, taken as twice
    the largest activation (saved in the graph, or a recorded output): a node's output
    gradient and its input gradients."""


@attrs.frozen
class MemoryPlan:
    """The engine of a JD step and why: estimated peak bytes per candidate engine, fastest
    first (`per_sample` with the whole Jacobian; `per_sample_streamed`, the Jacobian one
    module at a time; `autojac`, one backward per `autojac_chunk_size` rows), against the
    budget. The chosen engine is the first that fits, else the one with the smallest
    estimate."""

    engine: str
    budget: int
    budget_source: str
    estimates: Mapping[str, int]
    sizes: MemorySizes

    @property
    def fits(self) -> bool:
        return self.estimates[self.engine] <= self.budget

    @property
    def fallback(self) -> bool:
        """Whether a faster engine was passed over for memory."""
        return self.engine != next(iter(self.estimates))

    def __str__(self) -> str:
        s = self.sizes
        verdict = "fits" if self.fits else "EXCEEDS the budget"
        candidates = ", ".join(f"{name} {_size(peak)}" for name, peak in self.estimates.items())
        return (
            f"JacobianDescent memory plan: {self.engine}, estimated peak "
            f"{_size(self.estimates[self.engine])} vs budget {_size(self.budget)} "
            f"({self.budget_source}): {verdict}. Estimates: {candidates}. Made of: Jacobian "
            f"{_size(s.jacobian)}, output gradients {_size(s.output_gradients)} per pass x "
            f"{s.passes} pass(es), largest module Jacobian {_size(s.module_jacobian)}, "
            f"cotangents {_size(s.cotangents)}, temporaries {_size(max(s.work, s.in_flight))}"
        )


def per_sample_peak(s: MemorySizes) -> int:
    """The largest of its phases: building the Jacobian, folding it and aggregating. While
    building, a pass holds the Jacobian, its requested gradients (and the parameters'
    gradients on the checked pass), and the backward's in-flight gradients while a hook
    makes one call's rows; a pass's gradients are released before the next pass runs."""
    build = s.jacobian + s.requested_gradients + s.verify + s.in_flight + s.work
    return s.cotangents + max(build, _fold(s), _aggregate(s))


def streamed_peak(s: MemorySizes) -> int:
    """Every pass's output gradients (kept to build the Jacobian one module at a time and
    then to apply the weights) and one module's Jacobian (Gramian-based aggregators only,
    whose `m x m` Gramian is left out)."""
    kept = s.passes * s.output_gradients + s.verify + s.module_jacobian
    return s.cotangents + kept + max(s.work, s.in_flight)


def autojac_peak(s: MemorySizes, chunk_size: int) -> int:
    """The largest of its phases: building the Jacobian (torchjd's `jac` returns a block's
    rows concatenated from their chunks, two copies, while the sum over several blocks
    holds a third; each backward carries `chunk_size` cotangents), folding it and
    aggregating. The rows' cotangents are counted as the per_sample passes' (one per
    objective a block holds instead of one per objective a sample feeds)."""
    copies = 3 if s.blocks > 1 else 2
    build = copies * s.jacobian + chunk_size * s.in_flight
    return s.cotangents + max(build, _fold(s), _aggregate(s))


def _fold(s: MemorySizes) -> int:
    return s.jacobian + s.folded


def _aggregate(s: MemorySizes) -> int:
    return (s.folded or s.jacobian) + s.aggregator


def measure(
    objectives: ObjectiveSet,
    calls: Sequence[Call],
    params: Sequence[Tensor],
    extras: Sequence[Tensor],
    *,
    verify: bool,
    gramian_based: bool,
    saved: int | None = None,
    requested: Sequence[int] = (),
) -> MemorySizes:
    """The sizes of one JD step from the recorded calls, the objectives and their graph
    (after the forward, before any backward). `saved`: the bytes of the largest activation
    the graph saved (`largest_saved` of the blocks' atoms), when already known;
    `requested`: the calls whose output gradient the hooked passes ask for."""
    base, count = objectives.base_count, objectives.count
    row = _total(params) + _total(extras)
    per_block = passes_per_block(objectives)
    modules = {id(call.module): call.module for call in calls}
    module_row = max((_owned(module) for module in modules.values()), default=0)
    outputs = [_nbytes(call.output) for call in calls]
    return MemorySizes(
        jacobian=base * row,
        folded=count * row if objectives.shares is not None else 0,
        aggregator=0 if gramian_based else AGGREGATOR_COPIES * count * row,
        module_jacobian=base * module_row,
        output_gradients=sum(outputs) + _total(extras),
        requested_gradients=sum(outputs[i] for i in requested) + _total(extras),
        blocks=sum(n > 0 for n in per_block),
        passes=sum(per_block),
        cotangents=sum(
            n * _nbytes(block.atoms) for n, block in zip(per_block, objectives.blocks, strict=True)
        ),
        verify=_total(params) if verify else 0,
        work=max((_call_work(call) for call in calls), default=0),
        in_flight=2
        * max(
            largest_saved([block.atoms for block in objectives.blocks]) if saved is None else saved,
            *outputs,
        ),
    )


def plan(
    sizes: MemorySizes,
    *,
    gramian_based: bool,
    allow_autojac: bool,
    max_bytes: int | None,
    device: torch.device,
    chunk_size: int,
) -> MemoryPlan:
    """Estimate the candidates (`per_sample`; `per_sample_streamed` for Gramian-based
    aggregators, the others need the Jacobian whole; `autojac` when allowed) and choose the
    first that fits the budget (`max_bytes`, else `default_budget`), else the one with the
    smallest estimate."""
    if max_bytes is not None:
        budget, source = max_bytes, "max_jacobian_bytes"
    else:
        budget, source = default_budget(device)
    peaks = {"per_sample": per_sample_peak(sizes)}
    if gramian_based:
        peaks["per_sample_streamed"] = streamed_peak(sizes)
    if allow_autojac:
        peaks["autojac"] = autojac_peak(sizes, chunk_size)
    fitting = [name for name, peak in peaks.items() if peak <= budget]
    engine = fitting[0] if fitting else min(peaks, key=peaks.__getitem__)
    return MemoryPlan(engine, budget, source, peaks, sizes)


def default_budget(device: torch.device) -> tuple[int, str]:
    """What the JD step may allocate when `max_jacobian_bytes` is not given: on a GPU, a
    share of the memory still free after the forward (the driver's free memory plus what
    PyTorch's allocator holds unused), so the plan sees what the forward already took."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        share = round(100 * GPU_FREE_SHARE)
        return int(GPU_FREE_SHARE * (free + cached)), f"{share}% of the free GPU memory"
    return CPU_BUDGET_BYTES, "the CPU default"


def largest_saved(roots: Sequence[Tensor]) -> int:
    """The bytes of the largest activation the autograd graph of `roots` saved for its
    backward (e.g. attention scores on a math kernel, which no recorded call shows), read
    from the graph's nodes: parameters and their views are not activations."""
    largest = 0
    seen: set[Node] = set()
    pending: list[Node | None] = [root.grad_fn for root in roots]
    while pending:
        node = pending.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for name in _saved_names(type(node)):
            try:
                value = getattr(node, name)
            except RuntimeError:  # already freed
                continue
            for tensor in value if isinstance(value, tuple | list) else (value,):
                if isinstance(tensor, Tensor) and not _is_parameter(tensor):
                    largest = max(largest, _nbytes(tensor))
        pending.extend(edge for edge, _ in node.next_functions)
    return largest


@functools.cache
def _saved_names(node_type: type) -> tuple[str, ...]:
    # C++ nodes expose each saved tensor as `_saved_<name>`; custom Functions as
    # `saved_tensors`. Looked up once per node type: `dir` is slow.
    names = dir(node_type)
    return tuple(n for n in names if n.startswith("_saved_") or n == "saved_tensors")


def _is_parameter(tensor: Tensor) -> bool:
    return isinstance(tensor, nn.Parameter) or isinstance(tensor._base, nn.Parameter)


def _nbytes(tensor: Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _total(tensors: Sequence[Tensor]) -> int:
    return sum(_nbytes(t) for t in tensors)


def _owned(module: nn.Module) -> int:
    return _total([p for p in module.parameters(recurse=False) if p.requires_grad])


def _call_work(call: Call) -> int:
    """Upper bound of the temporaries `_accumulate_call` / `weighted_sums` make for a call:
    copies of its input and output gradient in the weight's dtype (dtype change, live
    samples) and, for a Linear whose samples feed different objectives, one weight
    gradient per sample."""
    module = call.module
    size = module.weight.element_size()
    copies = (call.input.numel() + call.output.numel()) * size
    if isinstance(module, nn.Linear):
        return copies + call.output.shape[0] * _owned(module)
    return copies


def _size(count: float) -> str:
    units = ("B", "KiB", "MiB", "GiB")
    power = 0
    while abs(count) >= 1024 and power < len(units) - 1:
        count /= 1024
        power += 1
    return f"{count:.0f} B" if power == 0 else f"{count:.2f} {units[power]}"
