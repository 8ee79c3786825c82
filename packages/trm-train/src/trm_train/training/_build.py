"""Building a `Trainer` from a `TrainConfig`: store, model, JD step, optimizers, sampler."""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn

import arc_data
import trm_model
from jd_splits import JacobianDescent, get_split

from .._config import TrainConfig
from .._distributed import Distributed
from .._run import check_store_matches
from ._ema import ParameterEMA
from ._failure_weights import FailureWeights
from ._init_from import load_initial_weights
from ._optimizers import make_optimizer
from ._schedule import warmup_cosine_scheduler
from ._trainer import Trainer


def derive_seed(seed: int, *keys: int) -> int:
    """An independent 63-bit seed for one purpose (model init, one rank's draws, ...)."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


_INIT_STREAM = 0
_TRAIN_STREAM = 1


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

    if config.loop.compile:
        if "autogram" in jd.hooked_engines:
            raise ValueError(
                "--compile cannot run the autogram engine: it runs the backward under vmap, "
                "which torch refuses for compiled code; use --engine auto, per_sample, "
                "autojac or sequential"
            )
        # Regions between the linear layers only: the per_sample engine's hooks on the
        # leaves still fire, and they compile in ~30 s on a CPU (the whole model: 2-3 min).
        model.compile_regions()

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
    )
