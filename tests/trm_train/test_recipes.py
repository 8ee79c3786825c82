"""Recipes: the write-up's training setup (`seed`) and the model each split runs on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

import arc_data
from trm_train import RECIPES, Distributed, TrainConfig, tiny
from trm_train._config import FailureRule
from trm_train.training._build import build_trainer

STORE = Path("store.zarr")


def _recipe(name: str, split: str) -> TrainConfig:
    return RECIPES[name](1000, 100, STORE, split)


def test_the_seed_recipe_is_the_write_ups_pretrain_defaults() -> None:
    config = _recipe("seed", "sum")
    model, optim, data = config.model, config.optim, config.data
    assert (model.hidden_size, model.H_cycles, model.L_cycles, model.halt_max_steps) == (
        512,
        3,
        4,
        16,
    )
    assert model.act_mode == "act" and model.dropout == 0.1 and model.carry_perturbation == 0
    assert (optim.lr, optim.puzzle_emb_lr, optim.weight_decay, optim.warmup_steps) == (
        1e-4,
        1e-2,
        0.1,
        2000,
    )
    assert not optim.ema and data.global_batch_size == 768
    assert data.failure_weighted_sampling and data.failure_weighting == "accumulated"
    assert config.objective.intermediate_weight == 1e-4
    assert config.objective.jacobian_covers == "all"


@pytest.mark.parametrize(
    ("split", "cycles", "steps", "noise"),
    [
        ("stack_internal_losses", (3, 6), 16, 0.0),
        ("stack_internal_and_sum", (3, 6), 16, 0.0),
        ("stack_supervisions", (3, 6), 4, 0.001),
        ("stack_supervisions_and_iwrm", (3, 6), 4, 0.001),
    ],
)
def test_the_seed_recipe_runs_stack_splits_on_the_no_act_architecture(
    split: str, cycles: tuple[int, int], steps: int, noise: float
) -> None:
    model = _recipe("seed", split).model
    assert model.act_mode == "none" and not model.has_q_head and model.cycle_outputs
    assert (model.H_cycles, model.L_cycles) == cycles
    assert model.halt_max_steps == steps and model.carry_perturbation == noise


@pytest.mark.parametrize("recipe", ["tiny", "arc2", "cpu"])
def test_every_recipe_runs_stack_splits_as_the_write_up_did(recipe: str) -> None:
    assert _recipe(recipe, "iwrm_q_halt_in").model.act_mode == (
        "fixed" if recipe == "cpu" else "act"
    )
    internal = _recipe(recipe, "Stack-Internal-Losses").model
    assert internal.act_mode == "none" and internal.carry_perturbation == 0
    unrolled = _recipe(recipe, "stack_supervisions_and_sum").model
    assert unrolled.act_mode == "none" and unrolled.halt_max_steps == 4
    assert unrolled.carry_perturbation == 0.001


def test_the_cpu_recipe_is_one_fixed_supervision_step_with_a_q_head() -> None:
    config = _recipe("cpu", "lm_loss_vs_q_halt_loss")
    model, optim, data = config.model, config.optim, config.data
    assert (model.hidden_size, model.H_cycles, model.L_cycles) == (64, 1, 2)
    assert model.act_mode == "fixed" and model.halt_max_steps == 1 and model.has_q_head
    assert (optim.optimizer, optim.lr, optim.warmup_steps, optim.ema_decay) == (
        "adam_atan2",
        3e-3,
        50,
        0.99,
    )
    assert (data.global_batch_size, data.examples_per_draw) == (64, 4)
    # The no-ACT refinement split keeps one supervision step, with one objective per cycle.
    internal = _recipe("cpu", "stack_internal_losses").model
    assert (internal.halt_max_steps, internal.H_cycles, internal.act_mode) == (1, 2, "none")
    assert _recipe("cpu", "stack_supervisions_and_iwrm").model.H_cycles == 1
    sudoku = _recipe("cpu_sudoku", "sum")
    assert sudoku.model.mlp_t and sudoku.model.pos_encodings == "none"
    assert sudoku.model.H_cycles == 2
    plain = attrs.evolve(sudoku.model, mlp_t=False, pos_encodings="rope", H_cycles=1)
    assert plain == config.model


def test_a_refinement_split_needs_a_model_that_reads_every_cycle_out() -> None:
    config = _recipe("tiny", "stack_internal_losses")
    act_model = attrs.evolve(config.model, act_mode="act")
    with pytest.raises(ValueError, match="act_mode 'none' or intermediate_outputs"):
        attrs.evolve(config, model=act_model)
    # Today's refinement on the ACT model stays available as an explicit option.
    evolved = attrs.evolve(config, model=attrs.evolve(act_model, intermediate_outputs=True))
    assert evolved.model.cycle_outputs and evolved.model.has_q_head


def test_configs_of_earlier_runs_still_read() -> None:
    values = _recipe("tiny", "stack_supervisions").to_dict()
    model = {key: value for key, value in values["model"].items() if key != "act_mode"}
    values = {
        **values,
        "model": {**model, "act": False},
        "objective": {**values["objective"], "supervision_steps": 4},
    }
    del values["init_from"]
    config = TrainConfig.from_dict(values)
    assert config.model.act_mode == "fixed" and config.init_from is None


@pytest.mark.parametrize(("rule", "weight_groups"), [("accumulated", False), ("latest", True)])
def test_the_failure_weighting_rule_reaches_the_trainer(
    transform_store: Callable[..., Path], rule: FailureRule, weight_groups: bool
) -> None:
    store = transform_store(
        tasks=4, shape=(2, 3), transform="transpose", seed=2, num_aug=2, held_out=True
    )
    meta = arc_data.open_store(store).metadata
    config = tiny(meta.num_puzzle_identifiers, meta.seq_len, store)
    data = attrs.evolve(config.data, failure_weighted_sampling=True, failure_weighting=rule)
    trainer = build_trainer(attrs.evolve(config, data=data), Distributed())
    assert trainer.failure_weights is not None and trainer.failure_weights.rule == rule
    assert trainer.sampler.weight_groups is weight_groups
