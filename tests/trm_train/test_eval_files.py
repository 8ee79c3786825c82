"""Evaluation files: Kaggle submission, per-task detail, metrics, pictures (decoded by Pillow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

import arc_data
from trm_train import EvalResult, Predictions, score_predictions, write_eval_files

CELL, GAP = 16, 12  # grid_rows_image's defaults


def _read_png(path: Path) -> npt.NDArray[np.uint8]:
    """Decode with Pillow, a reader independent of write_png; expects 8-bit RGB."""
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        pixels = np.asarray(image)
    assert pixels.dtype == np.uint8
    return pixels


def _tasks(rng: np.random.Generator, labelled: bool) -> dict[str, Any]:
    tasks = {}
    for task_id, tests in (("t3", 1), ("t1", 2), ("t2", 1)):
        pairs = []
        for _ in range(tests):
            pair = {"input": rng.integers(0, 10, (3, 2)).tolist()}
            if labelled:
                pair["output"] = rng.integers(0, 10, (2, 2)).tolist()
            pairs.append(pair)
        tasks[task_id] = {
            "train": [{"input": [[1, 2]], "output": [[2, 1]]}],
            "test": pairs,
        }
    return tasks


def _label_predictions(store: arc_data.ArcStore, *, drop_task: str) -> Predictions:
    """Every example predicts its label (or its input when unlabelled), except `drop_task`."""
    count = store.test.num_examples
    inputs, labels = store.test.read(np.arange(count))
    tokens = labels if store.metadata.has_test_labels else inputs
    identifiers = store.test.identifiers_of(np.arange(count))
    keep = np.array([store.task_of(int(i))[1] != drop_task for i in identifiers])
    q_halt = np.linspace(-2.0, 2.0, count).astype(np.float32)
    return Predictions(np.arange(count)[keep], tokens[keep], q_halt[keep])


def _score_and_write(
    make_store: Any, tmp_path: Path, *, labelled: bool, **options: Any
) -> tuple[arc_data.ArcStore, EvalResult, dict[str, Any], Path]:
    tasks = _tasks(np.random.default_rng(0), labelled)
    store = make_store(tasks, num_aug=2)
    result = score_predictions(store, _label_predictions(store, drop_task="t2"), ks=(1, 2))
    out = tmp_path / "eval"
    write_eval_files(result, store, out, **options)
    return store, result, tasks, out


def test_files_hold_the_submission_tasks_and_metrics(make_store: Any, tmp_path: Path) -> None:
    store, result, tasks, out = _score_and_write(make_store, tmp_path, labelled=True)
    submission = json.loads((out / "submission.json").read_text())
    assert submission == result.submission
    assert sorted(submission) == ["t1", "t2", "t3"]
    for task_id, task in tasks.items():
        attempts = submission[task_id]
        assert len(attempts) == len(task["test"])
        for attempt, pair in zip(attempts, task["test"], strict=True):
            assert set(attempt) == {"attempt_1", "attempt_2"}
            # t2 got no prediction: the fallback grid; the others their true output.
            want = [[0]] if task_id == "t2" else pair["output"]
            assert attempt["attempt_1"] == attempt["attempt_2"] == want

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == result.metrics
    assert metrics["pass@1"] == pytest.approx(2 / 3)
    assert metrics["num_predictions"] == 3 * 3  # 3 versions of 3 test inputs

    detail = json.loads((out / "tasks.json").read_text())
    assert detail["t1"]["scores"] == {"pass@1": 1.0, "pass@2": 1.0}
    assert detail["t2"]["scores"] == {"pass@1": 0.0, "pass@2": 0.0}
    first = detail["t1"]["test_inputs"][1]
    assert first["expected"] == tasks["t1"]["test"][1]["output"]
    assert first["num_predictions"] == 3 and first["empty_crops"] == 0
    assert first["num_candidates"] == 1 and first["correct_rank"] == 1
    assert first["correct_at_2"] is True
    ((candidate,),) = [first["candidates"]]
    assert candidate["rank"] == 1 and candidate["votes"] == 3 and candidate["correct"] is True
    assert candidate["grid"] == first["expected"]
    # The mean of sigmoid(q_halt) over the 3 versions of t1's second test input.
    examples = [e for e in range(store.test.num_examples) if _is(store, e, "t1", 1)]
    q_halt = np.linspace(-2.0, 2.0, store.test.num_examples)[examples]
    assert candidate["confidence"] == pytest.approx(np.mean(1 / (1 + np.exp(-q_halt))))
    assert detail["t2"]["test_inputs"][0]["candidates"] == []
    # Only the final files remain, no temporaries.
    assert sorted(p.name for p in out.iterdir()) == [
        "metrics.json",
        "pictures",
        "submission.json",
        "tasks.json",
    ]


def _is(store: arc_data.ArcStore, example: int, task_id: str, index: int) -> bool:
    puzzle = int(store.test.puzzle_of(np.array([example]))[0])
    identifier = int(store.test.puzzle_identifiers[puzzle])
    offset = int(store.test.puzzle_offsets[puzzle])
    return store.task_of(identifier)[1] == task_id and example - offset == index


def _cell(image: npt.NDArray[np.uint8], top: int, left: int, r: int, c: int) -> list[int]:
    """Colour of cell (r, c) of the grid drawn at (top, left) (1-pixel lines around cells)."""
    step = CELL + 1
    return image[top + 1 + r * step + CELL // 2, left + 1 + c * step + CELL // 2].tolist()  # type: ignore[no-any-return]


def test_pictures_decode_to_the_arc_colours(make_store: Any, tmp_path: Path) -> None:
    _, _, tasks, out = _score_and_write(make_store, tmp_path, labelled=True, num_pictures=2)
    # The first 2 task ids in sorted order.
    assert sorted(p.name for p in (out / "pictures").iterdir()) == ["t1.png", "t2.png"]
    image = _read_png(out / "pictures" / "t1.png")
    # Two rows (test inputs) of input 3x2, expected 2x2, attempts 2x2.
    grid_height, input_width, output_width = (
        3 * (CELL + 1) + 1,
        2 * (CELL + 1) + 1,
        2 * (CELL + 1) + 1,
    )
    assert image.shape == (
        2 * grid_height + 3 * GAP,
        input_width + 3 * output_width + 5 * GAP,
        3,
    )
    palette = arc_data.ARC_PALETTE.tolist()
    for row, pair in enumerate(tasks["t1"]["test"]):
        top = GAP + row * (grid_height + GAP)
        left = GAP
        for r in range(3):
            for c in range(2):
                assert _cell(image, top, left, r, c) == palette[pair["input"][r][c]]
        for column in range(3):  # expected, attempt 1, attempt 2
            left = GAP + input_width + GAP + column * (output_width + GAP)
            for r in range(2):
                for c in range(2):
                    assert _cell(image, top, left, r, c) == palette[pair["output"][r][c]]
    # t2 got no prediction: its attempts are light-grey placeholders.
    image = _read_png(out / "pictures" / "t2.png")
    left = GAP + input_width + GAP + output_width + GAP
    assert image[GAP + 2, left + 2].tolist() == [0xE4, 0xE4, 0xE4]


def test_unlabelled_store_files(make_store: Any, tmp_path: Path) -> None:
    store, result, tasks, out = _score_and_write(
        make_store, tmp_path, labelled=False, num_pictures=1, max_candidates=0
    )
    assert not result.has_labels
    metrics = json.loads((out / "metrics.json").read_text())
    assert not any(key.startswith("pass@") for key in metrics)
    detail = json.loads((out / "tasks.json").read_text())
    assert "scores" not in detail["t1"]
    item = detail["t1"]["test_inputs"][0]
    assert item["expected"] is None and item["correct_rank"] is None
    assert item["num_candidates"] == 1 and item["candidates"] == []
    submission = json.loads((out / "submission.json").read_text())
    assert submission["t1"][0]["attempt_1"] == tasks["t1"]["test"][0]["input"]
    # The unknown expected output is a light-grey placeholder in the picture.
    image = _read_png(out / "pictures" / "t1.png")
    input_width = 2 * (CELL + 1) + 1
    assert image[GAP + 2, GAP + input_width + GAP + 2].tolist() == [0xE4, 0xE4, 0xE4]
    # Writing again replaces the files in place.
    write_eval_files(result, store, out, num_pictures=0)
    assert json.loads((out / "submission.json").read_text()) == result.submission
