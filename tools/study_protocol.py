"""The study's protocol: families, arms, optimizers, seeds, and how one run is made and read.

Every run is a `trm-train` command line (so the study measures exactly what a user runs),
with one torch thread. A run's figures are reduced to one JSON record (`run_record`),
committed under docs/study/, from which `study_analysis` redoes every table and plot.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

ROOT = Path(__file__).resolve().parents[1]
ARC_GEN = ROOT.parent / "shared/data/arc-gen-small/arc-gen"


@attrs.frozen
class Family:
    """A task family: how its store is built and the recipe its runs use."""

    name: str
    recipe: str
    source: str  # the arc-data source (Sudoku) or the ARC-GEN-small Kaggle prefix
    steps: int  # of a full-length run, evaluated at a third, two thirds and the end
    quick_steps: int
    # What "never solved" counts: whole tasks (ARC: a task counts as solved at an
    # evaluation when any of its test inputs is) or single test inputs (Sudoku: one task).
    item: str

    def build_commands(self, data_dir: Path) -> list[list[str]]:
        store = str(self.store(data_dir))
        if self.name == "sudoku":
            # `sudoku:N?...` names its one subset `sudokuN`.
            subset = "sudoku" + self.source.removeprefix("sudoku:").split("?")[0]
            return [_arc_data(self.source, subset, "--num-aug", "8", "--max-grid", "6", store)]
        prefix = data_dir / "arc-gen-out6"
        keep = [sys.executable, str(ROOT / "tools/arc_gen_subset.py"), "--source", self.source]
        return [
            [*keep, "--max-output", "6", "--out", str(prefix)],
            _arc_data(f"kaggle:{prefix}", "gen10", "--num-aug", "0", "--max-grid", "10", store),
        ]

    def store(self, data_dir: Path) -> Path:
        return data_dir / f"{self.name}.zarr"


def _arc_data(source: str, subset: str, *options: str) -> list[str]:
    *flags, store = options
    # The console script beside this interpreter (arc_data has no `python -m` entry).
    script = Path(sys.executable).parent / "arc-data"
    return [
        str(script), "build", "--source", source, "--subsets", subset,
        "--test-set", subset, *flags, "--output", store,
    ]  # fmt: skip


SUDOKU = "sudoku:6?train=5000&test=200&givens=12"
FAMILIES = {
    "arc-gen": Family("arc-gen", "cpu", str(ARC_GEN), steps=240, quick_steps=120, item="task"),
    "sudoku": Family("sudoku", "cpu_sudoku", SUDOKU, steps=300, quick_steps=150, item="input"),
}


@attrs.frozen
class Arm:
    """One way to train: a split with its options (UPGrad unless `aggregator` says).

    `short` arms cost more than 3x a `sum` step (the cost probe of docs/results.md): they
    run a third of the family's steps, so that the grid fits its budget, and are compared
    with `sum` at their own last step (equal steps) and at `sum`'s full wall time."""

    name: str
    split: str
    options: tuple[str, ...] = ()
    short: bool = False


ARMS = (
    Arm("sum", "sum"),
    Arm("lm_loss_vs_q_halt_loss", "lm_loss_vs_q_halt_loss"),
    Arm("iwrm_q_halt_in", "iwrm_q_halt_in"),
    Arm("pixelwise_q_halt_in G10", "pixelwise_q_halt_in", ("--groups", "10"), short=True),
    Arm("stack_internal_losses", "stack_internal_losses", short=True),
    Arm("stack_supervisions_and_iwrm", "stack_supervisions_and_iwrm", short=True),
    Arm("stack_internal_losses mean", "stack_internal_losses", ("--aggregator", "mean"), True),
    Arm("stack_supervisions_and_sum", "stack_supervisions_and_sum", short=True),
)
# Each JD arm whose loss differs from `sum`'s, with the arm that runs GD on the same loss.
CONTROLS = {
    "stack_internal_losses": "stack_internal_losses mean",
    "stack_supervisions_and_iwrm": "stack_supervisions_and_sum",
}
QUICK_ARMS = ("sum", "iwrm_q_halt_in")
SGD_ARMS = ("sum", "iwrm_q_halt_in")
# Log-spaced SGD learning rates, tuned per arm on the first seed by the training-loss AUC
# over the first half of the steps (the TorchJD paper's criterion), then fixed.
SGD_LRS = (0.01, 0.03, 0.1, 0.3)
SGD_MOMENTUM = 0.9
SEEDS = (0, 1, 2, 3, 4)
# The wall-time axis: each arm's seconds per step come from one timing probe, a short run
# of seed 0 without evaluation made after the whole grid, so that every arm is timed under
# the same conditions (the grid's runs share the machine with whatever else ran then).
PROBE_STEPS = 30
PROBE_WARMUP = 5  # first steps left out of the probe's median (allocation, caches)


