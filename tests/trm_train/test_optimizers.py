"""The weights' optimizer by name, and the CLI options that set the optimization."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from trm_train import AdamATan2, read_run_config
from trm_train.training._cli import main
from trm_train.training._optimizers import make_optimizer

CPU = torch.device("cpu")


def _steps(name: str, grads: list[float], **options: float) -> list[float]:
    parameter = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = make_optimizer(
        name,  # type: ignore[arg-type]
        [parameter],
        lr=options.get("lr", 0.1),
        betas=(0.9, 0.95),
        weight_decay=options.get("weight_decay", 0.0),
        momentum=options.get("momentum", 0.0),
        device=CPU,
    )
    values = []
    for grad in grads:
        parameter.grad = torch.tensor([grad])
        optimizer.step()
        values.append(float(parameter))
    return values


def test_sgd_with_momentum_follows_the_hand_computed_steps() -> None:
    # v1 = 2, p1 = 1 - 0.1 * 2; v2 = 0.5 * 2 + 4 = 5, p2 = 0.8 - 0.1 * 5.
    assert _steps("sgd", [2.0, 4.0], momentum=0.5) == pytest.approx([0.8, 0.3])
    # Coupled L2: the gradient becomes g + wd * p = 2 + 0.5.
    assert _steps("sgd", [2.0], weight_decay=0.5) == pytest.approx([0.75])


def test_adamw_first_step_is_lr_times_the_sign() -> None:
    # Bias-corrected m / sqrt(v) = g / |g| at the first step; decay p * (1 - lr * wd) first.
    assert _steps("adamw", [3.0], weight_decay=0.5) == pytest.approx([0.95 - 0.1], abs=1e-6)


def test_adam_atan2_is_the_default_optimizer() -> None:
    optimizer = make_optimizer(
        "adam_atan2",
        [torch.nn.Parameter(torch.zeros(1))],
        lr=0.1,
        betas=(0.9, 0.95),
        weight_decay=0.0,
        momentum=0.0,
        device=CPU,
    )
    assert isinstance(optimizer, AdamATan2)
    # First step: (lr / bc1) * atan2(m, sqrt(v) / sqrt(bc2)) with bc1 = 0.1, m = 0.3,
    # sqrt(v) / sqrt(bc2) = sqrt(0.45) / sqrt(0.05) = 3 (bc1 stays outside the atan2).
    assert _steps("adam_atan2", [3.0]) == pytest.approx([1.0 - math.atan2(0.3, 3.0)])


def test_the_cli_sets_every_optimization_option(
    transform_store: Callable[..., Path], tmp_path: Path
) -> None:
    store = transform_store(
        tasks=4, shape=(2, 3), transform="transpose", seed=2, num_aug=2, held_out=True
    )
    options = [
        *("--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.05", "--weight-decay", "0"),
        *("--warmup-steps", "0", "--lr-min-ratio", "0.5", "--puzzle-emb-lr", "0.3"),
    ]
    result = CliRunner().invoke(
        main,
        [
            *("--data", str(store), *options, "--steps", "1", "--batch-size", "4"),
            *("--out", str(tmp_path / "run"), "--wandb", "disabled", "--no-progress"),
        ],
    )
    assert result.exit_code == 0, result.output
    optim = read_run_config(tmp_path / "run").optim
    assert (optim.optimizer, optim.momentum, optim.lr, optim.weight_decay) == ("sgd", 0.9, 0.05, 0)
    assert (optim.warmup_steps, optim.lr_min_ratio, optim.puzzle_emb_lr) == (0, 0.5, 0.3)
