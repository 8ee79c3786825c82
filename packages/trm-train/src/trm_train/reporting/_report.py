"""The run report: `report.md` in the run directory, its charts in `report/`.

Everything comes from files the run wrote (`config.json`, `metrics.jsonl`,
`eval/step-*/`), so a report can be written for any run, finished or still going, and
written again later.
"""

from __future__ import annotations

from pathlib import Path

from .._metrics_log import read_metrics
from .._run import read_run_config
from . import _sections as sections
from ._figures import ReportError, latest_evaluation


def write_report(run_dir: Path, *, num_pictures: int = 6) -> Path:
    """Write `run_dir/report.md` and its charts `run_dir/report/*.png` (when matplotlib,
    the `report` extra, is installed; else the report says so); return the path.

    Raises FileNotFoundError when `run_dir` is not a run, ReportError on a damaged file.
    """
    config = read_run_config(run_dir)
    try:
        rows = read_metrics(run_dir)
    except ValueError as error:
        raise ReportError(f"{run_dir / 'metrics.jsonl'}: not JSON lines ({error})") from error
    evaluation = latest_evaluation(run_dir)
    (run_dir / "report").mkdir(exist_ok=True)
    parts = [
        f"# Run report: {run_dir.name}",
        sections.headline(config, rows, evaluation),
        sections.configuration(config, rows),
        sections.training(rows),
        sections.evaluation(evaluation, run_dir),
        sections.charts(rows, run_dir),
        sections.predictions(evaluation, run_dir, num_pictures),
    ]
    path = run_dir / "report.md"
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return path
