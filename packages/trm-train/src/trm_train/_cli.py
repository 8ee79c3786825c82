"""`trm-train`: the options (`config_from_options` makes them a `TrainConfig`) and `main`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

import arc_data
from jd_splits import AGGREGATOR_NAMES, AGGREGATOR_PARAMETERS, ENGINE_NAMES, SPLIT_NAMES

from ._cli_config import config_from_options
from ._config import RECIPES
from ._distributed import init_distributed, shutdown_distributed
from ._loop import TrainingError, prepare_deterministic, train
from ._run import CommandError


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
@click.option(
    "--arch",
    type=click.Choice(["trm", "transformer"]),
    default=None,
    help="trm: the recursive model; transformer: the no-recursion baseline (the seed's), "
    "the same blocks, embeddings, heads, halting and losses with the --L-layers blocks "
    "applied once per supervision step (--H-cycles / --L-cycles ignored), to tell a "
    "failure of the recursion from one of the setup [default: trm].",
)
@click.option(
    "--mlp-t/--attention",
    "mlp_t",
    default=None,
    help="Mix tokens with a SwiGLU across the sequence instead of attention (TRM's Sudoku "
    "variant, fixed-size grids; implies --pos-encodings none unless given) [default: "
    "attention].",
)
@click.option(
    "--pos-encodings",
    type=click.Choice(["rope", "learned", "none"]),
    default=None,
    help="Position encodings [default: rope with attention].",
)
@click.option(
    "--puzzle-emb-len",
    type=click.IntRange(min=0),
    default=None,
    help="Positions of the puzzle embedding (0: none).",
)
@click.option("--hidden-size", type=click.IntRange(min=1), default=None, help="Model width.")
@click.option("--num-heads", type=click.IntRange(min=1), default=None, help="Attention heads.")
@click.option(
    "--L-layers",
    "l_layers",
    type=click.IntRange(min=1),
    default=None,
    help="Blocks of the shared network.",
)
@click.option(
    "--H-cycles",
    "h_cycles",
    type=click.IntRange(min=1),
    default=None,
    help="H cycles per supervision step.",
)
@click.option(
    "--L-cycles",
    "l_cycles",
    type=click.IntRange(min=1),
    default=None,
    help="L updates per H cycle.",
)
@click.option(
    "--halt-max-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Most supervision steps per sample (ACT); exactly this many without ACT; the "
    "steps T unrolled by stack_supervisions*.",
)
@click.option(
    "--act-mode",
    type=click.Choice(["act", "fixed", "none"]),
    default=None,
    help="act: learned halting (TRM); fixed: Q head kept, exactly --halt-max-steps steps; "
    "none: the write-up's no-ACT model (no Q head or halting loss, every H cycle read out "
    "with gradient) [default: none for stack_* splits, else act].",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Global batch size (over all ranks) per micro-step.",
)
@click.option(
    "--examples-per-draw",
    type=click.IntRange(min=1),
    default=None,
    help="At most K examples per draw of a task, so a batch spans more tasks [default: all "
    "of the drawn version's, TRM's rule]. An epoch still covers every example once.",
)
@click.option(
    "--grad-accum", type=click.IntRange(min=1), default=None, help="Micro-steps per optimizer step."
)
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Optimizer steps.")
@click.option(
    "--epochs",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Train for this many passes over the tasks instead of --steps.",
)
@click.option(
    "--eval-every",
    type=click.IntRange(min=1),
    default=None,
    help="Evaluate the EMA weights on the test split every N steps (and at the end); the "
    "store needs a test split.",
)
@click.option(
    "--eval-batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Global batch of the evaluation (the last batch is padded to it).",
)
@click.option(
    "--optimizer",
    type=click.Choice(["adam_atan2", "adamw", "sgd"]),
    default=None,
    help="Optimizer of the weights [default: adam_atan2, TRM's]. adam_atan2 is invariant to "
    "a positive rescaling of the update, so JD acts through its direction only; with sgd "
    "(the TorchJD paper's setting) the update's size matters too.",
)
@click.option(
    "--lr", type=click.FloatRange(min=0), default=None, help="Learning rate of the weights."
)
@click.option(
    "--momentum", type=click.FloatRange(0, 1, max_open=True), default=None, help="SGD momentum."
)
@click.option(
    "--weight-decay",
    type=click.FloatRange(min=0),
    default=None,
    help="Weight decay of the weights.",
)
@click.option(
    "--warmup-steps", type=click.IntRange(min=0), default=None, help="Linear warm-up steps."
)
@click.option(
    "--lr-min-ratio",
    type=click.FloatRange(0, 1),
    default=None,
    help="Cosine decay after warm-up to this share of the rate (1: constant).",
)
@click.option(
    "--puzzle-emb-lr",
    type=click.FloatRange(min=0),
    default=None,
    help="SignSGD learning rate of the puzzle embeddings.",
)
@click.option("--ema/--no-ema", default=None, help="Keep an EMA of the weights for evaluation.")
@click.option(
    "--dropout",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    help="Dropout on attention and MLP outputs.",
)
@click.option(
    "--differential-loss",
    is_flag=True,
    default=None,
    help="Loss on logits_t - logits_(t-1) across supervision steps.",
)
@click.option(
    "--carry-perturbation",
    type=click.FloatRange(min=0),
    default=None,
    help="Std of Gaussian noise added to the carried states between steps.",
)
@click.option(
    "--failure-weighted-sampling",
    is_flag=True,
    default=None,
    help="Draw puzzles the model still fails more often (see --failure-weighting).",
)
@click.option(
    "--failure-weighting",
    type=click.Choice(["accumulated", "latest"]),
    default=None,
    help="accumulated (the write-up's, default): weight 1 - solved / (seen + 1) over the "
    "run, only a task's augmented version drawn by weight; latest: 1, or 0.2 while the "
    "latest attempt was solved, tasks drawn by weight too.",
)
@click.option(
    "--freeze-weights", is_flag=True, default=None, help="Train the puzzle embeddings only."
)
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
    help="torch.compile the model (single-objective splits only: JD hooks modules).",
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
