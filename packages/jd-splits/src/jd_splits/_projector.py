"""A dual-cone projector that solves all of UPGrad's quadratic programs at once."""

from __future__ import annotations

import torch
from torch import Tensor
from torchjd.linalg import DualConeProjector

_CHECK_EVERY = 8
# Conjugate-gradient iterations of one polish (each costs one gradient iteration).
_POLISH_ITERATIONS = 32
# Primal-dual active-set iterations of one polish, and of the first one (from a guess).
_ACTIVE_SET_ITERATIONS = 4
_FIRST_ACTIVE_SET_ITERATIONS = 16
# Free sets up to this size are solved directly (a Cholesky factor of each row's gathered
# block), larger ones by conjugate gradients. On CPU, one batched factorisation costs less
# than the dozens of small tensor operations of conjugate gradients.
_DIRECT_MAX = 64


class BatchedDualConeProjector(DualConeProjector):
    """Solves, for every row `u` of `U`, `min_v v^T Q v  s.t.  v >= u`, with
    `Q = G / trace(G) + reg_eps * I` (the problem torchjd's `QuadprogProjector` solves, with
    the same normalisation and regularisation), all rows at once with batched tensor
    operations on `G`'s device.

    Method, in float64: accelerated projected gradient (FISTA with gradient restart) on the
    Jacobi-scaled problem; once a row's free set (`v > u`) stops changing, Newton steps on
    it (primal-dual active-set iterations solved by conjugate gradients). A row stops when
    its duality gap
    `lambda^T (v - u) + 0.5 * delta^T Q^-1 delta` (`lambda`, `delta`: the positive and
    negative parts of `Qv`) is at most `tolerance**2 * f(v)`, `f(v) = 0.5 v^T Q v`; the gap
    bounds `f(v) - f*`, so the projected gradient `J^T v` is within relative distance
    `tolerance` of the exact one. The terms of the gap are non-negative sums, so it is
    computed without cancellation (down to its rounding floor, which ill-conditioned
    rank-deficient Gramians reach). Rows that have stopped leave the batch.

    :param norm_eps: below this trace, `G` counts as zero (as in torchjd).
    :param reg_eps: the regularisation added to the diagonal of the normalised `G`.
    :param tolerance: the certified relative accuracy of `J^T v`.
    :param max_iterations: a guard against non-finite input; raises when reached.
    """

    def __init__(
        self,
        *,
        norm_eps: float = 1e-4,
        reg_eps: float = 1e-4,
        tolerance: float = 1e-7,
        max_iterations: int = 100_000,
    ) -> None:
        if norm_eps < 0 or reg_eps <= 0:
            raise ValueError(f"need norm_eps >= 0 and reg_eps > 0, got {norm_eps}, {reg_eps}")
        if not 0 < tolerance < 1:
            raise ValueError(f"tolerance must be in (0, 1), got {tolerance}")
        self.norm_eps = norm_eps
        self.reg_eps = reg_eps
        self.tolerance = tolerance
        self.max_iterations = max_iterations

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(norm_eps={self.norm_eps}, reg_eps={self.reg_eps}, "
            f"tolerance={self.tolerance})"
        )

    def __call__(self, U: Tensor, G: Tensor) -> Tensor:
        if G.ndim != 2 or G.shape[0] != G.shape[1] or U.shape[-1:] != G.shape[:1]:
            raise ValueError(
                f"need G [m, m] and U [..., m], got G {tuple(G.shape)} and U {tuple(U.shape)}"
            )
        m = G.shape[0]
        rows = U.reshape(-1, m).to(device=G.device, dtype=torch.float64)
        if m == 0 or rows.shape[0] == 0:
            return torch.zeros(U.shape, dtype=G.dtype, device=G.device)
        gramian = G.detach().to(torch.float64)
        if not (torch.isfinite(gramian).all() and torch.isfinite(rows).all()):
            raise ValueError("the Gramian and the vectors to project must be finite")
        trace = gramian.diagonal().sum()
        q = torch.where(trace < self.norm_eps, torch.zeros_like(gramian), gramian / trace)
        q = q + self.reg_eps * torch.eye(m, dtype=torch.float64, device=G.device)
        solution = self._solve(q, rows)
        return solution.reshape(U.shape).to(G.dtype)

    def _solve(self, q: Tensor, u: Tensor) -> Tensor:
        # v = d * y turns the bound v >= u into y >= u / d and gives Q a unit diagonal,
        # which removes the ill-conditioning of objectives with very different scales.
        d = q.diagonal().rsqrt()
        q = q * d[:, None] * d[None, :]
        lower = u / d
        threshold = self.tolerance**2
        start = lower @ q
        if not bool((start < 0).any()) and bool(
            _certified(lower, start, lower, None, threshold).all()
        ):
            # Qu >= 0: v = u is optimal (multipliers Qu, v - u = 0), the common case of
            # objectives without conflicts (e.g. IWRM). Certified without the Cholesky
            # factor and the step size, which cost most of the time for small m; the
            # iterations below would stop at their first check with the same answer.
            return lower * d
        cholesky = torch.linalg.cholesky(q)
        step = 1.0 / _largest_eigenvalue(q)

        solution = torch.empty_like(lower)
        remaining = torch.arange(lower.shape[0], device=lower.device)
        y = lower.clone()
        z = y.clone()
        momentum = torch.ones(lower.shape[0], 1, dtype=q.dtype, device=q.device)
        previous_free = torch.zeros_like(lower, dtype=torch.bool)
        # The free set of each row's last failed polish: not retried until it changes.
        failed_free = torch.zeros_like(previous_free)
        for iteration in range(self.max_iterations):
            if iteration % _CHECK_EVERY == 0:
                free = y > lower
                stable = (free == previous_free).all(1) & free.any(1)
                previous_free = free
                if iteration == 0:
                    free, stable = _first_guess(y @ q)
                done = torch.zeros_like(stable)
                eligible = stable & ~(free == failed_free).all(1)
                if bool(eligible.any()):
                    iterations = _FIRST_ACTIVE_SET_ITERATIONS if iteration == 0 else None
                    y, done, failed = _polish(
                        q, lower, y, free, eligible, cholesky, threshold, iterations
                    )
                    failed_free[failed] = free[failed]
                done |= _certified(y, y @ q, lower, cholesky, threshold)
                if bool(done.any()):
                    solution[remaining[done]] = y[done]
                    keep = ~done
                    remaining, y, z, momentum, lower, previous_free, failed_free = (
                        remaining[keep],
                        y[keep],
                        z[keep],
                        momentum[keep],
                        lower[keep],
                        previous_free[keep],
                        failed_free[keep],
                    )
                    if remaining.numel() == 0:
                        return solution * d
            y_next = torch.maximum(lower, z - (z @ q) * step)
            momentum_next = (1 + torch.sqrt(1 + 4 * momentum * momentum)) / 2
            z_next = y_next + (momentum - 1) / momentum_next * (y_next - y)
            # Gradient restart (O'Donoghue and Candes): drop the momentum when it points uphill.
            restart = ((z - y_next) * (y_next - y)).sum(1, keepdim=True) > 0
            z = torch.where(restart, y_next, z_next)
            momentum = torch.where(restart, torch.ones_like(momentum), momentum_next)
            y = y_next
        raise RuntimeError(
            f"the batched dual-cone projection did not converge in {self.max_iterations} "
            f"iterations ({remaining.numel()} of {u.shape[0]} problems left)"
        )


