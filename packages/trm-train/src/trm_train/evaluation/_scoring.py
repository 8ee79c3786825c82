"""ARC scoring: crop each predicted canvas, map it back to its task, vote, pass@K, submission.

The rule is the official TRM evaluator's (DESIGN.md section 6). Each prediction on the
test split is cropped to the largest top-left rectangle of colour tokens, shifted back to
colours 0..9 and mapped to the original task frame (inverse dihedral, inverse colour
permutation). Predictions are grouped by original task and test input; each distinct
grid gets its votes and the mean `sigmoid(q_halt)` of those votes, and candidates rank by
(votes, mean confidence) descending, remaining ties by earliest prediction. pass@K: the
true output is among the top K. A task scores the mean over its test inputs, the set the
mean over tasks.

The scorer reads `Predictions` and returns an `EvalResult`; the un-augmenting and vote
counting, batched with numpy, are in `_votes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from arc_data import ArcStore, Grid, crop_shapes

from ._votes import InputLayout, Votes, count_votes

DEFAULT_KS = (1, 2, 5, 10, 100, 1000)
JsonGrid = list[list[int]]
Submission = dict[str, list[dict[str, JsonGrid]]]
# Kaggle needs two attempts per test input: this one stands in when nothing was predicted.
FALLBACK_GRID: JsonGrid = [[0]]

# Canvases cropped at once: keeps crop_shapes' boolean temporaries near 10 MB at 900 tokens.
_CROP_CHUNK = 8192


def _int64(values: Any) -> npt.NDArray[np.int64]:
    return np.asarray(values, dtype=np.int64)


def _float32(values: Any) -> npt.NDArray[np.float32]:
    return np.asarray(values, dtype=np.float32)


@attrs.frozen(eq=False)
class Predictions:
    """Predicted canvases on the test split.

    `example_indices` `[N]` index `store.test` (-1: a padding row, ignored), `tokens`
    `[N, seq_len]` are the predicted tokens, `q_halt` `[N]` the halting logits.
    Several predictions of one example are several votes.
    """

    example_indices: npt.NDArray[np.int64] = attrs.field(converter=_int64)
    tokens: npt.NDArray[np.integer[Any]] = attrs.field(converter=np.asarray)
    q_halt: npt.NDArray[np.float32] = attrs.field(converter=_float32)

    def __attrs_post_init__(self) -> None:
        count = len(self.example_indices)
        if (
            self.example_indices.ndim != 1
            or self.tokens.ndim != 2
            or self.q_halt.shape != (count,)
            or len(self.tokens) != count
        ):
            raise ValueError(
                "predictions: expected example_indices [N], tokens [N, seq_len] and q_halt [N], "
                f"got shapes {self.example_indices.shape}, {self.tokens.shape}, "
                f"{self.q_halt.shape}"
            )
        if not np.issubdtype(self.tokens.dtype, np.integer):
            raise ValueError(f"predictions: tokens must be integers, got {self.tokens.dtype}")

    def __len__(self) -> int:
        return len(self.example_indices)


@attrs.frozen(eq=False)
class Candidate:
    """One distinct predicted grid of a test input (original frame)."""

    grid: Grid
    votes: int
    # Mean sigmoid(q_halt) over the predictions that voted for this grid.
    confidence: float


@attrs.frozen(eq=False)
class InputResult:
    """One test input of a task: its candidates, best first."""

    index: int
    expected: Grid | None
    candidates: tuple[Candidate, ...]
    # 1-based rank of the true output among the candidates; None when absent or unknown.
    correct_rank: int | None
    # Non-padding predictions of this input, empty crops included.
    num_predictions: int
    empty_crops: int

    def passes(self, k: int) -> bool:
        return self.correct_rank is not None and self.correct_rank <= k

    @property
    def correct_at_2(self) -> bool:
        """Whether the Kaggle submission (two attempts) gets this input right."""
        return self.passes(2)


@attrs.frozen(eq=False)
class TaskResult:
    task_id: str
    inputs: tuple[InputResult, ...]

    def pass_at(self, k: int) -> float:
        """The task's score at K: the share of its test inputs solved within K attempts."""
        return sum(item.passes(k) for item in self.inputs) / len(self.inputs)


@attrs.frozen(eq=False)
class EvalResult:
    """Scores (`pass@K` only when the store has test labels), the Kaggle submission and the
    per-task detail. `tasks` and `submission` follow `store.test_tasks`' order."""

    metrics: dict[str, float]
    submission: Submission
    tasks: dict[str, TaskResult]
    has_labels: bool
    ks: tuple[int, ...]


