"""Does Jacobian descent help TRM? The study of docs/results.md, resumable, in one command.

    python tools/study.py                              # the full grid (hours; see README)
    python tools/study.py --family arc-gen --quick     # 2 arms x 2 seeds, short runs
    python tools/study.py --budget-minutes 110         # stop starting runs after 110 min

Two families (ARC-GEN-small tasks with outputs <= 6 x 6 at `--recipe cpu`, generated
6 x 6 Sudoku at `--recipe cpu_sudoku`); 8 arms with AdamATan2 (the recipe's rate), the
five costing over 3x a GD step for a third of the steps; `sum` and `iwrm_q_halt_in` with
SGD + momentum, the rate tuned per arm on the first seed; 5 paired seeds (docs/results.md
gives the protocol). Each run is a `trm-train` process with one torch thread, `--jobs` at
a time.
A finished run leaves `docs/study/records/<key>.json`; the same command skips those, so an
interrupted study goes on where it stopped (the runs it was in start over). When the grid
is complete, one short timing probe per arm (`docs/study/timing/<key>.json`) measures the
seconds per step of the wall-time axis, every arm under the same conditions: run that last
part on an otherwise idle machine. Then `study_analysis` writes the tables and plots from
the records alone.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

import attrs
import click
from study_analysis import tuned_sgd_lr
from study_protocol import (
    ARC_GEN,
    ARMS,
    FAMILIES,
    PROBE_STEPS,
    QUICK_ARMS,
    SEEDS,
    SGD_ARMS,
    SGD_LRS,
    SUDOKU,
    Family,
    RunSpec,
    iter_probes,
    iter_specs,
    probe_record,
    run_record,
    run_training,
)
from study_report import write_analysis


def _log(start: float, message: str) -> None:
    print(f"[{(time.perf_counter() - start) / 60:6.1f} min] {message}", file=sys.stderr, flush=True)


def ensure_store(family: Family, data_dir: Path, start: float) -> Path:
    store = family.store(data_dir)
    if not store.exists():
        _log(start, f"building {store}")
        data_dir.mkdir(parents=True, exist_ok=True)
        for command in family.build_commands(data_dir):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise click.ClickException(f"building {store} failed:\n{done.stderr[-2000:]}")
    return store


class Runner:
    """Trains the runs not yet recorded, `jobs` at a time, and records each as it ends."""

    def __init__(
        self, runs_dir: Path, out_dir: Path, jobs: int, deadline: float, start: float
    ) -> None:
        self.runs_dir = runs_dir
        self.records_dir, self.timing_dir = out_dir / "records", out_dir / "timing"
        self.pool = ThreadPoolExecutor(jobs)
        self.deadline, self.start = deadline, start
        self.pending: dict[Future[bool], RunSpec] = {}
        self.trained = 0
        self.records_dir.mkdir(parents=True, exist_ok=True)

    def record_path(self, spec: RunSpec) -> Path:
        return (self.timing_dir if spec.probe else self.records_dir) / f"{spec.key}.json"

    def submit(self, spec: RunSpec, store: Path) -> None:
        if self.record_path(spec).exists():
            return
        self.pending[self.pool.submit(self._train, spec, store)] = spec

    def _train(self, spec: RunSpec, store: Path) -> bool:
        if time.perf_counter() > self.deadline:
            return False  # past the piece's budget: the next call starts it
        run_dir = self.runs_dir / spec.key
        shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run starts over
        _log(self.start, f"start {spec.key}")
        run_training(spec, store, run_dir, self.runs_dir / "logs" / f"{spec.key}.txt")
        record = (probe_record if spec.probe else run_record)(spec, run_dir)
        path = self.record_path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".partial").write_text(json.dumps(record, separators=(",", ":")) + "\n")
        path.with_suffix(".partial").replace(path)
        if spec.probe:
            _log(self.start, f"done  {spec.key}: {record['seconds_per_step']:.3f} s/step")
        else:
            _log(self.start, f"done  {spec.key}: pass@1 {record['evals'][-1]['pass@1']:.3f}")
        return True

    def drain(self) -> None:
        """Wait for every submitted run; the first failure stops the study."""
        while self.pending:
            done, _ = wait(self.pending, return_when=FIRST_COMPLETED)
            for future in done:
                del self.pending[future]
                try:
                    self.trained += future.result()
                except RuntimeError as error:
                    raise click.ClickException(str(error)) from error


@click.command()
@click.option(
    "--family",
    type=click.Choice(["all", *FAMILIES]),
    default="all",
    show_default=True,
    help="Which family to run.",
)
@click.option("--quick", is_flag=True, help="2 arms (sum, iwrm_q_halt_in) x 2 seeds, half length.")
@click.option("--steps", type=click.IntRange(min=1), help="Steps per run [default: the family's].")
@click.option("--seeds", default=",".join(map(str, SEEDS)), show_default=True)
@click.option("--no-sgd", is_flag=True, help="Skip the SGD part.")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--probe-steps",
    type=click.IntRange(min=0),
    default=PROBE_STEPS,
    show_default=True,
    help="Steps of each arm's timing probe, run after the grid (0: none). The probes time"
    " the wall-time axis: run them on an otherwise idle machine.",
)
@click.option(
    "--budget-minutes",
    type=click.FloatRange(min=0),
    help="Start no run after this many minutes (the running ones finish): one piece.",
)
@click.option(
    "--arms",
    "arm_names",
    default=",".join(a.name for a in ARMS),
    show_default=True,
    help="Comma-separated arms (of the list shown).",
)
@click.option(
    "--sgd-lrs",
    default=",".join(f"{lr:g}" for lr in SGD_LRS),
    show_default=True,
    help="The SGD learning-rate sweep (log-spaced).",
)
@click.option(
    "--arc-gen",
    type=click.Path(path_type=Path),
    default=ARC_GEN,
    show_default=True,
    help="Kaggle prefix of ARC-GEN-small.",
)
@click.option(
    "--sudoku-source",
    default=SUDOKU,
    show_default=True,
    help="arc-data source of the Sudoku family (`sudoku:N?...`, N <= 6).",
)
@click.option(
    "--work-dir",
    type=click.Path(path_type=Path),
    default=Path("runs/study"),
    show_default=True,
    help="Stores and run folders (not committed).",
)
@click.option(
    "--out-dir",
    type=click.Path(path_type=Path),
    help="Run records (records/*.json), tables and plots [default: docs/study; with --quick,"
    " WORK_DIR/quick/results].",
)
def main(
    family: str,
    quick: bool,
    steps: int | None,
    seeds: str,
    no_sgd: bool,
    jobs: int,
    probe_steps: int,
    budget_minutes: float | None,
    arm_names: str,
    sgd_lrs: str,
    arc_gen: Path,
    sudoku_source: str,
    work_dir: Path,
    out_dir: Path | None,
) -> None:
    """Train the study's grid (resumably), then write its tables and plots."""
    start = time.perf_counter()
    deadline = start + 60 * budget_minutes if budget_minutes is not None else math.inf
    seed_list = tuple(int(s) for s in seeds.split(","))
    by_name = {a.name: a for a in ARMS}
    unknown = [name for name in arm_names.split(",") if name not in by_name]
    if unknown:
        raise click.BadParameter(f"unknown arm(s) {unknown}; known: {list(by_name)}")
    arms = tuple(by_name[name] for name in arm_names.split(","))
    lrs = () if no_sgd else tuple(float(lr) for lr in sgd_lrs.split(","))
    if quick:
        seed_list, lrs = seed_list[:2], ()
        arms = tuple(a for a in arms if a.name in QUICK_ARMS)
        work_dir = work_dir / "quick"
    out_dir = out_dir or (work_dir / "results" if quick else Path("docs/study"))
    sources = {"arc-gen": str(arc_gen), "sudoku": sudoku_source}
    families = [
        attrs.evolve(fam, source=sources[name])
        for name, fam in FAMILIES.items()
        if family in ("all", name)
    ]
    runner = Runner(work_dir / "runs", out_dir, jobs, deadline, start)
    try:
        lengths = {fam.name: steps or (fam.quick_steps if quick else fam.steps) for fam in families}
        for fam in families:
            store = ensure_store(fam, work_dir / "data", start)
            for spec in iter_specs(fam, seed_list, lengths[fam.name], arms, lrs):
                runner.submit(spec, store)
        runner.drain()
        # The SGD seeds past the first, at each arm's rate tuned on the first seed.
        for fam in families if lrs else []:
            for arm in (a for a in arms if a.name in SGD_ARMS):
                lr = tuned_sgd_lr(out_dir / "records", fam.name, arm.name, seed_list[0], lrs)
                if lr is None:
                    continue  # the sweep is not complete (a budget cut it short)
                for seed in seed_list[1:]:
                    spec = RunSpec(fam, "sgd", arm, seed, lengths[fam.name], lr)
                    runner.submit(spec, fam.store(work_dir / "data"))
        runner.drain()
        # Last, when every run is done: the timing probes, all under the same conditions.
        for fam in families if probe_steps else []:
            for spec in iter_probes(fam, probe_steps, arms, lrs):
                runner.submit(spec, fam.store(work_dir / "data"))
        runner.drain()
    finally:
        runner.pool.shutdown(cancel_futures=True)
    _log(start, f"{runner.trained} runs trained; writing the analysis")
    write_analysis(out_dir, command=" ".join(["python tools/study.py", *sys.argv[1:]]))
    _log(start, f"wrote {out_dir}")


if __name__ == "__main__":
    main()
