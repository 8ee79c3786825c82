"""Two CPU ranks under torchrun (gloo) against one process with the whole batch, and the
device choice and process-group setup (faked CUDA) without ranks."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import torch
import torch.distributed as dist
from click.testing import CliRunner

from trm_train import (
    Distributed,
    init_distributed,
    list_checkpoints,
    load_checkpoint,
    read_metrics,
    read_run_config,
    train,
)
from trm_train._distributed import cuda_device_index
from trm_train.evaluation._eval_cli import main as eval_main
from trm_train.training._build import build_trainer

_TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]

# Runs `trm-train` with test-only hooks: `RECORD_DIR` set, each rank writes there the JD
# diagnostics of its own micro-steps (rank-R.json) and the folders it wrote evaluation
# files to (eval-writes-rank-R.json); `HANG_RANK` set, that rank sleeps through its second
# step; `SKEW_RANK` set, that rank moves one weight by one ulp before each checkpoint;
# `TIMEOUT_S` set, the collectives time out after it (the CLI has no option).
_HOOKED_CLI = """
import json, os, time
from pathlib import Path

import torch

import trm_train.training._cli as cli
import trm_train.evaluation._evaluate as evaluate
import trm_train.training._loop as loop
import trm_train.training._step as step

rank = int(os.environ.get("RANK", "0"))
micro_step = step._micro_step
write_eval_files = evaluate.write_eval_files
save = loop._save
seen = []
eval_writes = []


def hooked_write_eval_files(result, store, out_dir, **kwargs):
    eval_writes.append(Path(out_dir).name)
    return write_eval_files(result, store, out_dir, **kwargs)


def hooked_save(trainer, run_dir):
    if os.environ.get("SKEW_RANK") == str(rank):
        weight = trainer.model.lm_head.weight
        with torch.no_grad():
            weight.view(-1)[0] = torch.nextafter(weight.view(-1)[0], torch.tensor(float("inf")))
    return save(trainer, run_dir)


evaluate.write_eval_files = hooked_write_eval_files
loop._save = hooked_save


def hooked(trainer, *args, **kwargs):
    if os.environ.get("HANG_RANK") == str(rank) and trainer.step == 1:
        Path(os.environ["HANG_STARTED"]).write_text(str(time.time()))
        time.sleep(3600)
    result = micro_step(trainer, *args, **kwargs)
    seen.append(result[2].as_dict())
    return result


step._micro_step = hooked
if "TIMEOUT_S" in os.environ:
    init = cli.init_distributed
    cli.init_distributed = lambda device, timeout_s: init(
        device, timeout_s=float(os.environ["TIMEOUT_S"])
    )
try:
    cli.main()
finally:
    if "RECORD_DIR" in os.environ:
        Path(os.environ["RECORD_DIR"], f"rank-{rank}.json").write_text(json.dumps(seen))
        writes = Path(os.environ["RECORD_DIR"], f"eval-writes-rank-{rank}.json")
        writes.write_text(json.dumps(eval_writes))
"""


@pytest.fixture(scope="module")
def store_path(transform_store: Callable[..., Path]) -> Path:
    return transform_store(
        tasks=6, shape=(3, 4), transform="flip", seed=1, num_aug=3, held_out=False
    )


def _train(
    store: Path,
    out: Path,
    split: str,
    ranks: int,
    *,
    steps: int = 2,
    extra: Sequence[str] = (),
    script: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Train `steps` steps with `trm-train`, or with `script` (which takes its arguments),
    and the `extra` options."""
    args = [
        "--data",
        str(store),
        "--split",
        split,
        "--steps",
        str(steps),
        "--batch-size",
        "8",
        "--hidden-size",
        "32",
        "--halt-max-steps",
        "2",
        "--out",
        str(out),
        *extra,
    ]
    return _launch(args, ranks, script=script, env=env, timeout=timeout, check=check)


def _resume(run: Path, ranks: int, *, steps: int) -> subprocess.CompletedProcess[str]:
    """Resume the run in `run` with `trm-train --resume` up to `steps` steps."""
    return _launch(["--resume", str(run), "--steps", str(steps)], ranks)


