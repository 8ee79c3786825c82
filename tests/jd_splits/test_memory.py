"""The memory plan of the per_sample engine: what its estimate counts, the fallbacks it
leads to (which change nothing numerically), how it is reported, and how it compares with
the peak actually allocated."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import torch
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

from jd_splits import (
    Diagnostics,
    EngineName,
    JacobianDescent,
    MemoryPlan,
    ObjectiveSet,
    Split,
    _colours,
    _memory,
    get_split,
)

if TYPE_CHECKING:
    from tests.jd_splits.conftest import Batch, ModelFactory, TinyRecursive

# Long enough that one pass's output gradients outweigh the Jacobian, as at full scale.
# SHORT: so short that the Jacobian outweighs every pass's output gradients (streaming pays);
# LONGEST: the backward's in-flight gradients outweigh the Jacobian's copies.
LENGTH, SHORT, LONGEST, BATCH = 24, 2, 96, 8


def grads(model: nn.Module, batch: Batch) -> list[Tensor]:
    out = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]
    out.append(torch.zeros_like(batch.rows) if batch.rows.grad is None else batch.rows.grad.clone())
    return out


def step(jd: JacobianDescent, model: TinyRecursive, batch: Batch, split: Split) -> Diagnostics:
    """One JD step with cleared gradients."""
    model.zero_grad(set_to_none=True)
    batch.rows.grad = None
    with jd.record():
        objectives = split.objectives([model(batch.tokens, batch.labels, batch.rows)])
        return jd.backward(objectives, extra_inputs=[batch.rows])


def make_jd(
    model: nn.Module,
    split: Split | None,
    aggregator: str,
    budget: int,
    engine: EngineName = "auto",
) -> JacobianDescent:
    return JacobianDescent(
        model, aggregator=aggregator, engine=engine, split=split, max_jacobian_bytes=budget
    )


def by_hand(model: TinyRecursive, batch: Batch, split: Split) -> tuple[int, int, int]:
    """The Jacobian's bytes (parameters and extra rows, one row per base objective), one
    backward pass's output-gradient bytes (every grad-enabled Linear / Embedding output
    and the extra rows), counted with plain forward hooks, and what a per_sample pass
    keeps of them: the token embedding's (nothing recorded upstream of it) and the rows."""
    sizes: list[int] = []
    embedding: list[int] = []

    def hook(module: nn.Module, args: Any, output: Tensor) -> None:
        if output.requires_grad:
            sizes.append(output.numel() * output.element_size())
            if isinstance(module, nn.Embedding):
                embedding.append(sizes[-1])

    leaves = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Embedding)]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        objectives = split.objectives([model(batch.tokens, batch.labels, batch.rows)])
    finally:
        for handle in handles:
            handle.remove()
    rows = batch.rows.numel() * batch.rows.element_size()
    row = sum(p.numel() * p.element_size() for p in model.parameters()) + rows
    return objectives.base_count * row, sum(sizes) + rows, sum(embedding) + rows


def per_sample_estimate(model: TinyRecursive, batch: Batch, split: Split, aggregator: str) -> int:
    """per_sample's estimate for a first (checked) step, from a roomy budget."""
    jd = make_jd(model, split, aggregator, 1 << 40)
    step(jd, model, batch, split)
    assert jd.memory_plan is not None and jd.memory_plan.engine == "per_sample"
    return jd.memory_plan.estimates["per_sample"]


# (split, aggregator, sequence length, the engine it falls back to when per_sample's
# estimate is a byte over the budget)
FALLBACKS = [
    ("iwrm_q_halt_in", "upgrad", SHORT, "per_sample_streamed"),
    ("iwrm_q_halt_in", "dualproj", SHORT, "per_sample_streamed"),
    ("iwrm_q_halt_in", "config", LONGEST, "autojac"),
]


