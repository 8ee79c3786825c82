"""The run's own files read back as figures for the report: its metrics rows, its
latest evaluation, per-task scores, and how numbers are written."""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

import attrs

from ._plot import Points

_EVAL_DIR = re.compile(r"^step-(\d+)$")
# Per-step training figures are noisy at small batches: the table averages the last tenth.
_TAIL_SHARE = 0.1


class ReportError(ValueError):
    """A file of the run cannot be read; the message names it."""


@attrs.frozen
class Evaluation:
    step: int
    folder: Path
    metrics: dict[str, float]


def latest_evaluation(run_dir: Path) -> Evaluation | None:
    """The evaluation of the highest step under `run_dir/eval/` that has a metrics.json."""
    found = []
    folder = run_dir / "eval"
    if folder.is_dir():
        for child in folder.iterdir():
            match = _EVAL_DIR.match(child.name)
            if match and (child / "metrics.json").is_file():
                found.append((int(match.group(1)), child))
    if not found:
        return None
    step, latest = max(found)
    path = latest / "metrics.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ReportError(f"{path}: not JSON ({error})") from error
    if not isinstance(metrics, dict):
        raise ReportError(f"{path}: expected a JSON object of metrics")
    return Evaluation(step, latest, metrics)


def number(value: Any) -> float | None:
    """A finite float from a metrics value (non-finite ones are logged as strings)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        result = float(value)
    except ValueError:
        return None
    return result if math.isfinite(result) else None


def fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def series(rows: list[dict[str, Any]], key: str) -> Points:
    """(step, value) of the rows where `key` holds a finite number."""
    points: Points = []
    for row in rows:
        value, step = number(row.get(key)), number(row.get("step"))
        if value is not None and step is not None:
            points.append((step, value))
    return points


def mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def last_tenth(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return rows[-max(1, round(len(rows) * _TAIL_SHARE)) :] if rows else []


def task_scores(path: Path) -> dict[str, float]:
    """pass@2 per task from tasks.json, or nothing when it is absent or unscored."""
    if not path.is_file():
        return {}
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ReportError(f"{path}: not JSON ({error})") from error
    scores = {}
    for task_id, entry in tasks.items():
        value = number(entry.get("scores", {}).get("pass@2"))
        if value is not None:
            scores[task_id] = value
    return scores
