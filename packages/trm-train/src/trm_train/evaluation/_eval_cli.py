"""`trm-eval`: score a run's checkpoint on a store's test split with the official rule."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

import arc_data

from .._distributed import init_distributed, shutdown_distributed
from .._run import CommandError, check_store_matches, load_trained_model, locate_store
from ._evaluate import evaluate_model


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Several processes: torchrun --nproc-per-node N $(which trm-eval) ...; each rank "
    "predicts its slice of the test split and rank 0 scores and writes the files.",
)
@click.option(
    "--run",
    "run_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Run directory written by trm-train.",
)
@click.option(
    "--checkpoint", type=int, default=None, help="Step of the checkpoint [default: the latest]."
)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="Store whose test split to score [default: the run's store].",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where to write submission.json, tasks.json, metrics.json and pictures/ "
    "[default: RUN/eval/step-N].",
)
@click.option(
    "--ema/--no-ema",
    default=True,
    show_default=True,
    help="Use the EMA weights if the run kept them.",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Per rank."
)
@click.option(
    "--pictures",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="PNG pictures for the first N tasks.",
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option("--progress/--no-progress", default=True, help="Show a progress counter.")
def main(
    run_dir: Path,
    checkpoint: int | None,
    data: Path | None,
    out: Path | None,
    ema: bool,
    batch_size: int,
    pictures: int,
    device: str,
    progress: bool,
) -> None:
    """Predict every test input of every augmentation (all supervision steps), vote, and
    print pass@1/2/5/10/100/1000 as JSON. A store without test solutions still gives a
    submission.

    Example: trm-eval --run runs/iwrm_q_halt_in-seed0 --out eval/
    """
    try:
        runtime = init_distributed(device)
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    try:
        model, config, step = load_trained_model(
            run_dir, step=checkpoint, ema=ema, device=runtime.device
        )
        store = arc_data.open_store(data or locate_store(config.data, run_dir))
        check_store_matches(config.model, store)
    except (FileNotFoundError, ValueError, arc_data.ArcDataError) as error:
        shutdown_distributed(runtime)
        raise click.UsageError(str(error)) from error
    except OSError as error:  # e.g. a checkpoint that cannot be read
        shutdown_distributed(runtime)
        raise CommandError.from_os_error(error) from error
    if store.test.num_examples == 0:
        shutdown_distributed(runtime)
        raise click.UsageError(
            f"{store.path}: the store has no test split (built with --test-set none)"
        )
    out_dir = out or run_dir / "eval" / f"step-{step:08d}"
    try:
        result = evaluate_model(
            model,
            store,
            runtime,
            batch_size=batch_size,
            out_dir=out_dir,
            num_pictures=pictures,
            progress=progress,
        )
    except OSError as error:  # e.g. an --out that cannot be written
        raise CommandError.from_os_error(error) from error
    finally:
        shutdown_distributed(runtime)
    if result is None:  # not rank 0
        return
    if not result.has_labels:
        click.echo(f"{store.path}: the test split has no solutions; no score is possible", err=True)
    click.echo(json.dumps({"step": step, **result.metrics}, indent=2))
    click.echo(f"wrote {out_dir}", err=True)
    sys.stdout.flush()
