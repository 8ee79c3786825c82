"""Everything one training run holds, built from a `TrainConfig`, and its checkpoint state."""

from __future__ import annotations

import dataclasses
import sys
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import attrs
import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

import arc_data
import trm_model
from jd_splits import JacobianDescent, Split, get_split

from ._aggregator_state import aggregator_counts, load_aggregator_state
from ._config import TrainConfig
from ._distributed import Distributed
from ._ema import ParameterEMA
from ._failure_weights import FailureWeights
from ._init_from import load_initial_weights
from ._optimizers import make_optimizer
from ._schedule import warmup_cosine_scheduler


def derive_seed(seed: int, *keys: int) -> int:
    """An independent 63-bit seed for one purpose (model init, one rank's draws, ...)."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


_INIT_STREAM = 0
_TRAIN_STREAM = 1


def check_store_matches(config: trm_model.TRMConfig, store: arc_data.ArcStore) -> None:
    """Refuse a store whose shape differs from the model's, naming both values."""
    meta = store.metadata
    if meta.num_puzzle_identifiers != config.num_puzzle_identifiers:
        raise ValueError(
            f"{store.path}: the store has {meta.num_puzzle_identifiers} puzzle identifiers, "
            f"the model was built for {config.num_puzzle_identifiers}"
        )
    if meta.seq_len != config.seq_len:
        raise ValueError(
            f"{store.path}: the store's sequence length is {meta.seq_len}, "
            f"the model's is {config.seq_len}"
        )


@attrs.define(kw_only=True, eq=False)
class Trainer:
    """The mutable state of a run. `state_dict()` is everything a checkpoint needs to
    continue bit-exactly (on CUDA with `--deterministic`): weights, puzzle table, both
    optimizers, schedule, EMA, step, aggregator state, generators (CUDA's on CUDA runs),
    sampler position, failure weights and the ACT carry."""

    config: TrainConfig
    runtime: Distributed
    store: arc_data.ArcStore
    model: trm_model.TRM
    jd: JacobianDescent
    split: Split
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    puzzle_optimizer: trm_model.SparseSignSGD
    ema: ParameterEMA | None
    sampler: arc_data.TrainSampler
    generator: torch.Generator
    failure_weights: FailureWeights | None
    # The model's forward, compiled with `--compile`.
    forward: Callable[..., trm_model.StepOutput]
    step: int = 0
    carry: trm_model.Carry | None = None

    # Keys of `state_dict` that differ between ranks.
    # The aggregator's state (stateful ones such as gradvac) follows each rank's own
    # objectives under DDP; "cuda_rng" is there on CUDA runs only.
    RANK_LOCAL: ClassVar[tuple[str, ...]] = (
        "generator",
        "torch_rng",
        "cuda_rng",
        "carry",
        "aggregator",
        "aggregator_counts",
    )

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only (NumPy arrays become tensors), so that the
        checkpoint loads with `weights_only=True`."""
        return {
            "config": self.config.to_dict(),
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "aggregator": self.jd.aggregator.state_dict(),
            "aggregator_counts": aggregator_counts(self.jd.aggregator),
            "sampler": _tensors_from_numpy(self.sampler.state_dict()),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            **_cuda_rng_state(self.runtime.device),
            "failure_weights": (
                None
                if self.failure_weights is None
                else _tensors_from_numpy(self.failure_weights.state_dict())
            ),
            "carry": None if self.carry is None else dataclasses.asdict(self.carry),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.runtime.device
        self.step = int(state["step"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        if "aggregator" in state:
            load_aggregator_state(
                self.jd.aggregator,
                state["aggregator"],
                state.get("aggregator_counts", {}),
                # Where the run computes, whatever device the checkpoint was written on.
                device=next(self.model.parameters()).device,
            )
        self.sampler.load_state_dict(_numpy_from_tensors(state["sampler"]))
        if "generator" in state:
            try:
                self.generator.set_state(state["generator"])
            except RuntimeError:  # saved on another device type: the draws restart
                warnings.warn(
                    "the checkpoint's random generator is for another device; it restarts "
                    "from the seed, so this resume is not bit-exact",
                    stacklevel=2,
                )
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
            _load_cuda_rng_state(state.get("cuda_rng"), device)
        if self.failure_weights is not None and state["failure_weights"] is not None:
            self.failure_weights.load_state_dict(_numpy_from_tensors(state["failure_weights"]))
        self.carry = None if state["carry"] is None else _carry_from_dict(state["carry"], device)


def _cuda_rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The CUDA generator of the run's GPU, on CUDA runs: dropout and the `random` and
    `graddrop` aggregators draw from it."""
    if device.type != "cuda":
        return {}
    return {"cuda_rng": torch.cuda.get_rng_state(device)}


def _load_cuda_rng_state(saved: torch.Tensor | None, device: torch.device) -> None:
    if device.type != "cuda":
        return  # a CPU run draws nothing from CUDA's generators
    if saved is None:
        warnings.warn(
            "the checkpoint holds no CUDA random state (written on the CPU or by an older "
            "version): CUDA draws restart, so this resume is not bit-exact",
            stacklevel=3,
        )
        return
    torch.cuda.set_rng_state(saved, device)


