"""`trm-train --recipe seed` for every split (the write-up's setup, shrunk to CPU size)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from jd_splits import SPLIT_NAMES
from trm_train import read_metrics, read_run_config
from trm_train.training._cli import main

# The recipe's model shrunk: everything else (dropout, failure weighting, no EMA, the
# no-ACT model for stack_*, w = 1e-4, puzzle rows in the Jacobian) stays the seed's.
SMALL = [
    "--hidden-size", "32", "--num-heads", "2", "--H-cycles", "2", "--L-cycles", "1",
    "--halt-max-steps", "2", "--dtype", "float32", "--batch-size", "4", "--steps", "2",
    "--eval-batch-size", "8",
]  # fmt: skip


@pytest.fixture(scope="module")
def store_path(transform_store: Callable[..., Path]) -> Path:
    return transform_store(
        tasks=3, shape=(2, 2), transform="transpose", seed=4, num_aug=1, held_out=True
    )


@pytest.mark.parametrize("split", SPLIT_NAMES)
def test_the_seed_recipe_trains_and_evaluates_every_split(
    store_path: Path, split: str, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            *("--data", str(store_path), "--recipe", "seed", "--split", split, *SMALL),
            *("--out", str(out), "--wandb", "disabled", "--no-progress"),
        ],
    )
    assert result.exit_code == 0, result.output
    config = read_run_config(out)
    assert config.model.act_mode == ("none" if split.startswith("stack_") else "act")
    assert config.model.dropout == 0.1 and config.data.failure_weighted_sampling
    last = read_metrics(out)[-1]
    assert last["step"] == 2 and math.isfinite(last["train/loss"])
    assert "eval/pass@2" in last  # the recipe evaluates at the last step