def _first_guess(gradient: Tensor) -> tuple[Tensor, Tensor]:
    """A free set to polish before any iteration, and the rows to try it on: the
    coordinates whose multiplier `Qu` is negative at `y = u`, where they are few enough to
    solve directly. From there the active-set iterations usually settle in a few steps,
    which spares the projected-gradient iterations (most of the time for small m)."""
    free = gradient < 0
    count = free.sum(1)
    return free, (count > 0) & (count <= _DIRECT_MAX)


def _polish(
    q: Tensor,
    lower: Tensor,
    y: Tensor,
    free: Tensor,
    eligible: Tensor,
    cholesky: Tensor,
    threshold: float,
    iterations: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Newton steps for the eligible rows (their free set `y > lower` has stopped changing):
    a few primal-dual active-set iterations, each minimising over the current free set with
    the other coordinates at their bound (conjugate gradients warm-started at `y`), then
    freeing bound coordinates whose multiplier is negative and fixing free ones that fell
    below their bound. Keeps the rows whose result is certified; returns the new `y`, the
    rows certified and the rows that failed."""
    rows = eligible.nonzero().squeeze(1)
    row_lower = lower[rows]
    row_free = free[rows]
    candidate = y[rows].clone()
    for _ in range(iterations or _ACTIVE_SET_ITERATIONS):
        candidate = torch.where(row_free, candidate, row_lower)
        candidate = _minimise_on_free_set(q, candidate, row_free)
        multiplier = candidate @ q
        updated = (row_free & (candidate >= row_lower)) | (~row_free & (multiplier < 0))
        settled = (updated == row_free).all(1)
        row_free = updated
        if bool(settled.all()):
            break
    candidate = torch.maximum(candidate, row_lower)
    certified = _certified(candidate, candidate @ q, row_lower, cholesky, threshold)
    y = y.clone()
    y[rows[certified]] = candidate[certified]
    done = torch.zeros_like(eligible)
    done[rows[certified]] = True
    return y, done, eligible & ~done


def _minimise_on_free_set(q: Tensor, start: Tensor, free: Tensor) -> Tensor:
    """`Q_FF y_F = -Q_FA y_A` for every row at once (`y_A` from `start`)."""
    if int(free.sum(1).max()) <= _DIRECT_MAX:
        return _solve_free_blocks(q, start, free)
    return _conjugate_gradients(q, start, free)


def _solve_free_blocks(q: Tensor, start: Tensor, free: Tensor) -> Tensor:
    """Exactly, by a Cholesky factor of each row's block `Q_FF`, gathered into `k x k`
    (`k`: the largest free set) and padded with identity rows that keep `start`."""
    count = free.sum(1, keepdim=True)
    k = int(count.max())
    if k == 0:
        return start.clone()
    # The free coordinates first, then bound ones as padding: k distinct indices per row.
    index = torch.argsort((~free).to(torch.uint8), dim=1, stable=True)[:, :k]
    valid = torch.arange(k, device=q.device)[None, :] < count
    block = q[index[:, :, None], index[:, None, :]]
    eye = torch.eye(k, dtype=q.dtype, device=q.device).expand_as(block)
    block = torch.where(valid[:, :, None] & valid[:, None, :], block, eye)
    bound = torch.where(free, 0.0, start)
    rhs = torch.where(valid, (-(bound @ q)).gather(1, index), start.gather(1, index))
    solved = torch.cholesky_solve(rhs.unsqueeze(-1), torch.linalg.cholesky(block)).squeeze(-1)
    return start.scatter(1, index, solved)


def _conjugate_gradients(q: Tensor, start: Tensor, free: Tensor) -> Tensor:
    """Conjugate gradients on `Q_FF y_F = -Q_FA y_A` (rows leave the batch as they
    converge)."""
    mask = free.to(q.dtype)
    candidate = start.clone()
    residual = -(candidate @ q) * mask
    direction = residual.clone()
    norm = (residual * residual).sum(1, keepdim=True)
    # The duality-gap certificate has the last word; the residual only has to be small.
    tolerance = 1e-20 * norm
    active = torch.arange(start.shape[0], device=start.device)
    for iteration in range(_POLISH_ITERATIONS):
        if iteration % 4 == 3:
            going = (norm > tolerance[active]).squeeze(1)
            if not bool(going.all()):
                active, mask, residual, direction, norm = (
                    active[going],
                    mask[going],
                    residual[going],
                    direction[going],
                    norm[going],
                )
                if active.numel() == 0:
                    break
        product = (direction @ q) * mask
        curvature = (direction * product).sum(1, keepdim=True)
        alpha = torch.where(curvature > 0, norm / curvature.clamp_min(1e-300), 0.0)
        candidate[active] += alpha * direction
        residual = residual - alpha * product
        new_norm = (residual * residual).sum(1, keepdim=True)
        beta = torch.where(norm > 0, new_norm / norm.clamp_min(1e-300), 0.0)
        direction = residual + beta * direction
        norm = new_norm
    return candidate


def _certified(
    y: Tensor, qy: Tensor, lower: Tensor, cholesky: Tensor | None, threshold: float
) -> Tensor:
    """Rows whose duality gap is within `threshold * f(y)`, or within the rounding error of
    computing it: `Qy` carries an error of about `eps * sqrt(m) * |Q| |y|`, and `|Q_jk| <= 1`
    for the unit-diagonal `Q`, so the gap is known to about `eps * sqrt(m) * |y - u|_1 |y|_1`
    (the floor that ill-conditioned, rank-deficient Gramians reach). `cholesky` may be None
    when `Qy >= 0`: the gap then needs no solve."""
    gap = _duality_gap(y, qy, lower, cholesky)
    objective = 0.5 * (y * qy).sum(1)
    rounding = 8 * torch.finfo(y.dtype).eps * y.shape[1] ** 0.5
    floor = rounding * (y - lower).abs().sum(1) * y.abs().sum(1)
    certified: Tensor = gap <= threshold * objective + floor
    return certified


def _duality_gap(y: Tensor, qy: Tensor, lower: Tensor, cholesky: Tensor | None) -> Tensor:
    """`f(y) - dual(max(Qy, 0))` for each row, written as a sum of non-negative terms."""
    positive = qy.clamp_min(0)
    negative = (-qy).clamp_min(0)
    complementarity = (positive * (y - lower)).sum(1)
    if not bool((negative > 0).any()):
        return complementarity
    if cholesky is None:
        raise ValueError("the duality gap of a point with Qy < 0 needs the Cholesky factor")
    solved = torch.cholesky_solve(negative.T, cholesky).T
    return complementarity + 0.5 * (negative * solved).sum(1)


def _largest_eigenvalue(q: Tensor, iterations: int = 64) -> float:
    """Largest eigenvalue of the symmetric positive definite `q`, by power iteration, with a
    small margin so that `1 / value` is a safe gradient step."""
    m = q.shape[0]
    generator = torch.Generator(device="cpu").manual_seed(0)
    vector = torch.randn(m, 1, generator=generator, dtype=q.dtype).to(q.device)
    for _ in range(iterations):
        vector = q @ vector
        vector = vector / vector.norm()
    rayleigh = float((vector.T @ q @ vector).squeeze())
    return 1.02 * rayleigh