@pytest.mark.parametrize(("name", "aggregator", "length", "fallback"), FALLBACKS)
def test_output_gradients_count_and_the_fallback_changes_nothing(
    name: str, aggregator: str, length: int, fallback: str, tiny_model: ModelFactory
) -> None:
    model, batch = tiny_model(batch=BATCH, length=length)
    split = get_split(name)
    jacobian, outputs, requested = by_hand(model, batch, split)
    estimate = per_sample_estimate(model, batch, split, aggregator)
    expected = grads(model, batch)
    jd = make_jd(model, split, aggregator, estimate - 1)
    diagnostics = step(jd, model, batch, split)
    plan = jd.memory_plan
    assert plan is not None and plan.sizes.jacobian == jacobian
    # The streamed path keeps every output gradient of every pass, per_sample only those
    # it asks autograd for.
    assert (plan.sizes.output_gradients, plan.sizes.requested_gradients) == (outputs, requested)
    assert plan.estimates["per_sample"] == estimate > plan.budget
    assert (diagnostics.engine, plan.engine, plan.fits, plan.fallback) == (
        fallback,
        fallback,
        True,
        True,
    )
    for got, want in zip(grads(model, batch), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-10)


def test_nothing_fits_takes_the_smallest_estimate(
    tiny_model: ModelFactory, caplog: pytest.LogCaptureFixture
) -> None:
    model, batch = tiny_model(batch=BATCH, length=LENGTH)
    split = get_split("pixelwise_q_halt_in")
    jd = make_jd(model, split, "upgrad", 1)
    with caplog.at_level(logging.INFO, logger="jd_splits"):
        diagnostics = step(jd, model, batch, split)
    plan = jd.memory_plan
    assert plan is not None and not plan.fits
    assert plan.engine == min(plan.estimates, key=plan.estimates.__getitem__)
    assert diagnostics.engine == plan.engine
    # One pass per pixel: keeping them all (streamed) is the costliest here.
    assert plan.sizes.passes == LENGTH
    assert plan.estimates["per_sample_streamed"] > plan.estimates["per_sample"]
    [record] = caplog.records
    assert record.levelno == logging.WARNING and "EXCEEDS the budget" in record.getMessage()


def test_the_plan_is_logged_once_per_instance(
    tiny_model: ModelFactory, caplog: pytest.LogCaptureFixture
) -> None:
    model, batch = tiny_model(batch=BATCH, length=SHORT)
    split = get_split("iwrm_q_halt_in")
    budget = per_sample_estimate(model, batch, split, "upgrad") - 1
    with caplog.at_level(logging.INFO, logger="jd_splits"):
        roomy = make_jd(model, split, "upgrad", 1 << 40)
        for _ in range(3):
            assert step(roomy, model, batch, split).engine == "per_sample"
        # The checked first step holds the parameters' gradients too: a byte short of its
        # estimate, it streams; the next steps fit, and run per_sample.
        tight = make_jd(model, split, "upgrad", budget)
        engines = [step(tight, model, batch, split).engine for _ in range(2)]
        assert engines == ["per_sample_streamed", "per_sample"]
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "jd_splits"]
    assert len(messages) == 2
    (first_level, first), (second_level, second) = messages
    assert first_level == logging.INFO
    assert first.startswith("JacobianDescent memory plan: per_sample, estimated peak")
    assert "vs budget 1024.00 GiB (max_jacobian_bytes): fits" in first
    assert second_level == logging.WARNING
    assert second.startswith("JacobianDescent memory plan: per_sample_streamed, estimated")


def test_explicit_per_sample_refuses_a_whole_jacobian_past_the_budget(
    tiny_model: ModelFactory,
) -> None:
    model, batch = tiny_model(batch=BATCH, length=LENGTH)
    split = get_split("iwrm_q_halt_in")
    jd = make_jd(
        model,
        split,
        "config",
        per_sample_estimate(model, batch, split, "config") - 1,
        engine="per_sample",
    )
    with pytest.raises(MemoryError, match="needs the Jacobian whole"):
        step(jd, model, batch, split)


