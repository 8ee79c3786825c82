"""Two CPU ranks under torchrun (gloo) against one process with the whole batch."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from trm_train import load_checkpoint, read_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store_path(transform_store: Callable[..., Path]) -> Path:
    return transform_store(
        tasks=6, shape=(3, 4), transform="flip", seed=1, num_aug=3, held_out=False
    )


def _train(store: Path, out: Path, split: str, ranks: int) -> None:
    launcher = [sys.executable, "-m", "trm_train"]
    if ranks > 1:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={ranks}",
            "-m",
            "trm_train",
        ]
    args = [
        "--data",
        str(store),
        "--split",
        split,
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--hidden-size",
        "32",
        "--halt-max-steps",
        "2",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--wandb",
        "disabled",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*launcher, *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_sum_on_two_ranks_equals_one_process_with_the_whole_batch(
    store_path: Path, tmp_path: Path
) -> None:
    _train(store_path, tmp_path / "one", "sum", ranks=1)
    _train(store_path, tmp_path / "two", "sum", ranks=2)
    one, two = load_checkpoint(tmp_path / "one")[1], load_checkpoint(tmp_path / "two")[1]
    initial_moved = False
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
        initial_moved |= key == "lm_head.weight"
    assert initial_moved
    assert len(two["ranks"]) == 2
    # AdamATan2 ignores the gradient's scale; the logged norm does not (summed ranks: 2x).
    norms = [[m["train/grad_norm"] for m in read_metrics(tmp_path / run)] for run in ("one", "two")]
    np.testing.assert_allclose(norms[1], norms[0], rtol=1e-4)
    losses = [[m["train/loss"] for m in read_metrics(tmp_path / run)] for run in ("one", "two")]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


@pytest.mark.parametrize("split", ["iwrm_q_halt_in", "lm_loss_vs_q_halt_loss"])
def test_ranks_hold_identical_weights_after_jd_steps(
    store_path: Path, tmp_path: Path, split: str
) -> None:
    _train(store_path, tmp_path / "two", split, ranks=2)
    state = load_checkpoint(tmp_path / "two")[1]
    digests = [part["weights_digest"] for part in state["ranks"]]
    assert len(digests) == 2 and digests[0] == digests[1]
    # Each rank kept its own generator and ACT carry.
    carries = [part["carry"]["batch"]["puzzle_identifiers"] for part in state["ranks"]]
    assert not torch.equal(carries[0], carries[1])


def test_a_failed_rank_makes_the_job_exit_non_zero_instead_of_hanging(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        "import sys, torch\n"
        "from trm_train import init_distributed\n"
        "from trm_train._distributed import all_reduce_sum\n"
        "runtime = init_distributed('cpu', timeout_s=20)\n"
        "if runtime.rank == 1:\n"
        "    sys.exit(3)\n"
        "all_reduce_sum(torch.ones(1), runtime)  # waits for rank 1, which is gone\n"
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        str(script),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
