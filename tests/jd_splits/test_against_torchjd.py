"""Every engine's update against torchjd's own `autojac.backward` + `jac_to_grad` on the
objective vector written out by hand, and a case whose weights are checked by hand."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest
import torch
from torch import Tensor, nn
from torchjd.aggregation import UPGrad
from torchjd.autojac import backward, jac_to_grad

from jd_splits import (
    JACOBIAN_COVERS,
    Diagnostics,
    EngineName,
    JacobianCovers,
    JacobianDescent,
    ObjectiveSet,
    Split,
    _memory,
    get_split,
)

if TYPE_CHECKING:
    from tests.jd_splits.conftest import ModelFactory, Terms

# (engine, streamed): streamed forces the per_sample engine to stream the Jacobian.
RUNS: tuple[tuple[EngineName, bool], ...] = (
    ("per_sample", False),
    ("per_sample", True),
    ("autogram", False),
    ("autojac", False),
    ("sequential", False),
)


@contextmanager
def streaming(streamed: bool) -> Iterator[None]:
    """Make the whole Jacobian's path look too big for the memory plan, so that the
    per_sample engine streams whatever its estimate for that (rarely the smaller)."""
    with pytest.MonkeyPatch.context() as patch:
        if streamed:
            patch.setattr(_memory, "per_sample_peak", lambda sizes: 1 << 62)
        yield


def label(engine: EngineName, streamed: bool) -> str:
    return "per_sample_streamed" if streamed else engine


B, P = 4, 6


def iwrm(terms: Terms, split: Split) -> Tensor:
    assert terms.halt is not None
    return terms.lm.sum(1) + terms.halt


def iwrm_pixelwise(terms: Terms, split: Split) -> Tensor:
    """(b, p) = lm[b, p] + sum(halt) / (B P), summed into the split's buckets if any."""
    assert terms.halt is not None
    pairs = (terms.lm + terms.halt.sum() / (B * P)).flatten()
    if split.groups is None:
        return pairs
    # The buckets are those of B * P objectives, drawn from (seed, step): read them from
    # the same split applied to losses that are all non-zero.
    probe = type(terms)(lm=torch.ones(B, P, dtype=torch.float64))
    bucket = split.objectives([probe], step=0).blocks[0].index.flatten()
    return pairs.new_zeros(split.groups).index_add(0, bucket, pairs)


CASES = {
    "iwrm_q_halt_in": (get_split("iwrm_q_halt_in"), iwrm),
    "iwrm_pixelwise_q_halt_in": (get_split("iwrm_pixelwise_q_halt_in"), iwrm_pixelwise),
    "iwrm_pixelwise_grouped": (get_split("iwrm_pixelwise_q_halt_in", groups=5), iwrm_pixelwise),
}


def updates(model: nn.Module, rows: Tensor) -> list[Tensor]:
    tensors = [*model.parameters(), rows]
    return [torch.zeros_like(t) if t.grad is None else t.grad.clone() for t in tensors]


def torchjd_update(
    model: nn.Module, rows: Tensor, objectives: Tensor, covers: JacobianCovers
) -> list[Tensor]:
    """torchjd differentiates the parameters and the rows; with "parameters" the weights
    come from the parameters' Jacobian alone and the rows get `J_rows^T w`."""
    params = list(model.parameters())
    backward(objectives, inputs=[*params, rows])
    if covers == "all":
        jac_to_grad([*params, rows], UPGrad())
    else:
        weights = jac_to_grad(params, UPGrad())
        assert weights is not None
        rows.grad = torch.tensordot(weights, rows.jac, dims=1)  # type: ignore[attr-defined]
        del rows.jac  # type: ignore[attr-defined]
    return updates(model, rows)


