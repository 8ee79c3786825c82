"""The training configuration: one frozen record per component, checked as a whole.

`TrainConfig` refuses combinations that cannot train (a refinement split on a model that
does not read every H cycle out) when it is built, whether by a recipe (`_recipes`), the
command line or a library user, so that no run fails on them midway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

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

from ._metrics_log import LoggingConfig

DeviceName = Literal["auto", "cpu", "cuda"]
# The names the configuration accepts; the training package builds what they name.
OptimizerName = Literal["adam_atan2", "adamw", "sgd"]
OPTIMIZER_NAMES: tuple[OptimizerName, ...] = get_args(OptimizerName)
FailureRule = Literal["accumulated", "latest"]
FAILURE_RULES: tuple[FailureRule, ...] = get_args(FailureRule)


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
        """Whether the split reads several supervision steps (kept apart, or averaged), so
        that each optimizer step unrolls `halt_max_steps` of them on a fresh batch (no
        carry across batches) and keeps all their graphs."""
        split = get_split(self.split)
        return split.supervisions or split.mean_over_steps

    @property
    def stacked(self) -> bool:
        """Whether the split is one of the write-up's `stack_*` ones (refinement losses or
        unrolled supervision steps), which it ran on the no-ACT model."""
        return self.uses_internal_losses or self.stacks_supervisions


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
        # Checked here rather than where the model first runs: the split would otherwise
        # find no refinement losses at the first training step, after the run had started.
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
