"""Learning curves of several runs in one PNG: training loss, training token accuracy
and held-out pass@1, against the run's own time (the sum of its step and evaluation
seconds, so start-up and waiting on other jobs do not count) and against steps.

    python tools/plot_curves.py --run "sum lr 3e-3=runs/a" --run "sum lr 1e-3=runs/b" \
        --out docs/figures/curves.png --title "Sudoku 6 x 6"

Needs matplotlib (`pip install -e packages/trm-train[report]`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

SMOOTH_STEPS = 50


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise click.UsageError(f"{run_dir} holds no metrics.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def curves(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per logged step: step, elapsed seconds, loss, accuracy; per evaluation: step,
    elapsed seconds, pass@1."""
    train = [row for row in rows if "train/loss" in row]
    spent = np.cumsum(
        [row.get("train/step_seconds", 0.0) + row.get("eval/seconds", 0.0) for row in train]
    )
    evals = [(i, row) for i, row in enumerate(train) if "eval/pass@1" in row]
    return {
        "step": np.array([row["step"] for row in train], dtype=float),
        "seconds": spent,
        "loss": np.array([row["train/loss"] for row in train], dtype=float),
        "accuracy": np.array([row["train/accuracy"] for row in train], dtype=float),
        "eval_step": np.array([row["step"] for _, row in evals], dtype=float),
        "eval_seconds": np.array([spent[i] for i, _ in evals], dtype=float),
        "pass1": np.array([row["eval/pass@1"] for _, row in evals], dtype=float),
    }


def smooth(values: np.ndarray, width: int) -> np.ndarray:
    """Trailing mean over `width` points (fewer at the start)."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - width, 0)
    means: np.ndarray = (sums[ends] - sums[starts]) / (ends - starts)
    return means


@click.command()
@click.option("--run", "runs", multiple=True, required=True, help="LABEL=RUN_DIR, repeatable.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="PNG to write.")
@click.option("--title", default="", help="Figure title.")
def main(runs: tuple[str, ...], out: Path, title: str) -> None:
    """Plot training loss, training token accuracy and held-out pass@1 of runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(15, 8))
    for spec in runs:
        label, sep, directory = spec.rpartition("=")
        if not sep:
            raise click.UsageError(f"--run {spec!r}: expected LABEL=RUN_DIR")
        data = curves(read_metrics(Path(directory)))
        for row, x_key, eval_x in ((0, "seconds", "eval_seconds"), (1, "step", "eval_step")):
            x = data[x_key] / (60.0 if x_key == "seconds" else 1.0)
            axes[row, 0].plot(x, smooth(data["loss"], SMOOTH_STEPS), label=label)
            axes[row, 1].plot(x, smooth(data["accuracy"], SMOOTH_STEPS), label=label)
            scale = 60.0 if x_key == "seconds" else 1.0
            axes[row, 2].plot(data[eval_x] / scale, data["pass1"], marker="o", label=label)
    for row, x_label in ((0, "minutes of the run"), (1, "optimizer steps")):
        for column, y_label in enumerate(
            ("training loss", "training token accuracy", "held-out pass@1")
        ):
            axes[row, column].set_xlabel(x_label)
            axes[row, column].set_ylabel(y_label)
            axes[row, column].grid(alpha=0.3)
    axes[0, 2].legend(fontsize=8)
    figure.suptitle(f"{title} (loss and accuracy: mean of the last {SMOOTH_STEPS} steps)")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80)
    click.echo(f"wrote {out}", err=True)


if __name__ == "__main__":
    sys.exit(main())