@pytest.mark.parametrize("covers", JACOBIAN_COVERS)
@pytest.mark.parametrize("name", list(CASES))
def test_engines_equal_torchjd(name: str, covers: JacobianCovers, tiny_model: ModelFactory) -> None:
    split, explicit = CASES[name]
    model, batch = tiny_model(B, P)
    vector = explicit(model(batch.tokens, batch.labels, batch.rows), split)
    expected = torchjd_update(model, batch.rows, vector, covers)
    for engine, streamed in RUNS:
        model.zero_grad(set_to_none=True)
        batch.rows.grad = None
        jd = JacobianDescent(model, engine=engine, split=split, jacobian_covers=covers)
        with jd.record(), streaming(streamed):
            terms = model(batch.tokens, batch.labels, batch.rows)
            objectives = split.objectives([terms], step=0)
            diagnostics = jd.backward(objectives, extra_inputs=[batch.rows])
        assert diagnostics.engine == label(engine, streamed)
        assert diagnostics.num_objectives == len(vector)
        for got, want in zip(updates(model, batch.rows), expected, strict=True):
            # torchjd's UPGrad solves with quadprog, ours with the batched projector.
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8)


def linear_case() -> tuple[nn.Linear, Tensor, Tensor]:
    """f_b = theta * a_b + c_b * row_b with a = (1, -1), c = (1, 0) and theta = 1, so that
    J_params = [[1], [-1]] and J_rows = [[1, 0], [0, 0]]."""
    layer = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        layer.weight.fill_(1.0)
    rows = torch.zeros(2, 1, dtype=torch.float64, requires_grad=True)
    return layer, torch.tensor([[1.0], [-1.0]], dtype=torch.float64), rows


@pytest.mark.parametrize(("engine", "streamed"), RUNS)
def test_rows_in_the_gramian_change_the_weights(engine: EngineName, streamed: bool) -> None:
    """G_params = [[1, -1], [-1, 1]]: the two objectives are exactly opposed. UPGrad
    projects e_1 / 2 and e_2 / 2 onto the dual cone {v : G v >= 0} = {v1 = v2}: both give
    (1/2, 1/2), so w = (1, 1), theta gets 1 - 1 = 0 and the rows J_rows^T w = (1, 0).
    With the rows, G = [[2, -1], [-1, 1]]: e_1 / 2 projects to (1/2, 1/2) (G v = (1/2, 0)),
    e_2 / 2 to (1/4, 1/2) (G v = (0, 1/4)), so w = (3/4, 1), theta gets 3/4 - 1 = -1/4 and
    the rows (3/4, 0)."""
    results: dict[str, tuple[Tensor, Tensor, Diagnostics]] = {}
    for covers in JACOBIAN_COVERS:
        layer, inputs, rows = linear_case()
        jd = JacobianDescent(layer, engine=engine, jacobian_covers=covers)
        with jd.record(), streaming(streamed):
            losses = layer(inputs).squeeze(1) + torch.tensor([1.0, 0.0]).double() * rows[:, 0]
            diagnostics = jd.backward(ObjectiveSet.per_instance(losses), extra_inputs=[rows])
        assert diagnostics.engine == label(engine, streamed)
        assert layer.weight.grad is not None and rows.grad is not None
        results[covers] = (layer.weight.grad, rows.grad, diagnostics)
    # UPGrad's regularisation (1e-4 on the normalised diagonal) moves the weights a little.
    theta, row_grads, diagnostics = results["parameters"]
    assert float(theta) == pytest.approx(0.0, abs=1e-3)
    assert row_grads.flatten().tolist() == pytest.approx([1.0, 0.0], abs=1e-3)
    assert (diagnostics.gramian_min, diagnostics.gramian_mean) == pytest.approx((-1.0, 0.0))
    theta, row_grads, diagnostics = results["all"]
    assert float(theta) == pytest.approx(-0.25, abs=1e-3)
    assert row_grads.flatten().tolist() == pytest.approx([0.75, 0.0], abs=1e-3)
    assert (diagnostics.gramian_min, diagnostics.gramian_mean) == pytest.approx((-1.0, 0.25))


def test_unknown_coverage_is_refused() -> None:
    with pytest.raises(ValueError, match="valid values: all, parameters"):
        JacobianDescent(nn.Linear(1, 1), jacobian_covers="rows")  # type: ignore[arg-type]
