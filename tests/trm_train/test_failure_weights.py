"""Failure weights: both rules by hand, repeated identifiers, and exact resume."""

from __future__ import annotations

import numpy as np
import pytest

from trm_train import FailureWeights
from trm_train._config import FailureRule


def test_accumulated_rule_uses_run_long_counts() -> None:
    weights = FailureWeights(6)
    assert weights.rule == "accumulated"
    # Identifier 2 twice in one call: once solved, once failed.
    weights.update(np.array([1, 2, 2, 3]), np.array([True, True, False, False]))
    np.testing.assert_array_equal(weights.total, [0, 1, 2, 1, 0, 0])
    np.testing.assert_array_equal(weights.correct, [0, 1, 1, 0, 0, 0])
    # 1 - correct / (total + 1): id 1 -> 1 - 1/2, id 2 -> 1 - 1/3, id 3 -> 1 - 0/2.
    np.testing.assert_allclose(weights.weights, [1.0, 0.5, 2.0 / 3.0, 1.0, 1.0, 1.0])
    weights.update(np.array([2, 1, 1]), np.array([True, True, True]))
    np.testing.assert_array_equal(weights.total, [0, 3, 3, 1, 0, 0])
    np.testing.assert_array_equal(weights.correct, [0, 3, 2, 0, 0, 0])
    # id 1 -> 1 - 3/4, id 2 -> 1 - 2/4; an old failure keeps pulling id 2 up.
    np.testing.assert_allclose(weights.weights, [1.0, 0.25, 0.5, 1.0, 1.0, 1.0])


def test_latest_rule_follows_the_last_outcome() -> None:
    weights = FailureWeights(5, rule="latest", solved_weight=0.25)
    # Identifier 3 twice in one call: the later outcome (solved) wins.
    weights.update(np.array([1, 2, 3, 3]), np.array([True, False, False, True]))
    np.testing.assert_array_equal(weights.weights, [1.0, 0.25, 1.0, 0.25, 1.0])
    weights.update(np.array([1, 3, 1]), np.array([True, False, False]))
    np.testing.assert_array_equal(weights.weights, [1.0, 1.0, 1.0, 1.0, 1.0])
    # The counts are kept under this rule too.
    np.testing.assert_array_equal(weights.total, [0, 3, 1, 3, 0])
    np.testing.assert_array_equal(weights.correct, [0, 2, 0, 1, 0])


@pytest.mark.parametrize("rule", ["accumulated", "latest"])
def test_state_dict_resumes_exactly(rule: FailureRule) -> None:
    rng = np.random.default_rng(0)
    batches = [
        (rng.integers(0, 8, size=12), rng.random(12) < 0.5) for _ in range(6)
    ]  # identifiers repeat within and across batches
    straight = FailureWeights(8, rule=rule, solved_weight=0.3)
    interrupted = FailureWeights(8, rule=rule, solved_weight=0.3)
    for ids, exact in batches:
        straight.update(ids, exact)
    for ids, exact in batches[:3]:
        interrupted.update(ids, exact)
    state = interrupted.state_dict()
    # Plain values only, so that the checkpoint can be read with weights_only loading.
    assert isinstance(state["rule"], str) and isinstance(state["solved_weight"], float)
    assert all(isinstance(state[k], np.ndarray) for k in ("weights", "total", "correct"))
    resumed = FailureWeights(8, rule=rule)
    resumed.load_state_dict(state)
    interrupted.update(np.array([0]), np.array([True]))  # the state is a copy
    for ids, exact in batches[3:]:
        resumed.update(ids, exact)
    np.testing.assert_array_equal(resumed.weights, straight.weights)
    np.testing.assert_array_equal(resumed.total, straight.total)
    np.testing.assert_array_equal(resumed.correct, straight.correct)
    assert resumed.solved_weight == 0.3


def test_resume_refuses_another_rule_or_size() -> None:
    state = FailureWeights(5).state_dict()
    with pytest.raises(ValueError, match="5 puzzle identifiers"):
        FailureWeights(4).load_state_dict(state)
    with pytest.raises(ValueError, match="'accumulated' rule, this run uses 'latest'"):
        FailureWeights(5, rule="latest").load_state_dict(state)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="must be one of"):
        FailureWeights(3, rule="newest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"solved_weight must be in \(0, 1\]"):
        FailureWeights(3, rule="latest", solved_weight=0.0)
    weights = FailureWeights(3)
    with pytest.raises(ValueError, match=r"in 0\.\.2"):
        weights.update(np.array([3]), np.array([True]))
    with pytest.raises(ValueError, match="one outcome per identifier"):
        weights.update(np.array([1, 2]), np.array([True]))