def score_predictions(
    store: ArcStore, predictions: Predictions, *, ks: Sequence[int] = DEFAULT_KS
) -> EvalResult:
    """Score predictions on `store.test` by the official ARC rule (see the module doc).

    Raises ValueError when the predictions do not fit the store (sequence length, example
    indices) or `ks` holds a non-positive K.
    """
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"pass@K needs positive K values, got {ks}")
    layout = InputLayout.of(store)
    has_labels = all(grid is not None for grid in layout.expected)
    examples, tokens, q_halt = _valid_rows(store, predictions)

    size = store.metadata.grid_size
    puzzles = store.test.puzzle_of(examples)
    identifiers = store.test.puzzle_identifiers[puzzles]
    test_index = examples - store.test.puzzle_offsets[puzzles]
    input_ids = layout.base_of_task_index[store.identifier_task_index[identifiers]] + test_index
    shapes = np.concatenate(
        [np.zeros((0, 2), np.int64)]
        + [
            crop_shapes(tokens[i : i + _CROP_CHUNK], size)
            for i in range(0, len(tokens), _CROP_CHUNK)
        ]
    )
    empty = shapes[:, 0] == 0
    kept = np.flatnonzero(~empty)
    votes = count_votes(
        store,
        layout,
        tokens=tokens[kept],
        shapes=shapes[kept],
        identifiers=identifiers[kept],
        input_ids=input_ids[kept],
        confidence=_sigmoid(q_halt[kept]),
    )
    per_input_predictions = np.bincount(input_ids, minlength=layout.num_inputs)
    per_input_empty = np.bincount(input_ids[empty], minlength=layout.num_inputs)
    tasks = _task_results(layout, votes, per_input_predictions, per_input_empty)

    metrics: dict[str, float] = {}
    if has_labels:
        for k in ks:
            metrics[f"pass@{k}"] = float(np.mean([task.pass_at(k) for task in tasks.values()]))
    metrics.update(
        num_tasks=float(len(tasks)),
        num_test_inputs=float(layout.num_inputs),
        num_predictions=float(len(examples)),
        empty_crops=float(empty.sum()),
        mean_candidates=len(votes.inputs) / layout.num_inputs,
    )
    return EvalResult(
        metrics=metrics,
        submission=_submission(tasks),
        tasks=tasks,
        has_labels=has_labels,
        ks=ks,
    )


def _valid_rows(
    store: ArcStore, predictions: Predictions
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.integer[Any]], npt.NDArray[np.float32]]:
    """The non-padding predictions, checked against the store."""
    seq_len = store.metadata.seq_len
    if predictions.tokens.shape[1] != seq_len:
        raise ValueError(
            f"predictions: canvases of {predictions.tokens.shape[1]} tokens, the store "
            f"{store.path} has seq_len {seq_len}"
        )
    keep = predictions.example_indices != -1
    examples = predictions.example_indices[keep]
    bad = (examples < 0) | (examples >= store.test.num_examples)
    if bad.any():
        raise ValueError(
            f"predictions: example index {int(examples[bad][0])} is outside the test split of "
            f"{store.path} (0..{store.test.num_examples - 1}, or -1 for padding)"
        )
    return examples, predictions.tokens[keep], predictions.q_halt[keep]


def _sigmoid(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    # The tanh form does not overflow for large negative logits.
    return 0.5 * (1.0 + np.tanh(0.5 * logits.astype(np.float64)))


def _task_results(
    layout: InputLayout,
    votes: Votes,
    per_input_predictions: npt.NDArray[np.int64],
    per_input_empty: npt.NDArray[np.int64],
) -> dict[str, TaskResult]:
    order = np.lexsort((votes.first, -votes.confidence, -votes.votes, votes.inputs))
    starts = np.searchsorted(votes.inputs[order], np.arange(layout.num_inputs + 1))
    counts, means = votes.votes.tolist(), votes.confidence.tolist()
    correct = votes.correct.tolist()
    ranked = order.tolist()
    tasks = {}
    for k, task_id in enumerate(layout.task_ids):
        first = int(layout.first_input[k])
        items = []
        for input_id in range(first, int(layout.first_input[k + 1])):
            chosen = ranked[starts[input_id] : starts[input_id + 1]]
            hits = [rank for rank, c in enumerate(chosen, start=1) if correct[c]]
            items.append(
                InputResult(
                    index=input_id - first,
                    expected=layout.expected[input_id],
                    candidates=tuple(
                        Candidate(votes.grids[c], counts[c], means[c]) for c in chosen
                    ),
                    correct_rank=hits[0] if hits else None,
                    num_predictions=int(per_input_predictions[input_id]),
                    empty_crops=int(per_input_empty[input_id]),
                )
            )
        tasks[task_id] = TaskResult(task_id, tuple(items))
    return tasks


def _submission(tasks: dict[str, TaskResult]) -> Submission:
    submission: Submission = {}
    for task_id, task in tasks.items():
        attempts = []
        for item in task.inputs:
            best = item.candidates[:2]
            first = best[0].grid.tolist() if best else [row[:] for row in FALLBACK_GRID]
            second = best[-1].grid.tolist() if best else [row[:] for row in FALLBACK_GRID]
            attempts.append({"attempt_1": first, "attempt_2": second})
        submission[task_id] = attempts
    return submission
