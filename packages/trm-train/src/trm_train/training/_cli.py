"""`trm-train`: the options (`config_from_options` makes them a `TrainConfig`) and `main`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

import arc_data
from jd_splits import AGGREGATOR_NAMES, AGGREGATOR_PARAMETERS, ENGINE_NAMES, SPLIT_NAMES

from .._distributed import init_distributed, shutdown_distributed
from .._recipes import RECIPES
from .._run import CommandError
from ._cli_config import config_from_options
from ._cli_options import MODEL_OPTIONS, TRAINING_OPTIONS, apply_options
from ._loop import TrainingError, prepare_deterministic, train


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Distributed: torchrun --nproc-per-node N -m trm_train [OPTIONS]. Each rank "
    "samples its slice of the global batch and runs JD on its own objectives; the ranks' "
    "updates are averaged (JD per rank, as the reference code did: conflicts between "
    "ranks' objectives are not seen). Puzzle-embedding gradients are gathered so every "
    "rank applies the same sparse update.",
)
@click.option(
    "--data", "data", type=click.Path(path_type=Path), help="Store built by `arc-data build`."
)
@click.option(
    "--recipe",
    type=click.Choice(sorted(RECIPES)),
    default="tiny",
    show_default=True,
    help="arc2: the published ARC-AGI-2 setup (GPUs); seed: the research write-up's runs "
    "(arc2 with dropout 0.1, failure-weighted sampling, no EMA; H 3 / L 6 for stack_*); "
    "cpu: the calibrated CPU recipe for ARC grids (docs/calibration.md); cpu_sudoku: the "
    "same with TRM's Sudoku network (--mlp-t); tiny: a CPU-sized model. Every recipe runs the stack_* splits on the no-ACT model "
    "(T = 4 unrolled steps with carry noise 0.001 for stack_supervisions*).",
)
@click.option(
    "--split",
    default="sum",
    show_default=True,
    metavar="NAME",
    help="How the loss becomes objectives: "
    + ", ".join(SPLIT_NAMES)
    + " (`_with_q_halt_` spellings accepted). `sum` is plain gradient descent.",
)
@click.option(
    "--aggregator",
    default="upgrad",
    show_default=True,
    type=click.Choice(AGGREGATOR_NAMES),
    help="torchjd aggregator of the objectives. Parameters (--aggregator-param; type, default): "
    + "; ".join(
        f"{name}: {', '.join(str(p) for p in params if p.kind != 'python')}"
        for name, params in AGGREGATOR_PARAMETERS.items()
        if any(p.kind != "python" for p in params)
    )
    + ". Vectors hold one number per objective.",
)
@click.option(
    "--aggregator-param",
    "aggregator_param",
    multiple=True,
    metavar="KEY=VALUE",
    help="A constructor argument of the aggregator, repeatable: e.g. n_tasks=4, "
    "pref_vector=1,2 (a vector), scale_mode=median. Recorded in config.json.",
)
@click.option(
    "--engine",
    default="auto",
    show_default=True,
    type=click.Choice(ENGINE_NAMES),
    help="How the Jacobian is obtained (see jd-splits); auto picks the fastest.",
)
@click.option(
    "--groups",
    type=click.IntRange(min=1),
    default=None,
    help="Sum the objectives into G random buckets before aggregating.",
)
@click.option(
    "--intermediate-weight",
    type=click.FloatRange(min=0),
    default=None,
    help="Weight w of the internal refinement losses (stack_internal* splits) "
    "[default: 1e-4, the write-up's].",
)
@click.option(
    "--internal-losses",
    type=click.Choice(["differential", "absolute"]),
    default=None,
    help="Refinement losses: differential (cycle h scores logits_h - logits_(h-1), the "
    "write-up's, default) or absolute (each cycle's own loss, normalised like the LM loss).",
)
@click.option(
    "--jacobian-covers",
    type=click.Choice(["all", "parameters"]),
    default=None,
    help="all: the batch's puzzle-embedding rows enter the Jacobian and UPGrad's weights "
    "(the write-up's, default); parameters: the network weights only.",
)
@apply_options(MODEL_OPTIONS)
@apply_options(TRAINING_OPTIONS)
@click.option(
    "--init-from",
    type=click.Path(path_type=Path),
    default=None,
    help="Fine-tune: start from this checkpoint's weights (a reference TRM checkpoint, "
    "model.inner.* keys; one of ours; or a run directory), optimizers fresh. A puzzle table "
    "of another size becomes its mean row everywhere; a Q head is dropped for --act-mode none.",
)
@click.option("--seed", type=int, default=None, help="Seed of every random draw.")
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default=None,
    help="auto: CUDA when available.",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "bfloat16"]),
    default=None,
    help="Forward dtype (weights stay float32).",
)
@click.option(
    "--compile",
    "compile_",
    is_flag=True,
    default=None,
    help="Compile the blocks' code between their linear layers (torch.compile, regions "
    "only, so the JD engines' hooks on the linear layers still fire): any split and "
    "engine but --engine autogram.",
)
@click.option(
    "--deterministic",
    is_flag=True,
    default=None,
    help="PyTorch's deterministic algorithms (CUBLAS_WORKSPACE_CONFIG=:4096:8 unless set): "
    "what makes a CUDA run and its --resume bit-exact, on as many GPUs; slower, and an op "
    "without a deterministic kernel stops the run. CPU runs are bit-exact without it.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Run directory (default runs/<split>-seed<seed>).",
)
@click.option(
    "--resume",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Continue this run from its latest checkpoint (bit-exact on CPU, and on CUDA with "
    "--deterministic and as many GPUs) up to --steps, which must exceed the checkpoint's "
    "step. Only --data, --steps, --eval-every, --eval-batch-size, --device, "
    "--deterministic and the W&B options may change.",
)
@click.option(
    "--wandb",
    type=click.Choice(["online", "offline", "disabled"]),
    default=None,
    help="W&B mode [default: offline, synced later with `wandb sync`].",
)
@click.option("--wandb-project", default=None, help="W&B project [default: trm-jd].")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def main(**options: Any) -> None:
    """Train a Tiny Recursive Model on an ARC store with gradient or Jacobian descent.

    Example: trm-train --data arc.zarr --recipe tiny --split iwrm_q_halt_in --steps 200
    """
    ctx = click.get_current_context()
    given = {
        name
        for name in options
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
    }
    try:
        config, run_dir = config_from_options(options, given)
        if config.loop.deterministic:
            prepare_deterministic()  # before the process group touches the GPU
        runtime = init_distributed(config.loop.device, timeout_s=config.loop.distributed_timeout_s)
    except (ValueError, FileNotFoundError, arc_data.ArcDataError) as error:
        raise click.UsageError(str(error)) from error
    except OSError as error:
        raise CommandError.from_os_error(error) from error
    try:
        summary = train(
            config,
            run_dir,
            runtime,
            resume=options["resume"] is not None,
            progress=options["progress"],
        )
    except ValueError as error:
        # Only the configuration is checked before training: `train` reports a failure
        # during training as a TrainingError.
        raise click.UsageError(str(error)) from error
    except OSError as error:  # e.g. an --out that cannot be written
        raise CommandError.from_os_error(error) from error
    except TrainingError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)
    finally:
        shutdown_distributed(runtime)
    if runtime.is_main:
        click.echo(f"trained {summary.steps} steps; run directory: {summary.run_dir}")