def test_estimate_of_a_linear_model_by_hand() -> None:
    """Every term of the estimate for `Linear(3, 5) -> ReLU -> Linear(5, 2)` in float64,
    batch 4, one loss per sample."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    jd = make_jd(model, None, "upgrad", 1 << 40)
    with jd.record():
        losses = model(torch.randn(4, 3, dtype=torch.float64)).pow(2).sum(1)
        jd.backward(ObjectiveSet.per_instance(losses))
    plan = jd.memory_plan
    assert plan is not None
    f64 = 8
    params = (3 * 5 + 5) + (5 * 2 + 2)
    outputs = 4 * 5 + 4 * 2  # one gradient per output element, all returned at once
    # Hooked passes ask for the first Linear's output gradient only (nothing recorded lies
    # upstream of it); the second one's becomes rows in a hook.
    requested = 4 * 5
    # Largest per-call temporary: the first Linear's input and output copies plus one
    # weight gradient (with bias) per sample.
    work = (4 * 3 + 4 * 5) * f64 + 4 * (3 * 5 + 5) * f64
    assert plan.sizes == _memory.MemorySizes(
        jacobian=4 * params * f64,
        folded=0,
        aggregator=0,
        module_jacobian=4 * (3 * 5 + 5) * f64,
        output_gradients=outputs * f64,
        requested_gradients=requested * f64,
        blocks=1,
        passes=1,
        cotangents=4 * f64,
        verify=params * f64,  # the first step checks itself against autograd's gradient
        work=work,
        # Twice the largest activation: the first Linear's output (the ReLU saves it).
        in_flight=2 * 4 * 5 * f64,
    )
    # A pass keeps the first Linear's output gradient, and holds in-flight gradients while
    # a hook makes rows.
    in_flight = 2 * 4 * 5 * f64
    assert plan.estimates == {
        "per_sample": (4 * params + requested + params + 4) * f64 + in_flight + work,
        "per_sample_streamed": (outputs + 4 * (3 * 5 + 5) + params + 4) * f64 + work,
        # torchjd's jac: the rows' chunks and their concatenation, one backward at a time.
        "autojac": (2 * 4 * params + 4 + 2 * 4 * 5) * f64,
    }


class _Scores(nn.Module):
    """Attention-like: its largest activation, the softmax of `h h^T`, is no Linear's."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.proj(x)
        scores = (h @ h.transpose(1, 2)).softmax(-1)
        losses: Tensor = (scores @ h).pow(2).sum((1, 2))
        return losses


def test_in_flight_gradients_come_from_the_largest_saved_activation() -> None:
    torch.manual_seed(0)
    model = _Scores().double()
    jd = make_jd(model, None, "upgrad", 1 << 40)
    with jd.record():
        jd.backward(ObjectiveSet.per_instance(model(torch.randn(3, 10, 4, dtype=torch.float64))))
    plan = jd.memory_plan
    assert plan is not None
    assert plan.sizes.in_flight == 2 * (3 * 10 * 10) * 8  # the scores, not h (3 x 10 x 4)


@pytest.mark.parametrize("name", ["iwrm_q_halt_in", "iwrm_q_halt_out", "pixelwise_q_halt_in"])
def test_passes_without_building_the_colours(name: str, tiny_model: ModelFactory) -> None:
    model, batch = tiny_model(batch=BATCH, length=LENGTH)
    terms = model(batch.tokens, batch.labels, batch.rows)
    objectives = get_split(name, groups=5 if name.startswith("pixel") else None).objectives(
        [terms], step=0
    )
    per_block = _colours.passes_per_block(objectives)
    assert sum(per_block) == len(_colours.colours(objectives))


def test_default_budget_is_a_share_of_the_free_gpu_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gib = 1 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (10 * gib, 140 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 3 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 2 * gib)
    budget, source = _memory.default_budget(torch.device("cuda", 0))
    assert budget == int(0.8 * 11 * gib) and source == "80% of the free GPU memory"
    assert _memory.default_budget(torch.device("cpu")) == (4 * gib, "the CPU default")


