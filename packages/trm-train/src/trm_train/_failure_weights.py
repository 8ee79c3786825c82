"""Failure-weighted sampling: tasks the model still gets wrong are drawn more often."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


class FailureWeights:
    """One sampling weight per puzzle identifier: 1 until the model solves that puzzle
    (exactly, in a training step where its sample halted), `solved_weight` after, back to
    1 when it fails it again. The sampler applies new weights from its next epoch on, so
    the draw stays a pure function of (seed, epoch, weights) and resumes exactly."""

    def __init__(self, num_puzzle_identifiers: int, *, solved_weight: float = 0.2) -> None:
        if not 0.0 < solved_weight <= 1.0:
            raise ValueError(f"solved_weight must be in (0, 1], got {solved_weight}")
        self.solved_weight = solved_weight
        self.weights: npt.NDArray[np.float64] = np.ones(num_puzzle_identifiers)

    def update(self, identifiers: npt.NDArray[np.int64], exact: npt.NDArray[np.bool_]) -> None:
        """Record outcomes; for an identifier seen twice, the last outcome wins."""
        self.weights[identifiers] = np.where(exact, self.solved_weight, 1.0)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights.copy(), "solved_weight": self.solved_weight}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["weights"].shape != self.weights.shape:
            raise ValueError(
                f"failure weights are for {len(state['weights'])} puzzle identifiers, "
                f"this run has {len(self.weights)}"
            )
        self.weights = np.asarray(state["weights"], dtype=np.float64).copy()
        self.solved_weight = float(state["solved_weight"])