def _launch(
    args: list[str],
    ranks: int,
    *,
    script: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    program = ["-m", "trm_train"] if script is None else [str(script)]
    launcher = [sys.executable]
    if ranks > 1:
        launcher = [*_TORCHRUN, f"--nproc-per-node={ranks}"]
    common = ["--device", "cpu", "--wandb", "disabled", "--no-progress"]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    result = subprocess.run(
        [*launcher, *program, *args, *common],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def held_out_store(transform_store: Callable[..., Path]) -> Path:
    return transform_store(
        tasks=6, shape=(3, 4), transform="flip", seed=1, num_aug=3, held_out=True
    )


@attrs.frozen
class SumRuns:
    """`sum` trained 2 steps with an evaluation each step, in one process (`one`) and on
    two ranks (`two`, through the hooked CLI: its records are in `records`)."""

    one: Path
    two: Path
    records: Path


@pytest.fixture(scope="module")
def sum_runs(held_out_store: Path, tmp_path_factory: pytest.TempPathFactory) -> SumRuns:
    # One pair of runs serves the equality and the evaluation tests: each rank launch costs
    # seconds of imports on a 2-core machine.
    root = tmp_path_factory.mktemp("sum-runs")
    runs = SumRuns(root / "one", root / "two", root / "records")
    runs.records.mkdir()
    script = root / "hooked_cli.py"
    script.write_text(_HOOKED_CLI)
    evaluate = ["--eval-every", "1"]
    _train(held_out_store, runs.one, "sum", ranks=1, extra=evaluate)
    env = {"RECORD_DIR": str(runs.records)}
    _train(held_out_store, runs.two, "sum", ranks=2, extra=evaluate, script=script, env=env)
    return runs


@pytest.mark.slow
def test_sum_on_two_ranks_equals_one_process_with_the_whole_batch(sum_runs: SumRuns) -> None:
    one, two = load_checkpoint(sum_runs.one)[1], load_checkpoint(sum_runs.two)[1]
    # The same seed builds the same initial weights. Every parameter and the puzzle table
    # must have moved from them (only the fixed buffers did not), or the runs' agreement
    # below would show nothing.
    model = build_trainer(read_run_config(sum_runs.one), Distributed()).model
    initial = model.state_dict()
    moved = {key for key, value in one["model"].items() if not torch.equal(value, initial[key])}
    assert moved == {name for name, _ in model.named_parameters()} | {"puzzle_emb"}
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert len(two["ranks"]) == 2
    # The ranks' updates are averaged, not summed: the gradient, and so its logged norm, is
    # the one process's over the whole batch.
    runs = (sum_runs.one, sum_runs.two)
    norms = [[m["train/grad_norm"] for m in read_metrics(run)] for run in runs]
    np.testing.assert_allclose(norms[1], norms[0], rtol=1e-4)
    losses = [[m["train/loss"] for m in read_metrics(run)] for run in runs]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


@pytest.mark.slow
def test_evaluation_during_a_two_rank_run_is_written_once_and_equals_trm_eval(
    sum_runs: SumRuns, tmp_path: Path
) -> None:
    run, records = sum_runs.two, sum_runs.records
    # Rank 0 wrote each evaluation's files, rank 1 none.
    writes = [json.loads((records / f"eval-writes-rank-{r}.json").read_text()) for r in range(2)]
    assert writes == [["step-00000001", "step-00000002"], []]
    assert sorted(p.name for p in (run / "eval").iterdir()) == ["step-00000001", "step-00000002"]
    # One row a step, each with its evaluation.
    rows = read_metrics(run)
    assert [m["step"] for m in rows] == [1, 2]
    files = run / "eval" / "step-00000002"
    during = json.loads((files / "metrics.json").read_text())
    assert {k: rows[-1][f"eval/{k}"] for k in during} == during
    # trm-eval of the step-2 checkpoint in this one process: the same scores and submission.
    out = tmp_path / "trm-eval"
    result = CliRunner().invoke(
        eval_main,
        ["--run", str(run), "--out", str(out), "--device", "cpu", "--no-progress"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    alone = json.loads((out / "metrics.json").read_text())
    assert alone == during
    assert alone["num_tasks"] == 6 and alone["num_predictions"] == 6 * 4  # 1 + 3 augmentations
    submissions = [json.loads((f / "submission.json").read_text()) for f in (files, out)]
    assert submissions[0] == submissions[1]


# JD on each rank (iwrm_q_halt_in, UPGrad) with the ACT carry, so that each rank's own
# carry, generators and aggregator state must come back.
_RESUMED_SPLIT = "iwrm_q_halt_in"


@attrs.frozen
class JdRun:
    """`iwrm_q_halt_in` trained 3 steps on two ranks through the hooked CLI: each rank's
    JD diagnostics of each micro-step are in `records`."""

    run: Path
    records: Path


@pytest.fixture(scope="module")
def jd_run(store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> JdRun:
    root = tmp_path_factory.mktemp("jd-run")
    records = root / "records"
    records.mkdir()
    script = root / "hooked_cli.py"
    script.write_text(_HOOKED_CLI)
    env = {"RECORD_DIR": str(records)}
    _train(store_path, root / "run", _RESUMED_SPLIT, ranks=2, steps=3, script=script, env=env)
    return JdRun(root / "run", records)


def _assert_ranks_hold_identical_weights(run: Path) -> None:
    state = load_checkpoint(run)[1]
    digests = [part["weights_digest"] for part in state["ranks"]]
    assert len(digests) == 2 and digests[0] == digests[1]
    # Each rank kept its own generator and ACT carry.
    carries = [part["carry"]["batch"]["puzzle_identifiers"] for part in state["ranks"]]
    assert not torch.equal(carries[0], carries[1])


@pytest.mark.slow
def test_ranks_hold_identical_weights_after_per_sample_jd_steps(jd_run: JdRun) -> None:
    _assert_ranks_hold_identical_weights(jd_run.run)


@pytest.mark.slow
def test_ranks_hold_identical_weights_after_two_objective_jd_steps(
    store_path: Path, tmp_path: Path
) -> None:
    _train(store_path, tmp_path / "two", "lm_loss_vs_q_halt_loss", ranks=2)
    _assert_ranks_hold_identical_weights(tmp_path / "two")


@pytest.mark.slow
def test_logged_jd_diagnostics_are_the_mean_over_ranks(jd_run: JdRun) -> None:
    per_rank = [json.loads((jd_run.records / f"rank-{r}.json").read_text()) for r in range(2)]
    logged = read_metrics(jd_run.run)
    assert [len(p) for p in per_rank] == [3, 3] and len(logged) == 3  # one micro-step a step
    differ = set()
    for step, row in enumerate(logged):
        ranks = [p[step] for p in per_rank]
        for key, value in ranks[0].items():
            if isinstance(value, str):
                assert row[key] == value
                continue
            figures = [float(r[key]) for r in ranks]
            if figures[0] != figures[1]:
                differ.add(key)
            np.testing.assert_allclose(float(row[key]), np.mean(figures), rtol=1e-12, err_msg=key)
    # Each rank's own data gave its own figures (else the mean would be rank 0's).
    assert {"jd/gramian_mean", "jd/seconds"} <= differ, differ


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_hung_rank_makes_the_others_exit_non_zero_within_the_timeout(
    store_path: Path, tmp_path: Path
) -> None:
    script = tmp_path / "hooked_cli.py"
    script.write_text(_HOOKED_CLI)
    started = tmp_path / "hang-started"
    timeout_s = 5.0
    env = {"HANG_RANK": "1", "HANG_STARTED": str(started), "TIMEOUT_S": str(timeout_s)}
    # A closed peer is noticed at once (previous test); one that hangs only by the timeout.
    result = _train(
        store_path, tmp_path / "run", "sum", ranks=2, script=script, env=env, check=False
    )
    waited = time.time() - float(started.read_text())
    assert result.returncode != 0
    # Rank 0 timed out in step 2's collective, and says so; leaving the broken group must
    # not bury that under a second error.
    assert "Error: training step 2 failed" in result.stderr, result.stderr[-3000:]
    assert "Timed out" in result.stderr, result.stderr[-3000:]
    assert "another exception occurred" not in result.stderr, result.stderr[-3000:]
    # The timeout ended the job, not the hour-long sleep (the slack: rank 0's start of the
    # step, its exit and torchrun's on a loaded 2-core machine).
    assert timeout_s <= waited < timeout_s + 30


@pytest.fixture(scope="module")
def two_rank_run_at_step_1(store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-rank run stopped after step 1 (copy it before resuming). Not after step 2:
    with at most 2 supervision steps every slot has halted by then, and the next step
    would refill the whole carry, so a resume that lost the carry would go unnoticed."""
    run = tmp_path_factory.mktemp("two-ranks") / "run"
    _train(store_path, run, _RESUMED_SPLIT, ranks=2, steps=1)
    for part in load_checkpoint(run)[1]["ranks"]:
        assert not part["carry"]["halted"].any()  # each rank's samples are mid-way
    return run


@pytest.mark.slow
def test_a_two_rank_run_resumed_on_two_ranks_is_bit_exact(
    jd_run: JdRun,
    two_rank_run_at_step_1: Path,
    tmp_path: Path,
    assert_bit_equal: Callable[..., None],
) -> None:
    # The straight run went through the hooked CLI, whose hooks only record.
    shutil.copytree(two_rank_run_at_step_1, tmp_path / "resumed")
    _resume(tmp_path / "resumed", ranks=2, steps=3)
    straight_step, straight = load_checkpoint(jd_run.run)
    resumed_step, resumed = load_checkpoint(tmp_path / "resumed")
    assert straight_step == resumed_step == 3
    for key in ("model", "optimizer", "scheduler", "ema", "sampler"):
        assert_bit_equal(straight[key], resumed[key], key)
    # Each rank's generators, carry and aggregator state, and the weights' digest.
    assert len(resumed["ranks"]) == 2
    assert_bit_equal(straight["ranks"], resumed["ranks"], "ranks")
    # The two parts of the resumed run logged the uninterrupted run's figures.
    logged = [read_metrics(run) for run in (jd_run.run, tmp_path / "resumed")]
    assert [[m["step"] for m in rows] for rows in logged] == [[1, 2, 3]] * 2
    for key in ("train/loss", "train/grad_norm", "jd/gramian_mean"):
        assert [m[key] for m in logged[1]] == [m[key] for m in logged[0]], key


@pytest.mark.slow
def test_a_two_rank_checkpoint_resumed_on_one_rank_warns_and_trains_on(
    two_rank_run_at_step_1: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(two_rank_run_at_step_1, run)
    before = load_checkpoint(run)[1]
    config = read_run_config(run)
    config = attrs.evolve(config, loop=attrs.evolve(config.loop, steps=3))
    warning = (
        "the checkpoint was written by 2 ranks, this run has 1: the ACT carry and the random "
        "generators restart, so the run is not bit-exact"
    )
    with pytest.warns(UserWarning, match=re.escape(warning)):
        summary = train(config, run, Distributed(), resume=True, progress=False)
    assert summary.steps == 3
    assert [step for step, _ in list_checkpoints(run)] == [1, 3]
    after = load_checkpoint(run)[1]
    assert after["step"] == 3 and len(after["ranks"]) == 1
    # It went on from the checkpoint: the optimizer counted 3 steps, and steps 2 and 3
    # moved the weights.
    assert {int(s["step"]) for s in after["optimizer"]["state"].values()} == {3}
    assert not torch.equal(after["model"]["lm_head.weight"], before["model"]["lm_head.weight"])
    rows = read_metrics(run)
    assert [m["step"] for m in rows] == [1, 2, 3]
    assert all(np.isfinite(m["train/loss"]) for m in rows)
    # One rank now takes the whole global batch of 8 (each of the two took 4).
    assert [m["jd/num_objectives"] for m in rows] == [4, 8, 8]


@pytest.mark.slow
def test_a_checkpoint_is_refused_when_the_ranks_weights_differ(
    store_path: Path, tmp_path: Path
) -> None:
    script = tmp_path / "hooked_cli.py"
    script.write_text(_HOOKED_CLI)
    run = tmp_path / "run"
    result = _train(
        store_path, run, "sum", ranks=2, script=script, env={"SKEW_RANK": "1"}, check=False
    )
    assert result.returncode != 0
    # One ulp of one weight on one rank is enough.
    assert (
        "Error: the ranks' weights differ at step 2 (a bug, or a nondeterministic kernel); "
        "not saving. No checkpoint was written before." in result.stderr
    ), result.stderr[-3000:]
    assert list_checkpoints(run) == []
    assert [m["step"] for m in read_metrics(run)] == [1, 2]


@pytest.mark.parametrize(
    ("local_rank", "device_count", "index"),
    [
        (0, 4, 0),
        (3, 4, 3),  # torchrun on a node whose GPUs every rank sees
        (1, 1, 0),  # one GPU per process (CUDA_VISIBLE_DEVICES): it is device 0
        (3, 1, 0),
        (5, 4, 1),  # fewer GPUs than ranks: shared in turn
    ],
)
def test_each_rank_gets_a_gpu_it_can_see(local_rank: int, device_count: int, index: int) -> None:
    assert cuda_device_index(local_rank, device_count) == index


def test_no_visible_gpu_is_an_error() -> None:
    with pytest.raises(ValueError, match="no GPU is visible"):
        cuda_device_index(0, 0)


def test_the_cuda_process_group_is_bound_to_the_ranks_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Rank 1 of a job whose scheduler shows each process one GPU (faked: no CUDA here).
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    current: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: calls.append(kwargs))
    runtime = init_distributed("cuda", timeout_s=5.0)
    assert runtime.device == torch.device("cuda", 0)
    assert current == [torch.device("cuda", 0)]
    assert len(calls) == 1
    assert calls[0]["backend"] == "nccl"
    assert calls[0]["device_id"] == torch.device("cuda", 0)
