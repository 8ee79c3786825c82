"""`trm-train`'s model and training options, kept apart from the command (`_cli`).

Each list is applied in order by `apply_options`, so `--help` lists them as written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from .._config import FAILURE_RULES, OPTIMIZER_NAMES

F = TypeVar("F", bound=Callable[..., Any])


def apply_options(options: list[Callable[[F], F]]) -> Callable[[F], F]:
    """One decorator applying `options` as if stacked in this order above the command."""

    def decorate(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


# The architecture: overrides of the recipe's `TRMConfig`.
MODEL_OPTIONS: list[Callable[[Any], Any]] = [
    click.option(
        "--arch",
        type=click.Choice(["trm", "transformer"]),
        default=None,
        help="trm: the recursive model; transformer: the no-recursion baseline (the seed's), "
        "the same blocks, embeddings, heads, halting and losses with the --L-layers blocks "
        "applied once per supervision step (--H-cycles / --L-cycles ignored), to tell a "
        "failure of the recursion from one of the setup [default: trm].",
    ),
    click.option(
        "--mlp-t/--attention",
        "mlp_t",
        default=None,
        help="Mix tokens with a SwiGLU across the sequence instead of attention (TRM's Sudoku "
        "variant, fixed-size grids; implies --pos-encodings none unless given) [default: "
        "attention].",
    ),
    click.option(
        "--pos-encodings",
        type=click.Choice(["rope", "learned", "none"]),
        default=None,
        help="Position encodings [default: rope with attention].",
    ),
    click.option(
        "--puzzle-emb-len",
        type=click.IntRange(min=0),
        default=None,
        help="Positions of the puzzle embedding (0: none).",
    ),
    click.option("--hidden-size", type=click.IntRange(min=1), default=None, help="Model width."),
    click.option("--num-heads", type=click.IntRange(min=1), default=None, help="Attention heads."),
    click.option(
        "--L-layers",
        "l_layers",
        type=click.IntRange(min=1),
        default=None,
        help="Blocks of the shared network.",
    ),
    click.option(
        "--H-cycles",
        "h_cycles",
        type=click.IntRange(min=1),
        default=None,
        help="H cycles per supervision step.",
    ),
    click.option(
        "--L-cycles",
        "l_cycles",
        type=click.IntRange(min=1),
        default=None,
        help="L updates per H cycle.",
    ),
    click.option(
        "--halt-max-steps",
        type=click.IntRange(min=1),
        default=None,
        help="Most supervision steps per sample (ACT); exactly this many without ACT; the "
        "steps T unrolled by stack_supervisions*.",
    ),
    click.option(
        "--act-mode",
        type=click.Choice(["act", "fixed", "none"]),
        default=None,
        help="act: learned halting (TRM); fixed: Q head kept, exactly --halt-max-steps steps; "
        "none: the write-up's no-ACT model (no Q head or halting loss, every H cycle read out "
        "with gradient) [default: none for stack_* splits, else act].",
    ),
]

# Batches, length, evaluation, optimizers and regularisation.
TRAINING_OPTIONS: list[Callable[[Any], Any]] = [
    click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=None,
        help="Global batch size (over all ranks) per micro-step.",
    ),
    click.option(
        "--examples-per-draw",
        type=click.IntRange(min=1),
        default=None,
        help="At most K examples per draw of a task, so a batch spans more tasks [default: all "
        "of the drawn version's, TRM's rule]. An epoch still covers every example once.",
    ),
    click.option(
        "--grad-accum",
        type=click.IntRange(min=1),
        default=None,
        help="Micro-steps per optimizer step. Each micro-step aggregates its own objectives and "
        "the optimizer takes the sum: one step on the concatenated batch for a split of one "
        "objective or the `sum` aggregator; with `mean`, UPGrad and the other averaging "
        "aggregators, about ACCUM times that step's size (which AdamATan2 ignores, SGD does "
        "not).",
    ),
    click.option("--steps", type=click.IntRange(min=1), default=None, help="Optimizer steps."),
    click.option(
        "--epochs",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Train for this many passes over the tasks instead of --steps.",
    ),
    click.option(
        "--eval-every",
        type=click.IntRange(min=1),
        default=None,
        help="Evaluate the EMA weights on the test split every N steps (and at the end); the "
        "store needs a test split.",
    ),
    click.option(
        "--eval-batch-size",
        type=click.IntRange(min=1),
        default=None,
        help="Global batch of the evaluation (the last batch is padded to it).",
    ),
    click.option(
        "--optimizer",
        type=click.Choice(OPTIMIZER_NAMES),
        default=None,
        help="Optimizer of the weights [default: adam_atan2, TRM's]. adam_atan2 is invariant to "
        "a positive rescaling of the update, so JD acts through its direction only; with sgd "
        "(the TorchJD paper's setting) the update's size matters too.",
    ),
    click.option(
        "--lr", type=click.FloatRange(min=0), default=None, help="Learning rate of the weights."
    ),
    click.option(
        "--momentum", type=click.FloatRange(0, 1, max_open=True), default=None, help="SGD momentum."
    ),
    click.option(
        "--weight-decay",
        type=click.FloatRange(min=0),
        default=None,
        help="Weight decay of the weights.",
    ),
    click.option(
        "--warmup-steps", type=click.IntRange(min=0), default=None, help="Linear warm-up steps."
    ),
    click.option(
        "--lr-min-ratio",
        type=click.FloatRange(0, 1),
        default=None,
        help="Cosine decay after warm-up to this share of the rate (1: constant).",
    ),
    click.option(
        "--puzzle-emb-lr",
        type=click.FloatRange(min=0),
        default=None,
        help="SignSGD learning rate of the puzzle embeddings.",
    ),
    click.option("--ema/--no-ema", default=None, help="Keep an EMA of the weights for evaluation."),
    click.option(
        "--dropout",
        type=click.FloatRange(0, 1, max_open=True),
        default=None,
        help="Dropout on attention and MLP outputs.",
    ),
    click.option(
        "--differential-loss",
        is_flag=True,
        default=None,
        help="Loss on logits_t - logits_(t-1) across supervision steps.",
    ),
    click.option(
        "--carry-perturbation",
        type=click.FloatRange(min=0),
        default=None,
        help="Std of Gaussian noise added to the carried states between steps.",
    ),
    click.option(
        "--failure-weighted-sampling",
        is_flag=True,
        default=None,
        help="Draw puzzles the model still fails more often (see --failure-weighting).",
    ),
    click.option(
        "--failure-weighting",
        type=click.Choice(FAILURE_RULES),
        default=None,
        help="accumulated (the write-up's, default): weight 1 - solved / (seen + 1) over the "
        "run, only a task's augmented version drawn by weight; latest: 1, or 0.2 while the "
        "latest attempt was solved, tasks drawn by weight too.",
    ),
    click.option(
        "--freeze-weights", is_flag=True, default=None, help="Train the puzzle embeddings only."
    ),
]
