"""Per-step diagnostics of a JD step, cheap to compute from the Gramian and the weights."""

from __future__ import annotations

import math

import attrs
import torch
from torch import Tensor

_NAN = math.nan


@attrs.frozen
class Diagnostics:
    """What one JD step did.

    - `cosine_to_mean`: cosine between the JD update `J^T w` and the mean-gradient update
      `J^T 1 / m`, i.e. `w^T G 1 / sqrt(w^T G w * 1^T G 1)` (1 for plain gradient descent).
    - `gramian_min` / `gramian_mean` / `gramian_median`: over all entries of `G = J J^T`.
    `J` is the Jacobian the aggregator saw: with respect to the parameters and, unless
    `jacobian_covers="parameters"`, the extra inputs.
    - `conflict_share`: share of objective pairs `i < j` with `G[i, j] < 0`.
    Values the engine did not need to compute (e.g. the Gramian of a single objective) are
    NaN. `engine` is the engine that ran: an `EngineName` other than `auto`,
    `per_sample_streamed` (the per_sample engine without the whole Jacobian), `plain` (one
    objective), `weighted` (weights without a Jacobian) or `none`. `num_objectives` counts
    the objectives aggregated, after dropping the `dropped` identically-zero ones and
    grouping. `seconds` is the wall time of the step.
    """

    engine: str
    num_objectives: int
    dropped: int
    cosine_to_mean: float
    gramian_min: float
    gramian_mean: float
    gramian_median: float
    conflict_share: float
    seconds: float

    def as_dict(self, prefix: str = "jd/") -> dict[str, float | int | str]:
        """A flat view for loggers."""
        return {prefix + key: value for key, value in attrs.asdict(self).items()}


def gramian_statistics(gramian: Tensor, weights: Tensor | None) -> dict[str, float]:
    """Cosine to the mean gradient (needs `weights`), entry statistics and conflict share."""
    g = gramian.detach().to(torch.float64)
    m = g.shape[0]
    ones = torch.ones(m, dtype=g.dtype, device=g.device)
    cosine = _NAN
    if weights is not None:
        w = weights.detach().to(g)
        cosine = _cosine(float(w @ g @ ones), float(w @ g @ w), float(ones @ g @ ones))
    pairs = m * (m - 1) // 2
    upper = torch.triu(torch.ones(m, m, dtype=torch.bool, device=g.device), 1)
    conflicts = int((g[upper] < 0).sum()) if pairs else 0
    values = torch.stack([g.min(), g.mean(), g.flatten().median()]).tolist()
    return {
        "cosine_to_mean": cosine,
        "gramian_min": values[0],
        "gramian_mean": values[1],
        "gramian_median": values[2],
        "conflict_share": conflicts / pairs if pairs else 0.0,
    }


def update_statistics(update_dot_mean: float, update_norm_sq: float, mean_norm_sq: float) -> float:
    """Cosine to the mean gradient of an update that is not a weighted sum of the rows."""
    return _cosine(update_dot_mean, update_norm_sq, mean_norm_sq)


def empty_statistics(cosine: float = _NAN) -> dict[str, float]:
    return {
        "cosine_to_mean": cosine,
        "gramian_min": _NAN,
        "gramian_mean": _NAN,
        "gramian_median": _NAN,
        "conflict_share": _NAN,
    }


def _cosine(dot: float, norm_a_sq: float, norm_b_sq: float) -> float:
    denominator = math.sqrt(max(norm_a_sq, 0.0) * max(norm_b_sq, 0.0))
    return dot / denominator if denominator > 0 else _NAN
