"""The per_sample engine after its checked first step: Jacobian rows made in tensor hooks
during the backward passes (written in place into the Jacobian where a pass allows it),
against torchjd's own Jacobian (`autojac.backward`) aggregated by UPGrad with the same
projector, and against the checked first step, which makes the rows after its pass from
every output gradient at once."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import torch
from torch import Tensor, nn
from torchjd.aggregation import UPGrad
from torchjd.autojac import backward, jac_to_grad

from jd_splits import (
    BatchedDualConeProjector,
    JacobianDescent,
    ObjectiveSet,
    Refinements,
    Split,
    _colours,
    _hooked,
    get_split,
)

if TYPE_CHECKING:
    from tests.jd_splits.conftest import Batch, ModelFactory, TinyRecursive

# name: (split, supervision steps, a sample without any label (dropped objectives))
CASES: dict[str, tuple[Split, int, bool]] = {
    # One pass whose samples fill the Jacobian's rows in order: the products are the rows.
    "iwrm_q_halt_in": (get_split("iwrm_q_halt_in"), 1, False),
    # A masked sample: the live ones still fill consecutive rows.
    "iwrm_masked": (get_split("iwrm_q_halt_in"), 1, True),
    # Two passes, each filling a slice of the rows (0..B-1, then B..2B-1).
    "iwrm_q_halt_out": (get_split("iwrm_q_halt_out"), 1, False),
    # Two blocks (supervision steps): slices at an offset.
    "stack_supervisions_and_iwrm": (get_split("stack_supervisions_and_iwrm"), 2, False),
    # Every sample feeds one objective per pass: one row per pass, as a weight gradient.
    "pixelwise_q_halt_in": (get_split("pixelwise_q_halt_in"), 1, False),
    "pixelwise_grouped": (get_split("pixelwise_q_halt_in", groups=3), 1, True),
    # Several objectives per sample and pass, not in sample order: scattered rows.
    "iwrm_pixelwise_grouped": (get_split("iwrm_pixelwise_q_halt_in", groups=5), 1, True),
}


def grads(model: nn.Module, rows: Tensor) -> list[Tensor]:
    tensors = [*model.parameters(), rows]
    return [torch.zeros_like(t) if t.grad is None else t.grad.clone() for t in tensors]


def clear(model: nn.Module, rows: Tensor) -> None:
    model.zero_grad(set_to_none=True)
    rows.grad = None


def objectives_of(model: TinyRecursive, batch: Batch, split: Split, steps: int) -> ObjectiveSet:
    internal = split.refinements is not Refinements.FINAL
    terms = [
        model(batch.tokens, batch.labels.roll(t, 1), batch.rows, internal=internal)
        for t in range(steps)
    ]
    return split.objectives(terms, step=0)


def torchjd_update(model: TinyRecursive, batch: Batch, split: Split, steps: int) -> list[Tensor]:
    """torchjd's Jacobian of the objective vector, aggregated by UPGrad with the batched
    projector (so that only the Jacobians can differ)."""
    clear(model, batch.rows)
    values = objectives_of(model, batch, split, steps).values
    inputs = [*model.parameters(), batch.rows]
    backward(values, inputs=inputs)
    jac_to_grad(inputs, UPGrad(projector=BatchedDualConeProjector()))
    return grads(model, batch.rows)


@pytest.mark.parametrize("name", list(CASES))
def test_hooked_steps_equal_torchjd_and_the_checked_step(
    name: str, tiny_model: ModelFactory
) -> None:
    split, steps, masked = CASES[name]
    model, batch = tiny_model()
    if masked:
        batch.labels[1] = -100  # sample 1 has no label: its objectives are dropped
    jd = JacobianDescent(model, engine="per_sample", split=split)
    updates = []
    for _ in range(3):  # the checked step, then two hooked ones
        clear(model, batch.rows)
        with jd.record():
            objectives = objectives_of(model, batch, split, steps)
            diagnostics = jd.backward(objectives, extra_inputs=[batch.rows])
        assert diagnostics.engine == "per_sample" and diagnostics.num_objectives > 1
        updates.append(grads(model, batch.rows))
    expected = torchjd_update(model, batch, split, steps)
    assert expected[-1].abs().sum() > 0 and expected[0].abs().sum() > 0
    for checked, hooked, again, want in zip(*updates, expected, strict=True):
        torch.testing.assert_close(hooked, want, rtol=1e-6, atol=1e-12)
        torch.testing.assert_close(hooked, checked, rtol=1e-9, atol=1e-14)
        assert torch.equal(hooked, again)


def test_the_pass_layouts_of_the_cases(tiny_model: ModelFactory) -> None:
    """The layouts the cases above are meant to exercise (so that they keep doing so)."""
    model, batch = tiny_model()
    batch.labels[1] = -100

    def layouts(split: Split, steps: int = 1) -> list[tuple[int | None, bool, int | None]]:
        plan = _colours.colours(objectives_of(model, batch, split, steps))
        return [(c.single, c.live is not None, c.start) for c in plan]

    assert layouts(get_split("iwrm_q_halt_in")) == [(None, True, 0)]
    assert layouts(get_split("iwrm_q_halt_out")) == [(None, True, 0), (None, True, 3)]
    assert layouts(get_split("pixelwise_q_halt_in", groups=3)) == [
        (0, False, None),
        (1, False, None),
        (2, False, None),
    ]
    scattered = layouts(get_split("iwrm_pixelwise_q_halt_in", groups=5))
    assert any(single is None and start is None for single, _, start in scattered)


class TwoBranches(nn.Module):
    """Two Linear calls on a plain input (nothing recorded upstream of either), and a head
    fed by both and by an extra input."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(3, 4, bias=False)
        self.head = nn.Linear(4, 2)

    def forward(self, x: Tensor, rows: Tensor) -> Tensor:
        hidden = torch.tanh(self.a(x)) * self.b(x) + rows[:, None, :]
        losses: Tensor = self.head(hidden).pow(2).sum((1, 2))
        return losses


def test_requested_calls_are_those_with_nothing_recorded_upstream() -> None:
    torch.manual_seed(0)
    model = TwoBranches().double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    rows = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    jd = JacobianDescent(model, engine="per_sample")
    recorder = jd._dispatch._recorder
    assert recorder is not None
    with jd.record():
        losses = model(x, rows)
        calls = recorder.calls
        assert [call.module for call in calls] == [model.a, model.b, model.head]
        assert _hooked.requested_calls([losses], calls, [rows]) == [0, 1]
        # Without the extra input, the head still has a and b upstream.
        assert _hooked.requested_calls([losses], calls, []) == [0, 1]
        # The head alone: nothing recorded upstream of it.
        assert _hooked.requested_calls([losses], calls[2:], []) == [0]


def test_two_branches_against_torchjd() -> None:
    torch.manual_seed(0)
    model = TwoBranches().double()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    rows = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    jd = JacobianDescent(model, engine="per_sample")
    for _ in range(2):
        clear(model, rows)
        with jd.record():
            jd.backward(ObjectiveSet.per_instance(model(x, rows)), extra_inputs=[rows])
    got = grads(model, rows)
    clear(model, rows)
    inputs = [*model.parameters(), rows]
    backward(model(x, rows), inputs=inputs)
    jac_to_grad(inputs, UPGrad(projector=BatchedDualConeProjector()))
    for mine, want in zip(got, grads(model, rows), strict=True):
        assert mine.abs().sum() > 0
        torch.testing.assert_close(mine, want, rtol=1e-6, atol=1e-12)
