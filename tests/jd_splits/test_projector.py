from __future__ import annotations

from typing import cast

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from torchjd.aggregation import UPGrad
from torchjd.linalg import PSDMatrix, QuadprogProjector

from jd_splits import BatchedDualConeProjector, _projector

F64 = torch.float64


def gramians(m: int, seed: int) -> dict[str, Tensor]:
    """Random and adversarial Gramians of m objectives."""
    g = torch.Generator().manual_seed(seed)
    wide = torch.randn(m, 3 * m, generator=g, dtype=F64)
    low_rank = torch.randn(m, max(1, m // 3), generator=g, dtype=F64)
    scales = torch.logspace(-4, 2, m, dtype=F64)[torch.randperm(m, generator=g)]
    simplex = torch.full((m, m), -1.0 / (m - 1), dtype=F64).fill_diagonal_(1.0)
    near_zero = wide.clone()
    near_zero[: m // 4] *= 1e-7
    aligned = torch.randn(m, 3 * m, generator=g, dtype=F64) + 2 * torch.randn(
        1, 3 * m, generator=g, dtype=F64
    )
    opposed = torch.cat([wide[: m // 2], -wide[: m - m // 2] + 0.1 * wide[m // 2 :]])
    return {
        "random": wide @ wide.T,
        "rank_deficient": low_rank @ low_rank.T,
        "scaled_rows": (wide * scales[:, None]) @ (wide * scales[:, None]).T,
        "simplex_conflict": simplex,
        "near_zero_rows": near_zero @ near_zero.T,
        "aligned": aligned @ aligned.T,
        "opposed_pairs": opposed @ opposed.T,
        "zero": torch.zeros(m, m, dtype=F64),
    }


def regularised(G: Tensor) -> Tensor:
    """The matrix both projectors minimise over (torchjd's normalisation + regularisation)."""
    trace = float(G.trace())
    normalised = G / trace if trace >= 1e-4 else torch.zeros_like(G)
    return normalised + 1e-4 * torch.eye(G.shape[0], dtype=G.dtype)


def assert_matches_quadprog(U: Tensor, G: Tensor, rtol: float = 1e-5) -> None:
    got = BatchedDualConeProjector()(U, G)
    want = QuadprogProjector()(U, cast(PSDMatrix, G))
    assert got.shape == want.shape == U.shape
    m = G.shape[0]
    q = regularised(G)
    lower = U.reshape(-1, m)
    for v, w, u in zip(got.reshape(-1, m), want.reshape(-1, m), lower, strict=True):
        assert bool((v >= u - 1e-12 * float(u.abs().max())).all())
        # The metric that matters: the projected gradient J^T v, and the objective value.
        difference = v - w
        norm = float(w @ q @ w)
        assert float(difference @ q @ difference) <= rtol**2 * norm + 1e-30
        assert float(v @ q @ v) == pytest.approx(norm, rel=rtol, abs=1e-30)


@pytest.mark.parametrize("m", [2, 7, 40])
@pytest.mark.parametrize("kind", list(gramians(4, 0)))
def test_matches_quadprog_for_upgrad(kind: str, m: int) -> None:
    G = gramians(m, seed=m)[kind]
    U = torch.eye(m, dtype=F64) / m
    assert_matches_quadprog(U, G)


@pytest.mark.parametrize("kind", ["random", "rank_deficient", "simplex_conflict", "near_zero_rows"])
def test_weights_match_quadprog_directly_and_stay_feasible(kind: str) -> None:
    m = 30
    G = gramians(m, seed=1)[kind]
    U = torch.eye(m, dtype=F64) / m
    got = BatchedDualConeProjector()(U, G)
    want = QuadprogProjector()(U, cast(PSDMatrix, G))
    assert bool((got >= U - 1e-12).all())
    # The regularised problem has a unique solution, so the weights agree as well (within
    # its conditioning, about 1 / reg_eps).
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * float(want.abs().max()))


def test_any_batch_of_vectors() -> None:
    G = gramians(9, seed=2)["random"]
    U = torch.randn(3, 2, 9, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert_matches_quadprog(U, G)
    single = torch.rand(9, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert_matches_quadprog(single, G)


@pytest.mark.parametrize("kind", list(gramians(4, 0)))
def test_upgrad_update_does_not_conflict(kind: str) -> None:
    m = 25
    G = gramians(m, seed=3)[kind]
    weights = UPGrad(projector=BatchedDualConeProjector()).gramian_weighting(G)
    # G w = J (J^T w): the update's inner product with every objective's gradient. Only the
    # regularisation (reg_eps * trace) may make it slightly negative, as with quadprog.
    slack = 1e-4 * float(G.trace()) * float(weights.abs().max()) * 1.01 + 1e-12
    assert float((G @ weights).min()) >= -slack


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 10),
    n=st.integers(1, 12),
    seed=st.integers(0, 2**16),
    shift=st.floats(-1.0, 1.0),
)
def test_property_matches_quadprog(m: int, n: int, seed: int, shift: float) -> None:
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(m, n, generator=g, dtype=F64) + shift * torch.randn(
        1, n, generator=g, dtype=F64
    )
    assert_matches_quadprog(torch.eye(m, dtype=F64) / m, J @ J.T)


def test_float32_in_float32_out() -> None:
    G = gramians(6, seed=4)["random"].float()
    W = BatchedDualConeProjector()(torch.eye(6) / 6, G)
    assert W.dtype == torch.float32


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="G"):
        BatchedDualConeProjector()(torch.ones(3), torch.ones(3, 4))
    with pytest.raises(ValueError, match="finite"):
        BatchedDualConeProjector()(torch.ones(2), torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="tolerance"):
        BatchedDualConeProjector(tolerance=0)


@pytest.mark.parametrize("m", [32, 64, 100])
@pytest.mark.parametrize("shift", [0.1, 0.3])
def test_iwrm_sized_conflicts_match_quadprog(m: int, shift: float) -> None:
    """Gramians like IWRM's in training (a shared direction, some conflicting pairs): the
    first guess, the direct polish and, at m = 100, free sets past the direct limit."""
    g = torch.Generator().manual_seed(m)
    J = torch.randn(m, 3 * m, generator=g, dtype=F64) + shift * torch.randn(
        1, 3 * m, generator=g, dtype=F64
    )
    G = J @ J.T
    assert 0 < float((G < 0).double().mean()) < 0.5
    assert_matches_quadprog(torch.eye(m, dtype=F64) / m, G)


def test_without_conflicts_the_vectors_are_their_own_projection() -> None:
    """`Q u >= 0` for every row: `v = u` is optimal and certified at once."""
    J = torch.rand(12, 30, generator=torch.Generator().manual_seed(5), dtype=F64)
    U = torch.eye(12, dtype=F64) / 12
    torch.testing.assert_close(BatchedDualConeProjector()(U, J @ J.T), U, rtol=1e-15, atol=0)


@pytest.mark.parametrize("m", [5, 40])
def test_direct_and_conjugate_gradient_free_set_solves_agree(m: int) -> None:
    g = torch.Generator().manual_seed(m)
    J = torch.randn(m, 2 * m, generator=g, dtype=F64)
    q = J @ J.T / m + 1e-3 * torch.eye(m, dtype=F64)
    start = torch.randn(7, m, generator=g, dtype=F64)
    free = torch.rand(7, m, generator=g) < 0.5
    free[0] = False  # a row with nothing free keeps its start
    direct = _projector._solve_free_blocks(q, start, free)
    iterated = _projector._conjugate_gradients(q, start, free)
    torch.testing.assert_close(direct, iterated, rtol=1e-7, atol=1e-9)
    assert torch.equal(direct[~free], start[~free])
    # The free coordinates solve Q_FF y_F = -Q_FA y_A: the gradient vanishes on them.
    assert float(((direct @ q) * free).abs().max()) < 1e-9