def _peak_allocated(backward: Callable[[], Diagnostics]) -> tuple[Diagnostics, int]:
    """Run `backward` and return the peak of the bytes it allocated beyond what was live
    before, from the profiler's allocation events (CPU tensors have no allocator stats)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        diagnostics = backward()
    results = prof.profiler.kineto_results if prof.profiler is not None else None
    if results is None:
        pytest.skip("the profiler gave no results")
    allocation = torch._C._profiler._EventType.Allocation
    events, pending = [], list(results.experimental_event_tree())
    while pending:
        event = pending.pop()
        pending.extend(event.children)
        if event.tag == allocation:
            events.append((event.start_time_ns, event.extra_fields.alloc_size))
    if not events:
        pytest.skip("the profiler recorded no allocations")
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return diagnostics, peak


@pytest.mark.parametrize(
    ("name", "aggregator", "length", "budget", "expected"),
    [
        ("iwrm_q_halt_in", "upgrad", LENGTH, 1 << 40, "per_sample"),
        ("iwrm_q_halt_out", "upgrad", LENGTH, 1 << 40, "per_sample"),
        ("pixelwise_q_halt_in", "upgrad", LENGTH, 1 << 40, "per_sample"),
        ("iwrm_q_halt_in", "upgrad", SHORT, -1, "per_sample_streamed"),
        ("iwrm_q_halt_in", "config", LENGTH, 1 << 40, "per_sample"),
        ("iwrm_q_halt_in", "config", LONGEST, -1, "autojac"),
    ],
)
def test_estimate_against_the_allocated_peak(
    name: str,
    aggregator: str,
    length: int,
    budget: int,
    expected: str,
    tiny_model: ModelFactory,
) -> None:
    """The estimate is at least the peak the step really allocates (the point of a plan),
    and not far above it. A budget of -1 means: per_sample's estimate, less a byte."""
    model, batch = tiny_model(batch=BATCH, length=length)
    split = get_split(name)
    if budget == -1:
        budget = per_sample_estimate(model, batch, split, aggregator) - 1
    jd = make_jd(model, split, aggregator, budget)
    with jd.record():
        objectives = split.objectives([model(batch.tokens, batch.labels, batch.rows)])
        diagnostics, peak = _peak_allocated(
            lambda: jd.backward(objectives, extra_inputs=[batch.rows])
        )
    plan: MemoryPlan | None = jd.memory_plan
    assert plan is not None and diagnostics.engine == plan.engine == expected
    estimate = plan.estimates[plan.engine]
    assert peak <= estimate <= 2 * peak, (estimate, peak)


@pytest.mark.parametrize("name", ["iwrm_q_halt_in", "pixelwise_q_halt_in"])
def test_estimate_of_a_hooked_step_against_the_allocated_peak(
    name: str, tiny_model: ModelFactory
) -> None:
    """After the checked first step, the passes make the rows in hooks and keep only the
    requested output gradients: the estimate still bounds the peak, and closely."""
    model, batch = tiny_model(batch=BATCH, length=LENGTH)
    split = get_split(name)
    jd = make_jd(model, split, "upgrad", 1 << 40)
    step(jd, model, batch, split)
    with jd.record():
        objectives = split.objectives([model(batch.tokens, batch.labels, batch.rows)])
        diagnostics, peak = _peak_allocated(
            lambda: jd.backward(objectives, extra_inputs=[batch.rows])
        )
    plan = jd.memory_plan
    assert plan is not None and diagnostics.engine == plan.engine == "per_sample"
    sizes = plan.sizes
    assert sizes.verify == 0 and 0 < sizes.requested_gradients < sizes.output_gradients
    estimate = plan.estimates["per_sample"]
    assert peak <= estimate <= 2 * peak, (estimate, peak)