def _tensors_from_numpy(value: Any) -> Any:
    """`value` with every NumPy array a tensor of the same dtype and every NumPy scalar a
    Python number: `weights_only` loading refuses NumPy objects."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: _tensors_from_numpy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_tensors_from_numpy(item) for item in value)
    return value


def _numpy_from_tensors(value: Any) -> Any:
    """The inverse of `_tensors_from_numpy` for the sampler's and the failure weights'
    states, which hold no tensors of their own (arrays of older checkpoints stay)."""
    if isinstance(value, torch.Tensor):
        return value.numpy().copy()
    if isinstance(value, dict):
        return {key: _numpy_from_tensors(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_numpy_from_tensors(item) for item in value)
    return value


def _carry_from_dict(values: dict[str, Any], device: torch.device) -> trm_model.Carry:
    def moved(value: torch.Tensor | None) -> torch.Tensor | None:
        return None if value is None else value.to(device)

    batch = trm_model.Batch(**{k: v.to(device) for k, v in values["batch"].items()})
    return trm_model.Carry(
        z_H=values["z_H"].to(device),
        z_L=values["z_L"].to(device),
        steps=values["steps"].to(device),
        halted=values["halted"].to(device),
        batch=batch,
        prev_logits=moved(values["prev_logits"]),
    )


def build_trainer(config: TrainConfig, runtime: Distributed, *, resume: bool = False) -> Trainer:
    """Open the store and build the model, the JD step, optimizers, schedule and sampler.

    Every rank builds the same model from the seed, or loads `config.init_from` (unless
    `resume`: the run's own checkpoint will replace the weights); under DDP the wrapper
    also broadcasts rank 0's weights, so the ranks start identical whatever happens.
    """
    store = arc_data.open_store(config.data.store, in_memory=config.data.in_memory)
    check_store_matches(config.model, store)
    device = runtime.device
    torch.manual_seed(derive_seed(config.loop.seed, _TRAIN_STREAM, runtime.rank, 1))
    init = torch.Generator(device).manual_seed(derive_seed(config.loop.seed, _INIT_STREAM))
    model = trm_model.TRM(config.model, generator=init)
    if config.init_from is not None and not resume:
        for warning in load_initial_weights(model, config.init_from):
            if runtime.is_main:
                print(f"warning: {warning}", file=sys.stderr)

    wrapped: nn.Module = model
    if runtime.enabled:
        # broadcast_buffers=False: the puzzle table is updated identically on every rank by
        # the gathered sparse step; re-broadcasting it each forward would cost gigabytes.
        wrapped = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            broadcast_buffers=False,
        )
    objective = config.objective
    split = get_split(
        objective.split,
        groups=objective.groups,
        intermediate_weight=objective.intermediate_weight,
        seed=config.loop.seed,
    )
    jd = JacobianDescent(
        wrapped,
        aggregator=objective.aggregator,
        aggregator_params=objective.aggregator_params,
        engine=objective.engine,
        split=split,
        jacobian_covers=objective.jacobian_covers,
    )

    forward: Callable[..., trm_model.StepOutput] = model
    if config.loop.compile:
        if jd.uses_hooks:
            raise ValueError(
                f"--compile needs a split and aggregator that run one plain backward (e.g. "
                f"sum); {objective.split} with {objective.aggregator} hooks the model's modules"
            )
        forward = torch.compile(model)

    optim = config.optim
    optimizer = make_optimizer(
        optim.optimizer,
        model.parameters(),
        lr=optim.lr,
        betas=optim.betas,
        weight_decay=optim.weight_decay,
        momentum=optim.momentum,
        device=device,
    )
    scheduler = warmup_cosine_scheduler(
        optimizer,
        warmup_steps=optim.warmup_steps,
        total_steps=config.loop.steps,
        min_ratio=optim.lr_min_ratio,
    )
    assert model.puzzle_emb is not None, "ARC training needs the puzzle embedding"
    puzzle_optimizer = trm_model.SparseSignSGD(
        model.puzzle_emb, lr=optim.puzzle_emb_lr, weight_decay=optim.puzzle_emb_weight_decay
    )
    if config.data.global_batch_size % runtime.world_size:
        raise ValueError(
            f"global batch size {config.data.global_batch_size} is not divisible by "
            f"{runtime.world_size} ranks"
        )
    failure_weights = (
        FailureWeights(store.metadata.num_puzzle_identifiers, rule=config.data.failure_weighting)
        if config.data.failure_weighted_sampling
        else None
    )
    sampler = arc_data.TrainSampler(
        store.train,
        config.data.global_batch_size,
        seed=config.loop.seed,
        rank=runtime.rank,
        world_size=runtime.world_size,
        weights=None if failure_weights is None else failure_weights.weights.copy(),
        weight_groups=config.data.failure_weighting == "latest",
        examples_per_draw=config.data.examples_per_draw,
    )
    return Trainer(
        config=config,
        runtime=runtime,
        store=store,
        model=model,
        jd=jd,
        split=split,
        optimizer=optimizer,
        scheduler=scheduler,
        puzzle_optimizer=puzzle_optimizer,
        ema=ParameterEMA(model, optim.ema_decay) if optim.ema else None,
        sampler=sampler,
        generator=torch.Generator(device).manual_seed(
            derive_seed(config.loop.seed, _TRAIN_STREAM, runtime.rank)
        ),
        failure_weights=failure_weights,
        forward=forward,
    )
