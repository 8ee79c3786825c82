"""`trm-train`: options become a `TrainConfig` here, in one place; `train` does the rest."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import attrs
import click

import arc_data
from jd_splits import AGGREGATOR_NAMES, ENGINE_NAMES, SPLIT_NAMES

from ._config import RECIPES, TrainConfig
from ._distributed import init_distributed, shutdown_distributed
from ._loop import TrainingError, train
from ._run import read_run_config

# Options that may change when resuming a run; every other one is fixed by the run.
_RESUMABLE = {
    "resume",
    "data",
    "steps",
    "eval_every",
    "eval_batch_size",
    "wandb",
    "wandb_project",
    "device",
    "progress",
}

# Option name -> TRMConfig field, for the architecture overrides.
_MODEL_FIELDS = {
    "hidden_size": "hidden_size",
    "num_heads": "num_heads",
    "l_layers": "L_layers",
    "h_cycles": "H_cycles",
    "l_cycles": "L_cycles",
    "halt_max_steps": "halt_max_steps",
    "act_mode": "act_mode",
    "internal_losses": "internal_losses",
    "dropout": "dropout",
    "differential_loss": "differential_loss",
    "carry_perturbation": "carry_perturbation",
    "dtype": "forward_dtype",
}


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
    "tiny: a CPU-sized model. Every recipe runs the stack_* splits on the no-ACT model "
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
    help="torchjd aggregator of the objectives.",
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
    help="Evaluate the EMA weights on the test split every N steps (and at the end).",
)
@click.option(
    "--eval-batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Global batch of the evaluation (the last batch is padded to it).",
)
@click.option("--lr", type=click.FloatRange(min=0), default=None, help="AdamATan2 learning rate.")
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
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Run directory (default runs/<split>-seed<seed>).",
)
@click.option(
    "--resume",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Continue this run from its latest checkpoint (bit-exact on CPU). Only "
    "--data, --steps, --eval-every, --eval-batch-size, --device and the W&B options may "
    "change.",
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
        config, run_dir = _config_from_options(options, given)
        runtime = init_distributed(config.loop.device, timeout_s=config.loop.distributed_timeout_s)
    except (ValueError, FileNotFoundError, arc_data.ArcDataError) as error:
        raise click.UsageError(str(error)) from error
    try:
        summary = train(
            config,
            run_dir,
            runtime,
            resume=options["resume"] is not None,
            progress=options["progress"],
        )
    except ValueError as error:
        shutdown_distributed(runtime)
        raise click.UsageError(str(error)) from error
    except TrainingError as error:
        shutdown_distributed(runtime)
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)
    shutdown_distributed(runtime)
    if runtime.is_main:
        click.echo(f"trained {summary.steps} steps; run directory: {summary.run_dir}")


def _config_from_options(options: dict[str, Any], given: set[str]) -> tuple[TrainConfig, Path]:
    if options["resume"] is not None:
        fixed = sorted(given - _RESUMABLE)
        if fixed:
            raise ValueError(
                "a resumed run keeps its configuration; remove "
                + ", ".join("--" + name.rstrip("_").replace("_", "-") for name in fixed)
            )
        run_dir = Path(options["resume"])
        config = read_run_config(run_dir)
        data = attrs.evolve(config.data, store=options["data"] or config.data.store)
        loop = attrs.evolve(
            config.loop,
            **_given(
                steps=options["steps"],
                eval_every=options["eval_every"],
                eval_batch_size=options["eval_batch_size"],
                device=options["device"],
            ),
        )
        logging = attrs.evolve(
            config.logging, **_given(wandb=options["wandb"], wandb_project=options["wandb_project"])
        )
        return attrs.evolve(config, data=data, loop=loop, logging=logging), run_dir

    if options["data"] is None:
        raise ValueError("--data STORE is required (build one with `arc-data build`)")
    if options["steps"] is not None and options["epochs"] is not None:
        raise ValueError("give --steps or --epochs, not both")
    store = arc_data.open_store(options["data"])
    meta = store.metadata
    config = RECIPES[options["recipe"]](
        meta.num_puzzle_identifiers, meta.seq_len, options["data"], options["split"]
    )
    model = attrs.evolve(
        config.model, **_given(**{field: options[name] for name, field in _MODEL_FIELDS.items()})
    )
    objective = attrs.evolve(
        config.objective,
        **_given(
            aggregator=options["aggregator"],
            engine=options["engine"],
            groups=options["groups"],
            intermediate_weight=options["intermediate_weight"],
            jacobian_covers=options["jacobian_covers"],
        ),
    )
    if objective.uses_internal_losses and not model.cycle_outputs:
        # The ACT model reads every cycle out only when asked to.
        model = attrs.evolve(model, intermediate_outputs=True)
    data = attrs.evolve(
        config.data,
        **_given(
            global_batch_size=options["batch_size"],
            failure_weighted_sampling=options["failure_weighted_sampling"],
            failure_weighting=options["failure_weighting"],
        ),
    )
    optim = attrs.evolve(
        config.optim,
        **_given(lr=options["lr"], ema=options["ema"], freeze_weights=options["freeze_weights"]),
    )
    seed = config.loop.seed if options["seed"] is None else options["seed"]
    steps = options["steps"]
    if options["epochs"] is not None:
        per_epoch = arc_data.TrainSampler(store.train, data.global_batch_size, seed=seed)
        accum = options["grad_accum"] or config.loop.grad_accum
        steps = max(1, math.ceil(options["epochs"] * per_epoch.batches_in_epoch() / accum))
    loop = attrs.evolve(
        config.loop,
        **_given(
            steps=steps,
            grad_accum=options["grad_accum"],
            eval_every=options["eval_every"],
            eval_batch_size=options["eval_batch_size"],
            seed=options["seed"],
            device=options["device"],
            compile=options["compile_"],
        ),
    )
    logging = attrs.evolve(
        config.logging, **_given(wandb=options["wandb"], wandb_project=options["wandb_project"])
    )
    config = TrainConfig(
        model=model,
        optim=optim,
        objective=objective,
        data=data,
        loop=loop,
        logging=logging,
        init_from=options["init_from"],
    )
    run_dir = options["out"] or Path("runs") / f"{objective.split}-seed{loop.seed}"
    return config, run_dir


def _given(**changes: Any) -> dict[str, Any]:
    """The changes for `attrs.evolve`, without the options the user did not give (None)."""
    return {key: value for key, value in changes.items() if value is not None}
