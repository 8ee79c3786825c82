"""The recipes: a full `TrainConfig` from the store's shape and the split.

A recipe is a function of the store's shape (puzzle-identifier count and sequence
length, which the model's embedding table and canvas must match) and of the split
returning a full `TrainConfig`; the CLI then applies its overrides with `attrs.evolve`.
Every recipe runs the `stack_*` splits as the research write-up did (`split_model`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import attrs

import trm_model

from ._config import DataConfig, LoopConfig, ObjectiveConfig, OptimConfig, TrainConfig

# The write-up limited the unrolled `stack_supervisions*` runs to T = 4 steps (memory).
_STACKED_SUPERVISION_STEPS = 4
# Std of the noise added to the states between unrolled steps (the write-up's default).
_STACKED_CARRY_PERTURBATION = 0.001
# H cycles of the CPU recipe's refinement splits: one objective per cycle needs several.
_CPU_REFINEMENT_CYCLES = 2


def split_model(model: trm_model.TRMConfig, split: str) -> trm_model.TRMConfig:
    """The model the write-up ran `split` on: the no-ACT variant for every `stack_*`
    split; for the unrolled `stack_supervisions*` ones at most T = 4 steps and carry
    noise of std 0.001 between them. Other splits keep `model`."""
    objective = ObjectiveConfig(split=split)
    if not objective.stacked:
        return model
    model = attrs.evolve(model, act_mode="none")
    if objective.stacks_supervisions:
        model = attrs.evolve(
            model,
            halt_max_steps=min(model.halt_max_steps, _STACKED_SUPERVISION_STEPS),
            carry_perturbation=_STACKED_CARRY_PERTURBATION,
        )
    return model


def arc2(num_puzzle_identifiers: int, seq_len: int, store: Path, split: str = "sum") -> TrainConfig:
    """The published ARC-AGI-2 setup: TRM-arc (H 3 / L 4, halt max 16), global batch 768,
    lr 1e-4, puzzle-embedding lr 1e-2, weight decay 0.1, betas (0.9, 0.95), warm-up 2000,
    constant rate after, EMA 0.999, bfloat16 forward, 100k epochs' worth of steps."""
    model = attrs.evolve(
        trm_model.arc(num_puzzle_identifiers), seq_len=seq_len, forward_dtype="bfloat16"
    )
    return TrainConfig(
        model=split_model(model, split),
        optim=OptimConfig(),
        objective=ObjectiveConfig(split=split),
        data=DataConfig(store=store, global_batch_size=768),
        loop=LoopConfig(steps=700_000, eval_every=10_000, eval_batch_size=768),
    )


def seed(num_puzzle_identifiers: int, seq_len: int, store: Path, split: str = "sum") -> TrainConfig:
    """The write-up's runs (its `pretrain.py` defaults on the paper's ARC setup): `arc2`
    with dropout 0.1 on each block's output, failure-weighted sampling by the write-up's
    rule, EMA off, refinement-loss weight 1e-4; the `stack_*` splits on the no-ACT
    variant of its architecture file (H 3 / L 6, halt max 16; T = 4 for the unrolled
    `stack_supervisions*` with carry noise 0.001)."""
    base = arc2(num_puzzle_identifiers, seq_len, store, split)
    model = attrs.evolve(base.model, dropout=0.1)
    if base.objective.stacked:
        model = attrs.evolve(model, H_cycles=3, L_cycles=6)
    return attrs.evolve(
        base,
        model=model,
        optim=attrs.evolve(base.optim, ema=False),
        data=attrs.evolve(base.data, failure_weighted_sampling=True),
    )


def tiny(num_puzzle_identifiers: int, seq_len: int, store: Path, split: str = "sum") -> TrainConfig:
    """A CPU-sized run: trm_model.tiny (hidden 64, H 2 / L 2, halt max 4), batch 32,
    lr 1e-3 after 20 warm-up steps, 200 steps; seconds per step on a laptop core."""
    model = attrs.evolve(trm_model.tiny(num_puzzle_identifiers), seq_len=seq_len)
    return TrainConfig(
        model=split_model(model, split),
        optim=OptimConfig(lr=1e-3, warmup_steps=20, ema_decay=0.99, weight_decay=0.1),
        objective=ObjectiveConfig(split=split),
        data=DataConfig(store=store, global_batch_size=32, in_memory=True),
        loop=LoopConfig(steps=200, checkpoint_every=100, eval_batch_size=64),
    )


def cpu(num_puzzle_identifiers: int, seq_len: int, store: Path, split: str = "sum") -> TrainConfig:
    """The calibrated CPU recipe for ARC grids (docs/calibration.md): the tiny network
    (hidden 64, attention with RoPE) with one H cycle of two L updates, all with gradient,
    and one supervision step of fixed length (the Q head and its loss kept, so the halting
    splits apply); batch 64 of at most 4 examples per task draw, lr 3e-3 after 50 warm-up
    steps, EMA 0.99, 2000 steps with an evaluation every 500. The refinement splits
    (`stack_internal*`) get 2 H cycles, one objective each; `stack_supervisions*` unroll
    T = 4 steps. Chosen by training figures on ARC-GEN-small: at this budget a cycle run
    without gradient (TRM's H 2 / L 2) cost more than it gave."""
    objective = ObjectiveConfig(split=split)
    model = attrs.evolve(
        trm_model.tiny(num_puzzle_identifiers),
        seq_len=seq_len,
        act_mode="fixed",
        halt_max_steps=1,
        H_cycles=_CPU_REFINEMENT_CYCLES if objective.uses_internal_losses else 1,
    )
    model = split_model(model, split)
    if objective.stacks_supervisions:
        model = attrs.evolve(model, halt_max_steps=_STACKED_SUPERVISION_STEPS)
    return TrainConfig(
        model=model,
        optim=OptimConfig(lr=3e-3, warmup_steps=50, ema_decay=0.99, weight_decay=0.1),
        objective=objective,
        data=DataConfig(store=store, global_batch_size=64, examples_per_draw=4, in_memory=True),
        loop=LoopConfig(steps=2000, eval_every=500, checkpoint_every=500, eval_batch_size=512),
    )


def cpu_sudoku(
    num_puzzle_identifiers: int, seq_len: int, store: Path, split: str = "sum"
) -> TrainConfig:
    """`cpu` with TRM's Sudoku network: tokens mixed by a SwiGLU across the sequence
    instead of attention, no position encoding (`mlp_t`, as the paper's Sudoku runs), and
    2 H cycles (the first without gradient, as in TRM). On generated 6 x 6 Sudoku it learns
    in minutes where attention takes tens of minutes, and 2 H cycles learned faster per
    step than 1 at about the same speed per second (docs/calibration.md). It needs a
    fixed-size grid."""
    config = cpu(num_puzzle_identifiers, seq_len, store, split)
    model = attrs.evolve(config.model, mlp_t=True, pos_encodings="none", H_cycles=2)
    return attrs.evolve(config, model=model)


Recipe = Callable[[int, int, Path, str], TrainConfig]
RECIPES: dict[str, Recipe] = {
    "arc2": arc2,
    "cpu": cpu,
    "cpu_sudoku": cpu_sudoku,
    "seed": seed,
    "tiny": tiny,
}
