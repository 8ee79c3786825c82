"""The training configuration: one frozen record per component, and the recipes.

A recipe is a function of the store's shape (puzzle-identifier count and sequence
length, which the model's embedding table and canvas must match) and of the split
returning a full `TrainConfig`; the CLI then applies its overrides with `attrs.evolve`.
Every recipe runs the `stack_*` splits as the research write-up did (`split_model`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import attrs
from attrs import validators as v

import trm_model
from jd_splits import (
    ENGINE_NAMES,
    JACOBIAN_COVERS,
    EngineName,
    JacobianCovers,
    Refinements,
    canonical_split_name,
    get_split,
)

from ._failure_weights import FAILURE_RULES, FailureRule
from ._metrics_log import LoggingConfig
from ._optimizers import OPTIMIZER_NAMES, OptimizerName

DeviceName = Literal["auto", "cpu", "cuda"]

# The write-up limited the unrolled `stack_supervisions*` runs to T = 4 steps (memory).
_STACKED_SUPERVISION_STEPS = 4
# Std of the noise added to the states between unrolled steps (the write-up's default).
_STACKED_CARRY_PERTURBATION = 0.001
# H cycles of the CPU recipe's refinement splits: one objective per cycle needs several.
_CPU_REFINEMENT_CYCLES = 2


@attrs.frozen(kw_only=True)
class OptimConfig:
    """AdamATan2 (or `optimizer`) for the weights, sparse SignSGD for the puzzle
    embedding, one schedule.

    The i-th optimizer step (1-based) uses `lr * i / warmup_steps` during warm-up, then a
    cosine from `lr` down to `lr_min_ratio * lr` at the last step (1.0: constant).
    """

    optimizer: OptimizerName = attrs.field(default="adam_atan2", validator=v.in_(OPTIMIZER_NAMES))
    lr: float = attrs.field(default=1e-4, validator=v.ge(0.0))
    puzzle_emb_lr: float = attrs.field(default=1e-2, validator=v.ge(0.0))
    weight_decay: float = attrs.field(default=0.1, validator=v.ge(0.0))
    puzzle_emb_weight_decay: float = attrs.field(default=0.1, validator=v.ge(0.0))
    betas: tuple[float, float] = attrs.field(default=(0.9, 0.95), converter=tuple)
    # SGD only.
    momentum: float = attrs.field(default=0.0, validator=v.and_(v.ge(0.0), v.lt(1.0)))
    warmup_steps: int = attrs.field(default=2000, validator=v.ge(0))
    lr_min_ratio: float = attrs.field(default=1.0, validator=v.and_(v.ge(0.0), v.le(1.0)))
    ema: bool = True
    ema_decay: float = attrs.field(default=0.999, validator=v.and_(v.ge(0.0), v.lt(1.0)))
    # Train the puzzle embeddings only (the network's weights stay as loaded).
    freeze_weights: bool = False


@attrs.frozen(kw_only=True)
class ObjectiveConfig:
    """How the loss becomes objectives (`split`) and how they are aggregated."""

    # Stored in canonical form (lower case, `_with_q_halt_` spelling folded), so that the
    # mode checks below see one spelling.
    split: str = attrs.field(default="sum", converter=canonical_split_name)
    aggregator: str = "upgrad"
    # The aggregator's constructor arguments (`jd_splits.AGGREGATOR_PARAMETERS`), as plain
    # JSON values (vectors as lists), so that config.json carries them to a resumed run.
    aggregator_params: dict[str, Any] = attrs.field(factory=dict)
    engine: EngineName = attrs.field(default="auto", validator=v.in_(ENGINE_NAMES))
    groups: int | None = attrs.field(default=None, validator=v.optional(v.gt(0)))
    # Weight w of the refinement losses (the write-up's `intermediate_loss_weight`).
    intermediate_weight: float = attrs.field(default=1e-4, validator=v.ge(0.0))
    # "all": the puzzle-embedding rows of the batch enter the Jacobian (and so UPGrad's
    # weights) beside the weights, as in the write-up; "parameters": the weights only.
    jacobian_covers: JacobianCovers = attrs.field(default="all", validator=v.in_(JACOBIAN_COVERS))

    @property
    def uses_internal_losses(self) -> bool:
        """Whether the split reads the per-H-cycle losses (the model must then read every
        cycle out, `TRMConfig.cycle_outputs`)."""
        return get_split(self.split).refinements is not Refinements.FINAL

    @property
    def stacks_supervisions(self) -> bool:
        """Whether each optimizer step unrolls `halt_max_steps` supervision steps on a
        fresh batch (no carry across batches) and keeps all their graphs."""
        return self.split.startswith("stack_supervisions")


@attrs.frozen(kw_only=True)
class DataConfig:
    # A run records the absolute path (see `train`).
    store: Path = attrs.field(converter=Path)
    # The store's path relative to the run folder, recorded with it: a project moved or
    # copied elsewhere, runs and stores together, still finds its store (`locate_store`).
    store_from_run: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(Path)
    )
    global_batch_size: int = attrs.field(default=768, validator=v.gt(0))
    # At most this many examples per draw of a task (None: all of the drawn version's, TRM's
    # rule); an epoch still covers every example once.
    examples_per_draw: int | None = attrs.field(default=None, validator=v.optional(v.gt(0)))
    # Draw tasks the model got wrong more often (see `FailureWeights`).
    failure_weighted_sampling: bool = False
    # "accumulated" (the write-up's): weight 1 - correct / (total + 1) from run-long
    # counts, groups shuffled as usual and only a group's version drawn by weight.
    # "latest": 1, or 0.2 once the latest outcome was solved, and groups drawn by weight too.
    failure_weighting: FailureRule = attrs.field(
        default="accumulated", validator=v.in_(FAILURE_RULES)
    )
    in_memory: bool = False


@attrs.frozen(kw_only=True)
class LoopConfig:
    steps: int = attrs.field(validator=v.gt(0))
    grad_accum: int = attrs.field(default=1, validator=v.gt(0))
    eval_every: int | None = attrs.field(default=None, validator=v.optional(v.gt(0)))
    eval_batch_size: int = attrs.field(default=64, validator=v.gt(0))
    checkpoint_every: int = attrs.field(default=1000, validator=v.gt(0))
    keep_checkpoints: int = attrs.field(default=2, validator=v.gt(0))
    seed: int = 0
    device: DeviceName = attrs.field(default="auto", validator=v.in_(("auto", "cpu", "cuda")))
    compile: bool = False
    # PyTorch's deterministic algorithms and cuBLAS's deterministic workspace: what makes
    # a CUDA run repeat, and resume, bit for bit (CPU runs do without).
    deterministic: bool = False
    # Seconds a collective may wait for the other ranks before the run fails.
    distributed_timeout_s: float = attrs.field(default=600.0, validator=v.gt(0.0))


@attrs.frozen(kw_only=True)
class TrainConfig:
    model: trm_model.TRMConfig
    optim: OptimConfig
    objective: ObjectiveConfig
    data: DataConfig
    loop: LoopConfig
    logging: LoggingConfig = attrs.field(factory=LoggingConfig)
    # Fine-tuning: start from this checkpoint's weights (a reference TRM checkpoint, one
    # of ours or a run directory), optimizers fresh; see `load_initial_weights`.
    init_from: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))

    def __attrs_post_init__(self) -> None:
        if self.objective.uses_internal_losses and not self.model.cycle_outputs:
            raise ValueError(
                f"the {self.objective.split} split reads the refinement losses: the model "
                "needs act_mode 'none' or intermediate_outputs=True"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (paths as strings), for `config.json` and W&B."""
        return attrs.asdict(
            self,
            value_serializer=lambda _, __, value: str(value) if isinstance(value, Path) else value,
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        model, objective = dict(values["model"]), dict(values["objective"])
        # Runs written before act_mode and before T became halt_max_steps.
        if "act" in model:
            model["act_mode"] = "act" if model.pop("act") else "fixed"
        objective.pop("supervision_steps", None)
        return cls(
            model=trm_model.TRMConfig(**model),
            optim=OptimConfig(**values["optim"]),
            objective=ObjectiveConfig(**objective),
            data=DataConfig(**values["data"]),
            loop=LoopConfig(**values["loop"]),
            logging=LoggingConfig(**values["logging"]),
            init_from=values.get("init_from"),
        )


def split_model(model: trm_model.TRMConfig, split: str) -> trm_model.TRMConfig:
    """The model the write-up ran `split` on: the no-ACT variant for every `stack_*`
    split; for the unrolled `stack_supervisions*` ones at most T = 4 steps and carry
    noise of std 0.001 between them. Other splits keep `model`."""
    name = ObjectiveConfig(split=split).split
    if not name.startswith("stack_"):
        return model
    model = attrs.evolve(model, act_mode="none")
    if name.startswith("stack_supervisions"):
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
    if base.objective.split.startswith("stack_"):
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
