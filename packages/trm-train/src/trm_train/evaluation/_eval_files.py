"""Files of an evaluation: Kaggle submission, per-task detail, metrics and pictures.

Every file is written to a temporary name in its folder and renamed into place, so a
reader (or a crash) never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from arc_data import ArcStore, Grid, grid_rows_image, write_png

from ._scoring import EvalResult, InputResult, TaskResult


def write_eval_files(
    result: EvalResult,
    store: ArcStore,
    out_dir: Path,
    *,
    num_pictures: int = 10,
    max_candidates: int = 10,
) -> None:
    """Write into `out_dir` (created if missing):

    - `submission.json`: the Kaggle submission;
    - `tasks.json`: per task (and its pass@K when labelled), per test input the number
      of predictions, empty crops and candidates, the rank of the true output, and the
      best `max_candidates` candidates with their votes, mean confidence, rank and
      correctness (a poor model gives about one candidate per augmentation, too many
      to list);
    - `metrics.json`: `result.metrics`;
    - `pictures/<task_id>.png` for the first `num_pictures` task ids in sorted order: one
      row per test input with the input, the expected output (a grey box when unknown)
      and the two attempts (grey when nothing was predicted).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / "submission.json", result.submission)
    tasks = {
        task_id: _task_json(task, result, max_candidates) for task_id, task in result.tasks.items()
    }
    _write_json(out_dir / "tasks.json", tasks)
    _write_json(out_dir / "metrics.json", result.metrics)
    pictures = out_dir / "pictures"
    pictures.mkdir(exist_ok=True)
    for task_id in sorted(result.tasks)[:num_pictures]:
        _write_picture(pictures / f"{task_id}.png", result.tasks[task_id], store)


def _task_json(task: TaskResult, result: EvalResult, max_candidates: int) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if result.has_labels:
        entry["scores"] = {f"pass@{k}": task.pass_at(k) for k in result.ks}
    entry["test_inputs"] = [_input_json(item, max_candidates) for item in task.inputs]
    return entry


def _input_json(item: InputResult, max_candidates: int) -> dict[str, Any]:
    return {
        "expected": None if item.expected is None else item.expected.tolist(),
        "num_predictions": item.num_predictions,
        "empty_crops": item.empty_crops,
        "num_candidates": len(item.candidates),
        "correct_rank": item.correct_rank,
        "correct_at_2": item.correct_at_2,
        "candidates": [
            {
                "rank": rank,
                "votes": candidate.votes,
                "confidence": candidate.confidence,
                "correct": rank == item.correct_rank,
                "grid": candidate.grid.tolist(),
            }
            for rank, candidate in enumerate(item.candidates[:max_candidates], start=1)
        ],
    }


def _write_picture(path: Path, task: TaskResult, store: ArcStore) -> None:
    original = store.test_tasks[task.task_id]
    rows: list[list[Grid | None]] = []
    for item in task.inputs:
        attempts: list[Grid | None] = [c.grid for c in item.candidates[:2]] or [None]
        rows.append([original.test[item.index].input, item.expected, attempts[0], attempts[-1]])
    image = grid_rows_image(rows)
    _atomic_write(path, lambda partial: write_png(partial, image))


def _write_json(path: Path, value: Any) -> None:
    text = json.dumps(value)
    _atomic_write(path, lambda partial: partial.write_text(text, encoding="utf-8"))


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(handle)
    partial = Path(name)
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
