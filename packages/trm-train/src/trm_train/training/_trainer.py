"""Everything one training run holds (`Trainer`), and its checkpoint state."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, ClassVar

import attrs
import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR

import arc_data
import trm_model
from jd_splits import JacobianDescent, Split

from .._config import TrainConfig
from .._distributed import Distributed
from ._aggregator_state import aggregator_counts, load_aggregator_state
from ._ema import ParameterEMA
from ._failure_weights import FailureWeights


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
