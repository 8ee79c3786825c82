"""`TrainConfig` checks itself: a library user gets the same refusal as the command line,
when the config is built, and the split's own properties say how a split trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

import trm_model
from jd_splits import SPLIT_NAMES, get_split
from trm_train import DataConfig, LoopConfig, ObjectiveConfig, OptimConfig, TrainConfig

REFINEMENT_SPLITS = (
    "stack_internal_losses",
    "stack_internal_losses_only",
    "stack_internal_and_sum",
)


def _config(split: str, **model: Any) -> TrainConfig:
    return TrainConfig(
        model=attrs.evolve(trm_model.tiny(10), **model),
        optim=OptimConfig(),
        objective=ObjectiveConfig(split=split),
        data=DataConfig(store=Path("store.zarr")),
        loop=LoopConfig(steps=1),
    )


@pytest.mark.parametrize("split", REFINEMENT_SPLITS)
def test_a_refinement_split_on_a_model_without_cycle_outputs_is_refused_when_built(
    split: str,
) -> None:
    message = rf"the {split} split reads the refinement losses.*act_mode 'none' or intermediate"
    for act_mode in ("act", "fixed"):
        with pytest.raises(ValueError, match=message):
            _config(split, act_mode=act_mode)
    accepted = _config(split, act_mode="none")
    with pytest.raises(ValueError, match=message):
        attrs.evolve(accepted, model=attrs.evolve(accepted.model, act_mode="act"))
    values = accepted.to_dict()
    values["model"]["act_mode"] = "act"
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(values)


@pytest.mark.parametrize("split", REFINEMENT_SPLITS)
def test_a_refinement_split_runs_on_every_model_that_reads_the_cycles_out(split: str) -> None:
    assert _config(split, act_mode="none").model.cycle_outputs
    for act_mode in ("act", "fixed"):
        config = _config(split, act_mode=act_mode, intermediate_outputs=True)
        assert config.model.cycle_outputs and config.model.has_q_head


def test_other_splits_take_any_model() -> None:
    for split in SPLIT_NAMES:
        if split not in REFINEMENT_SPLITS:
            for act_mode in ("act", "fixed", "none"):
                assert _config(split, act_mode=act_mode).objective.split == split


@pytest.mark.parametrize("split", SPLIT_NAMES)
def test_how_a_split_trains_follows_the_split_itself(split: str) -> None:
    objective = ObjectiveConfig(split=split)
    preset = get_split(split)
    assert objective.stacks_supervisions == (preset.supervisions or preset.mean_over_steps)
    # The names say the same for the write-up's presets.
    assert objective.stacks_supervisions == split.startswith("stack_supervisions")
    assert objective.uses_internal_losses == split.startswith("stack_internal")
    assert objective.stacked == split.startswith("stack_")