@attrs.frozen
class RunSpec:
    family: Family
    optimizer: str  # "adam_atan2" (the recipe's) or "sgd"
    arm: Arm
    seed: int
    steps: int  # of a full-length run; `short` arms train a third of it
    lr: float | None = None  # None: the recipe's
    probe: bool = False  # a timing probe of `steps` steps, without evaluation

    @property
    def length(self) -> int:
        if self.probe:
            return self.steps
        return max(1, self.steps // 3) if self.arm.short else self.steps

    @property
    def eval_every(self) -> int | None:
        """Full runs every third (so a short arm's last step is a `sum` step with an
        evaluation), short ones every half, probes never."""
        if self.probe:
            return None
        return max(1, self.length // (2 if self.arm.short else 3))

    @property
    def key(self) -> str:
        """Stable, file-safe name of the run (a probe's names no seed: one per arm)."""
        lr = "" if self.lr is None else f"-lr{self.lr:g}"
        arm = self.arm.name.replace(" ", "-")
        run = "probe" if self.probe else f"seed{self.seed}"
        return f"{self.family.name}-{self.optimizer}-{arm}{lr}-{run}"

    def command(self, store: Path, out: Path) -> list[str]:
        command = [
            sys.executable, "-m", "trm_train", "--data", str(store),
            "--recipe", self.family.recipe, "--split", self.arm.split, *self.arm.options,
            "--steps", str(self.length), "--seed", str(self.seed), "--out", str(out),
            "--wandb", "disabled", "--no-progress",
        ]  # fmt: skip
        if self.eval_every is not None:
            command += ["--eval-every", str(self.eval_every)]
        if self.optimizer == "sgd":
            assert self.lr is not None
            command += ["--optimizer", "sgd", "--momentum", str(SGD_MOMENTUM)]
            # SGD's weight decay is an L2 term in the gradient: the recipe's 0.1 (meant for
            # AdamATan2's decoupled decay) would dominate it, so SGD runs go without.
            command += ["--lr", f"{self.lr:g}", "--weight-decay", "0"]
        return command


def run_training(spec: RunSpec, store: Path, run_dir: Path, log: Path) -> None:
    """Train one run from scratch in a subprocess with one torch thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        done = subprocess.run(
            spec.command(store, run_dir), stdout=handle, stderr=subprocess.STDOUT, env=env
        )
    if done.returncode != 0:
        tail = log.read_text().splitlines()[-5:]
        raise RuntimeError(f"{spec.key} failed (exit {done.returncode}):\n" + "\n".join(tail))


def _rounded(value: Any, digits: int = 5) -> float | None:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def _items_solved(tasks_file: Path, item: str) -> list[str]:
    """Ids of the items solved at rank 1 in one evaluation's tasks.json."""
    tasks: dict[str, Any] = json.loads(tasks_file.read_text())
    if item == "task":
        return sorted(t for t, result in tasks.items() if result["scores"]["pass@1"] > 0)
    return sorted(
        f"{task_id}/{index}"
        for task_id, result in tasks.items()
        for index, test in enumerate(result["test_inputs"])
        if test["correct_rank"] == 1
    )


def _items_total(tasks_file: Path, item: str) -> int:
    tasks: dict[str, Any] = json.loads(tasks_file.read_text())
    if item == "task":
        return len(tasks)
    return sum(len(result["test_inputs"]) for result in tasks.values())


def run_record(spec: RunSpec, run_dir: Path) -> dict[str, Any]:
    """The figures of one finished run: per-step training curves, and each evaluation with
    the training seconds spent before it and the items it solved."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [row for row in rows if "train/loss" in row]
    evals = [row for row in rows if "eval/pass@1" in row]
    if len(train) != spec.length or not evals or evals[-1]["step"] != spec.length:
        raise RuntimeError(f"{run_dir}: unfinished ({len(train)} of {spec.length} steps)")
    elapsed, seconds_at = 0.0, {}
    for row in train:
        elapsed += row["train/step_seconds"]
        seconds_at[row["step"]] = elapsed
    eval_dir = run_dir / "eval"
    last_tasks = eval_dir / f"step-{spec.length:08d}" / "tasks.json"
    return {
        "family": spec.family.name,
        "optimizer": spec.optimizer,
        "arm": spec.arm.name,
        "split": spec.arm.split,
        "seed": spec.seed,
        "lr": spec.lr,
        "steps": spec.length,
        "command": " ".join(spec.command(Path("STORE"), Path("RUN"))[1:]),
        "items": _items_total(last_tasks, spec.family.item),
        "train": {
            name: [_rounded(row.get(f"{prefix}")) for row in train]
            for name, prefix in (
                ("loss", "train/loss"),
                ("lm_loss", "train/lm_loss"),
                ("step_seconds", "train/step_seconds"),
                ("gd_cosine", "jd/cosine_to_mean"),
                ("conflict_share", "jd/conflict_share"),
            )
        },
        "evals": [
            {
                "step": row["step"],
                "train_seconds": _rounded(seconds_at[row["step"]]),
                "pass@1": row["eval/pass@1"],
                "pass@2": row["eval/pass@2"],
                "solved": _items_solved(
                    eval_dir / f"step-{row['step']:08d}" / "tasks.json", spec.family.item
                ),
            }
            for row in evals
        ],
    }


def code_commit() -> str | None:
    """The commit of the checkout whose trm-train the runs import (the study's own
    PYTHONPATH reaches its subprocesses), "+" when its packages differ from that commit;
    None outside a git checkout."""
    import trm_train  # where the trm-train processes import it from

    git = ["git", "-C", str(Path(trm_train.__file__).parent)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        top = subprocess.run([*git, "rev-parse", "--show-toplevel"], capture_output=True, text=True)
        if head.returncode != 0 or top.returncode != 0:
            return None
        status = [*git, "-C", top.stdout.strip(), "status", "--porcelain", "--", "packages"]
        changes = subprocess.run(status, capture_output=True, text=True).stdout
    except OSError:  # no git
        return None
    return head.stdout.strip() + ("+" if changes.strip() else "")


def probe_record(spec: RunSpec, run_dir: Path) -> dict[str, Any]:
    """A timing probe's step times and their median past the first PROBE_WARMUP steps."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    seconds = [row["train/step_seconds"] for row in rows if "train/step_seconds" in row]
    if len(seconds) != spec.length:
        raise RuntimeError(f"{run_dir}: unfinished ({len(seconds)} of {spec.length} steps)")
    timed = seconds[min(PROBE_WARMUP, len(seconds) // 2) :]
    return {
        "family": spec.family.name,
        "optimizer": spec.optimizer,
        "arm": spec.arm.name,
        "lr": spec.lr,
        "steps": spec.length,
        "command": " ".join(spec.command(Path("STORE"), Path("RUN"))[1:]),
        "step_seconds": [_rounded(s) for s in seconds],
        "seconds_per_step": _rounded(statistics.median(timed)),
        "code": code_commit(),  # the probe times this code, not that of the runs
    }


def iter_probes(
    family: Family, steps: int, arms: tuple[Arm, ...], sgd_lrs: tuple[float, ...]
) -> Iterator[RunSpec]:
    """One timing probe per arm and optimizer (SGD at the sweep's first rate: the rate
    does not change what a step computes)."""
    for arm in arms:
        yield RunSpec(family, "adam_atan2", arm, SEEDS[0], steps, probe=True)
        if sgd_lrs and arm.name in SGD_ARMS:
            yield RunSpec(family, "sgd", arm, SEEDS[0], steps, sgd_lrs[0], probe=True)


def iter_specs(
    family: Family,
    seeds: tuple[int, ...],
    steps: int,
    arms: tuple[Arm, ...],
    sgd_lrs: tuple[float, ...],
) -> Iterator[RunSpec]:
    """The AdamATan2 grid and the SGD learning-rate sweep, seed-major (a study cut short
    still has every arm at its first seeds). SGD seeds past the first need the tuned rate,
    so `study.py` adds them once the sweep is done."""
    for seed in seeds:
        for arm in arms:
            yield RunSpec(family, "adam_atan2", arm, seed, steps)
        if seed == seeds[0]:
            for arm in arms:
                if arm.name in SGD_ARMS:
                    for lr in sgd_lrs:
                        yield RunSpec(family, "sgd", arm, seed, steps, lr)
