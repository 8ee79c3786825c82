"""The training configuration: one frozen record per component, and the recipes.

A recipe is a function of the store's shape (puzzle-identifier count and sequence
length, which the model's embedding table and canvas must match) returning a full
`TrainConfig`; the CLI then applies its overrides with `attrs.evolve`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import attrs
from attrs import validators as v

import trm_model
from jd_splits import ENGINE_NAMES, SPLIT_NAMES, EngineName, Refinements, get_split

from ._metrics_log import LoggingConfig

DeviceName = Literal["auto", "cpu", "cuda"]


@attrs.frozen(kw_only=True)
class OptimConfig:
    """AdamATan2 for the weights, sparse SignSGD for the puzzle embedding, one schedule.

    The i-th optimizer step (1-based) uses `lr * i / warmup_steps` during warm-up, then a
    cosine from `lr` down to `lr_min_ratio * lr` at the last step (1.0: constant).
    """

    lr: float = attrs.field(default=1e-4, validator=v.ge(0.0))
    puzzle_emb_lr: float = attrs.field(default=1e-2, validator=v.ge(0.0))
    weight_decay: float = attrs.field(default=0.1, validator=v.ge(0.0))
    puzzle_emb_weight_decay: float = attrs.field(default=0.1, validator=v.ge(0.0))
    betas: tuple[float, float] = attrs.field(default=(0.9, 0.95), converter=tuple)
    warmup_steps: int = attrs.field(default=2000, validator=v.ge(0))
    lr_min_ratio: float = attrs.field(default=1.0, validator=v.and_(v.ge(0.0), v.le(1.0)))
    ema: bool = True
    ema_decay: float = attrs.field(default=0.999, validator=v.and_(v.ge(0.0), v.lt(1.0)))
    # Train the puzzle embeddings only (the network's weights stay as loaded).
    freeze_weights: bool = False


def _canonical_split(name: str) -> str:
    normalised = name.strip().lower().replace("-", "_").replace("_with_q_halt", "_q_halt")
    if normalised not in SPLIT_NAMES:
        raise ValueError(f"unknown split {name!r}; valid names: {', '.join(SPLIT_NAMES)}")
    return normalised


@attrs.frozen(kw_only=True)
class ObjectiveConfig:
    """How the loss becomes objectives (`split`) and how they are aggregated."""

    # Stored in canonical form (lower case, `_with_q_halt_` spelling folded), so that the
    # mode checks below see one spelling.
    split: str = attrs.field(default="sum", converter=_canonical_split)
    aggregator: str = "upgrad"
    engine: EngineName = attrs.field(default="auto", validator=v.in_(ENGINE_NAMES))
    groups: int | None = attrs.field(default=None, validator=v.optional(v.gt(0)))
    intermediate_weight: float = attrs.field(default=1.0, validator=v.ge(0.0))
    # Supervision steps unrolled per optimizer step by the `stack_supervisions*` splits.
    supervision_steps: int = attrs.field(default=4, validator=v.gt(0))

    @property
    def uses_internal_losses(self) -> bool:
        """Whether the split reads the per-H-cycle losses (the model must then have
        `intermediate_outputs` on)."""
        return get_split(self.split).refinements is not Refinements.FINAL

    @property
    def stacks_supervisions(self) -> bool:
        """Whether each optimizer step unrolls `supervision_steps` steps on a fresh batch
        (no ACT carry across batches) and keeps all their graphs."""
        return self.split.startswith("stack_supervisions")


@attrs.frozen(kw_only=True)
class DataConfig:
    store: Path = attrs.field(converter=Path)
    global_batch_size: int = attrs.field(default=768, validator=v.gt(0))
    # Draw tasks the model got wrong more often (see `FailureWeights`).
    failure_weighted_sampling: bool = False
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

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (paths as strings), for `config.json` and W&B."""
        return attrs.asdict(
            self,
            value_serializer=lambda _, __, value: str(value) if isinstance(value, Path) else value,
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        return cls(
            model=trm_model.TRMConfig(**values["model"]),
            optim=OptimConfig(**values["optim"]),
            objective=ObjectiveConfig(**values["objective"]),
            data=DataConfig(**values["data"]),
            loop=LoopConfig(**values["loop"]),
            logging=LoggingConfig(**values["logging"]),
        )


def arc2(num_puzzle_identifiers: int, seq_len: int, store: Path) -> TrainConfig:
    """The published ARC-AGI-2 setup: TRM-arc (H 3 / L 4, halt max 16), global batch 768,
    lr 1e-4, puzzle-embedding lr 1e-2, weight decay 0.1, betas (0.9, 0.95), warm-up 2000,
    constant rate after, EMA 0.999, bfloat16 forward, 100k epochs' worth of steps."""
    model = attrs.evolve(
        trm_model.arc(num_puzzle_identifiers), seq_len=seq_len, forward_dtype="bfloat16"
    )
    return TrainConfig(
        model=model,
        optim=OptimConfig(),
        objective=ObjectiveConfig(),
        data=DataConfig(store=store, global_batch_size=768),
        loop=LoopConfig(steps=700_000, eval_every=10_000, eval_batch_size=768),
    )


def tiny(num_puzzle_identifiers: int, seq_len: int, store: Path) -> TrainConfig:
    """A CPU-sized run: trm_model.tiny (hidden 64, H 2 / L 2, halt max 4), batch 32,
    lr 1e-3 after 20 warm-up steps, 200 steps; seconds per step on a laptop core."""
    model = attrs.evolve(trm_model.tiny(num_puzzle_identifiers), seq_len=seq_len)
    return TrainConfig(
        model=model,
        optim=OptimConfig(lr=1e-3, warmup_steps=20, ema_decay=0.99, weight_decay=0.1),
        objective=ObjectiveConfig(),
        data=DataConfig(store=store, global_batch_size=32, in_memory=True),
        loop=LoopConfig(steps=200, checkpoint_every=100, eval_batch_size=64),
    )


Recipe = Callable[[int, int, Path], TrainConfig]
RECIPES: dict[str, Recipe] = {"arc2": arc2, "tiny": tiny}
