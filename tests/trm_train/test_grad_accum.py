"""Gradient accumulation: `grad_accum` micro-batches against one step on their
concatenation, for plain descent and for a Jacobian-descent split."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import torch

import arc_data
from trm_train import Distributed, LoggingConfig, TrainConfig, tiny
from trm_train.training._build import build_trainer
from trm_train.training._step import train_step
from trm_train.training._trainer import Trainer

CPU = Distributed()
MICRO_BATCH = 4
ACCUM = 2


@pytest.fixture(scope="module")
def store_path(transform_store: Callable[..., Path]) -> Path:
    return transform_store(
        tasks=12, shape=(3, 3), transform="mirror", seed=0, num_aug=1, held_out=False
    )


def _config(store: Path, split: str, aggregator: str, *, batch: int, accum: int) -> TrainConfig:
    """One fixed supervision step per sample (act mode "fixed", halt max 1): every slot
    halts after each micro-step, so the next micro-batch refills the whole carry and one
    step on the concatenated batch is well defined. Plain SGD at the full rate from the
    first step (no warm-up, momentum or decay), so that the update is the gradient times
    the rate and no optimizer nonlinearity hides a difference."""
    meta = arc_data.open_store(store).metadata
    config = tiny(meta.num_puzzle_identifiers, meta.seq_len, store, split)
    return attrs.evolve(
        config,
        model=attrs.evolve(config.model, hidden_size=32, act_mode="fixed", halt_max_steps=1),
        objective=attrs.evolve(config.objective, aggregator=aggregator),
        optim=attrs.evolve(
            config.optim,
            optimizer="sgd",
            lr=0.5,
            momentum=0.0,
            weight_decay=0.0,
            warmup_steps=0,
            lr_min_ratio=1.0,
            ema=False,
        ),
        data=attrs.evolve(config.data, global_batch_size=batch),
        loop=attrs.evolve(config.loop, steps=1, grad_accum=accum),
        logging=LoggingConfig(wandb="disabled"),
    )


class _Feed:
    """Stands in for a trainer's sampler: hands out the given batches in turn."""

    epoch = 0

    def __init__(self, batches: list[arc_data.Batch]) -> None:
        self._batches: Iterator[arc_data.Batch] = iter(batches)

    def __next__(self) -> arc_data.Batch:
        return next(self._batches)


def _concatenated(batches: list[arc_data.Batch]) -> arc_data.Batch:
    fields = ("inputs", "labels", "puzzle_identifiers", "example_indices")
    return arc_data.Batch(
        **{name: np.concatenate([getattr(b, name) for b in batches]) for name in fields}
    )


def _one_step_each_way(
    store: Path, split: str, aggregator: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[Trainer, Trainer, dict[str, Any], dict[str, Any]]:
    """The trainer that accumulated ACCUM micro-batches and the one that took their
    concatenation in one micro-step, each after its one optimizer step, and their metrics."""
    accumulating = build_trainer(
        _config(store, split, aggregator, batch=MICRO_BATCH, accum=ACCUM), CPU
    )
    whole = build_trainer(
        _config(store, split, aggregator, batch=MICRO_BATCH * ACCUM, accum=1), CPU
    )
    micro = [next(accumulating.sampler) for _ in range(ACCUM)]
    # Different samples in each micro-batch, or the comparison would be a weak one.
    assert not np.array_equal(micro[0].example_indices, micro[1].example_indices)
    monkeypatch.setattr(accumulating, "sampler", _Feed(micro))
    monkeypatch.setattr(whole, "sampler", _Feed([_concatenated(micro)]))
    for a, b in zip(accumulating.model.parameters(), whole.model.parameters(), strict=True):
        assert torch.equal(a, b)  # the same seed: the same initial weights
    return accumulating, whole, train_step(accumulating), train_step(whole)


def _gradients(trainer: Trainer) -> list[torch.Tensor]:
    grads = [p.grad for p in trainer.model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    return [g for g in grads if g is not None]


# `sum` (plain descent: one objective) and `iwrm_q_halt_in` (one objective per sample)
# with the `sum` aggregator. Each micro-step aggregates its own objectives, scaled by
# 1 / (micro batch x accum); the accumulation equals one step on the concatenation when
# the aggregation of stacked Jacobian rows is the sum of the aggregations of the blocks,
# A([J1; J2]) = A(J1) + A(J2). That holds for the aggregator `sum` (fixed weights 1 per
# row). It does not for `mean` (weights 1/m: each micro-step divides by its own m, so the
# accumulation is ACCUM times the concatenated step, checked below), nor for UPGrad and the
# other conflict-aware aggregators, whose weights depend on which rows meet in one
# Jacobian: there the accumulation is by design a sum of per-micro-batch JD steps.
@pytest.mark.parametrize(("split", "aggregator"), [("sum", "upgrad"), ("iwrm_q_halt_in", "sum")])
def test_accumulated_micro_batches_equal_one_step_on_their_concatenation(
    store_path: Path, split: str, aggregator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    accumulating, whole, metrics_accum, metrics_whole = _one_step_each_way(
        store_path, split, aggregator, monkeypatch
    )
    expected_objectives = 1 if split == "sum" else MICRO_BATCH
    assert metrics_accum["jd/num_objectives"] == expected_objectives
    for a, b in zip(_gradients(accumulating), _gradients(whole), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    # The update: SGD's step of the same gradient gives the same weights.
    named = dict(whole.model.named_parameters())
    moved = 0
    initial = build_trainer(accumulating.config, CPU).model.state_dict()
    for name, value in accumulating.model.named_parameters():
        torch.testing.assert_close(value, named[name], rtol=1e-5, atol=1e-7, msg=name)
        moved += not torch.equal(value, initial[name])
    assert moved >= len(named) - 2  # all but H_init and L_init, which are fixed
    # Same rows, same gathered gradients: the same sparse update of the puzzle table.
    torch.testing.assert_close(
        accumulating.puzzle_optimizer.table, whole.puzzle_optimizer.table, rtol=0, atol=0
    )
    for key in ("train/loss", "train/lm_loss", "train/halt_loss", "train/grad_norm"):
        assert metrics_accum[key] == pytest.approx(metrics_whole[key], rel=1e-5), key
    # Token accuracy: float32 per-sample shares, summed in another order.
    assert metrics_accum["train/accuracy"] == pytest.approx(metrics_whole["train/accuracy"])
    for key in ("train/counted", "train/exact_accuracy", "train/q_halt_accuracy"):
        assert metrics_accum[key] == metrics_whole[key], key
    assert metrics_accum["train/counted"] == MICRO_BATCH * ACCUM


def test_the_mean_aggregator_accumulates_accum_times_the_concatenated_step(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Documents why `mean` is not in the test above: each micro-step averages its own
    # MICRO_BATCH objectives, the concatenated step all MICRO_BATCH x ACCUM of them.
    accumulating, whole, _, _ = _one_step_each_way(
        store_path, "iwrm_q_halt_in", "mean", monkeypatch
    )
    for a, b in zip(_gradients(accumulating), _gradients(whole), strict=True):
        torch.testing.assert_close(a, ACCUM * b, rtol=1e-5, atol=1e-8)
