"""Failure-weighted sampling: tasks the model still gets wrong are drawn more often."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .._config import FAILURE_RULES, FailureRule


class FailureWeights:
    """One sampling weight per puzzle identifier, from the outcomes of the training
    samples that finished (halted): solved means exactly right.

    - `"accumulated"` (the write-up's rule): `1 - correct / (total + 1)` from the counts
      of finished and solved samples over the whole run; 1 for an identifier not seen yet.
    - `"latest"`: 1 until the puzzle is solved, `solved_weight` after, back to 1 when it
      is failed again.

    `total` and `correct` (run-long counts per identifier) are kept under both rules.
    The sampler applies new weights from its next epoch on, so the draw stays a pure
    function of (seed, epoch, weights) and resumes exactly."""

    def __init__(
        self,
        num_puzzle_identifiers: int,
        *,
        rule: FailureRule = "accumulated",
        solved_weight: float = 0.2,
    ) -> None:
        if rule not in FAILURE_RULES:
            raise ValueError(f"failure weighting rule must be one of {FAILURE_RULES}, got {rule!r}")
        if not 0.0 < solved_weight <= 1.0:
            raise ValueError(f"solved_weight must be in (0, 1], got {solved_weight}")
        self.rule: FailureRule = rule
        self.solved_weight = solved_weight
        self.weights: npt.NDArray[np.float64] = np.ones(num_puzzle_identifiers)
        self.total: npt.NDArray[np.int64] = np.zeros(num_puzzle_identifiers, np.int64)
        self.correct: npt.NDArray[np.int64] = np.zeros(num_puzzle_identifiers, np.int64)

    def update(self, identifiers: npt.NDArray[np.int64], exact: npt.NDArray[np.bool_]) -> None:
        """Record one outcome per entry. An identifier may repeat: each occurrence counts
        once in `total`/`correct`, and under the latest rule its last outcome wins."""
        ids = np.asarray(identifiers, dtype=np.int64)
        solved = np.asarray(exact, dtype=np.bool_)
        if ids.shape != solved.shape or ids.ndim != 1:
            raise ValueError(
                f"need one outcome per identifier, got shapes {ids.shape} and {solved.shape}"
            )
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.weights)):
            raise ValueError(f"puzzle identifiers must be in 0..{len(self.weights) - 1}")
        # np.add.at, unlike `+=` on fancy indices, adds once per repeated identifier.
        np.add.at(self.total, ids, 1)
        np.add.at(self.correct, ids[solved], 1)
        if self.rule == "accumulated":
            seen = np.unique(ids)
            self.weights[seen] = 1.0 - self.correct[seen] / (self.total[seen] + 1.0)
        else:
            # NumPy does not say which of repeated fancy-index writes lands, so keep only
            # each identifier's last occurrence (the first one in the reversed arrays).
            seen, first_reversed = np.unique(ids[::-1], return_index=True)
            last_solved = solved[::-1][first_reversed]
            self.weights[seen] = np.where(last_solved, self.solved_weight, 1.0)

    def state_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "solved_weight": self.solved_weight,
            "weights": self.weights.copy(),
            "total": self.total.copy(),
            "correct": self.correct.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["weights"].shape != self.weights.shape:
            raise ValueError(
                f"failure weights are for {len(state['weights'])} puzzle identifiers, "
                f"this run has {len(self.weights)}"
            )
        # Checkpoints written before the accumulated rule existed hold latest-rule weights
        # and no counts.
        rule = state.get("rule", "latest")
        if rule != self.rule:
            raise ValueError(
                f"failure weights follow the {rule!r} rule, this run uses {self.rule!r}"
            )
        self.weights = np.asarray(state["weights"], dtype=np.float64).copy()
        self.solved_weight = float(state["solved_weight"])
        empty = np.zeros_like(self.total)
        self.total = np.asarray(state.get("total", empty), dtype=np.int64).copy()
        self.correct = np.asarray(state.get("correct", empty), dtype=np.int64).copy()
