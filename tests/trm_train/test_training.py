"""The training loop on a tiny model: every split, resume, pruning, the rate schedule,
evaluation without EMA, compile, NaN stop, logging, refusal."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import arc_data
from jd_splits import SPLIT_NAMES
from trm_train import (
    AdamATan2,
    Distributed,
    LoggingConfig,
    TrainConfig,
    TrainingError,
    list_checkpoints,
    load_checkpoint,
    read_metrics,
    tiny,
    train,
)
from trm_train.evaluation._eval_cli import main as eval_main
from trm_train.training._build import build_trainer
from trm_train.training._loop import _resume

CPU = Distributed()


@pytest.fixture(scope="module")
def store_path(transform_store: Callable[..., Path]) -> Path:
    return transform_store(
        tasks=12, shape=(3, 3), transform="mirror", seed=0, num_aug=1, held_out=True
    )


def small_config(store: Path, split: str = "sum", **loop: Any) -> TrainConfig:
    meta = arc_data.open_store(store).metadata
    config = tiny(meta.num_puzzle_identifiers, meta.seq_len, store, split)
    model = attrs.evolve(config.model, hidden_size=32, halt_max_steps=2)
    return attrs.evolve(
        config,
        model=model,
        data=attrs.evolve(config.data, global_batch_size=4),
        loop=attrs.evolve(config.loop, **{"steps": 3, "checkpoint_every": 100, **loop}),
        logging=LoggingConfig(wandb="disabled"),
    )


def final_state(run_dir: Path) -> dict[str, Any]:
    return load_checkpoint(run_dir)[1]


@pytest.mark.parametrize("split", SPLIT_NAMES)
def test_every_split_trains_three_steps_and_moves_the_weights(
    store_path: Path, split: str, tmp_path: Path
) -> None:
    config = small_config(store_path, split, steps=3)
    initial = {k: v.clone() for k, v in _fresh_model_state(config).items() if k != "puzzle_emb"}
    summary = train(config, tmp_path / "run", CPU, progress=False)
    assert summary.steps == 3
    state = final_state(tmp_path / "run")
    assert state["step"] == 3
    moved = [k for k, v in initial.items() if not torch.equal(v, state["model"][k])]
    # H_init, L_init (and output_logits_init of the no-ACT model) stay fixed.
    fixed = 3 if split.startswith("stack_") else 2
    assert "lm_head.weight" in moved and len(moved) >= len(initial) - fixed
    assert state["model"]["puzzle_emb"].abs().sum() > 0
    metrics = read_metrics(tmp_path / "run")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all(np.isfinite(m["train/loss"]) for m in metrics)
    objectives = metrics[-1]["jd/num_objectives"]
    expected = {
        "sum": 1,
        "stack_internal_and_sum": 1,
        "stack_supervisions_and_sum": 1,
        "lm_loss_vs_q_halt_loss": 2,
        "iwrm_q_halt_in": 4,
        "stack_supervisions": 2,
        "stack_internal_losses": 3,
        "stack_internal_losses_only": 2,
    }
    if split in expected:
        assert objectives == expected[split]


def _fresh_model_state(config: TrainConfig) -> dict[str, torch.Tensor]:
    return build_trainer(config, CPU).model.state_dict()


def _weights_equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("split", ["sum", "iwrm_q_halt_in"])
def test_resume_after_a_kill_is_bit_exact(
    store_path: Path, tmp_path: Path, split: str, assert_bit_equal: Callable[..., None]
) -> None:
    config = small_config(store_path, split, steps=6, checkpoint_every=3, keep_checkpoints=5)
    config = attrs.evolve(config, data=attrs.evolve(config.data, failure_weighted_sampling=True))
    train(config, tmp_path / "straight", CPU, progress=False)
    train(config, tmp_path / "killed", CPU, progress=False)
    # A kill between step 3's checkpoint and the end: only step 3 remains.
    for step, path in list_checkpoints(tmp_path / "killed"):
        if step > 3:
            path.unlink()
    train(config, tmp_path / "killed", CPU, resume=True, progress=False)
    straight, resumed = final_state(tmp_path / "straight"), final_state(tmp_path / "killed")
    _weights_equal(straight, resumed)
    # Steps 4-6 of the killed run were logged twice; the resume keeps each step once.
    assert [m["step"] for m in read_metrics(tmp_path / "killed")] == [1, 2, 3, 4, 5, 6]
    for key in ("optimizer", "scheduler", "ema", "sampler", "failure_weights"):
        assert_bit_equal(straight.get(key), resumed.get(key), key)
    # Each rank's generators, carry and aggregator state, less the weights' digest.
    assert_bit_equal(straight["ranks"], resumed["ranks"], "ranks")


@pytest.mark.parametrize("aggregator", ["gradvac", "excess_mtl", "pcd"])
def test_a_stateful_aggregator_resumes_bit_exactly(
    store_path: Path, tmp_path: Path, aggregator: str, assert_bit_equal: Callable[..., None]
) -> None:
    config = small_config(store_path, "iwrm_q_halt_in", steps=4, checkpoint_every=2)
    config = attrs.evolve(config, objective=attrs.evolve(config.objective, aggregator=aggregator))
    train(config, tmp_path / "straight", CPU, progress=False)
    # A kill after step 2's checkpoint: a copy of the run without the later one.
    shutil.copytree(tmp_path / "straight", tmp_path / "killed")
    (tmp_path / "killed" / "checkpoints" / "step-00000004.pt").unlink()
    saved = load_checkpoint(tmp_path / "killed")[1]["ranks"][0]
    assert saved["aggregator"], "the aggregator should have state after two steps"

    trainer = build_trainer(config, CPU, resume=True)
    assert _resume(trainer, tmp_path / "killed") == 2
    # Restored bit for bit, and kept: the next step must not start the state over.
    assert_bit_equal(dict(trainer.jd.aggregator.state_dict()), dict(saved["aggregator"]))

    train(config, tmp_path / "killed", CPU, resume=True, progress=False)
    straight, resumed = final_state(tmp_path / "straight"), final_state(tmp_path / "killed")
    _weights_equal(straight, resumed)
    assert_bit_equal(straight["ranks"], resumed["ranks"], "ranks")


def test_resume_extends_a_finished_run_exactly(store_path: Path, tmp_path: Path) -> None:
    long = small_config(store_path, steps=4)
    train(long, tmp_path / "long", CPU, progress=False)
    train(
        attrs.evolve(long, loop=attrs.evolve(long.loop, steps=2)),
        tmp_path / "short",
        CPU,
        progress=False,
    )
    train(long, tmp_path / "short", CPU, resume=True, progress=False)
    _weights_equal(final_state(tmp_path / "long"), final_state(tmp_path / "short"))
    assert [m["step"] for m in read_metrics(tmp_path / "short")] == [1, 2, 3, 4]


def test_a_new_run_refuses_a_directory_holding_one(store_path: Path, tmp_path: Path) -> None:
    config = small_config(store_path, steps=1)
    train(config, tmp_path / "run", CPU, progress=False)
    with pytest.raises(TrainingError, match="already holds a run"):
        train(config, tmp_path / "run", CPU, progress=False)


def test_resume_refuses_a_store_of_another_shape(
    store_path: Path, tmp_path: Path, transform_store: Callable[..., Path]
) -> None:
    config = small_config(store_path, steps=1)
    train(config, tmp_path / "run", CPU, progress=False)
    other = transform_store(
        tasks=12, shape=(3, 3), transform="mirror", seed=0, num_aug=2, held_out=True
    )
    moved = attrs.evolve(config, data=attrs.evolve(config.data, store=other))
    with pytest.raises(ValueError, match="has 37 puzzle identifiers, the model was built for 25"):
        train(moved, tmp_path / "run", CPU, resume=True, progress=False)


def test_non_finite_weights_stop_the_run_and_keep_the_last_good_checkpoint(
    store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = AdamATan2.step
    calls = []

    def corrupting_step(self: AdamATan2, closure: Any = None) -> Any:
        result = original(self, closure)
        calls.append(1)
        if len(calls) == 3:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("nan"))
        return result

    monkeypatch.setattr(AdamATan2, "step", corrupting_step)
    config = small_config(store_path, steps=6, checkpoint_every=1, keep_checkpoints=10)
    with pytest.raises(TrainingError, match="non-finite at step 3") as raised:
        train(config, tmp_path / "run", CPU, progress=False)
    kept = list_checkpoints(tmp_path / "run")
    assert [step for step, _ in kept] == [1, 2]
    assert str(kept[-1][1]) in str(raised.value)
    assert len(read_metrics(tmp_path / "run")) == 2
    state = load_checkpoint(tmp_path / "run")[1]
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_non_finite_loss_is_caught_before_the_update(
    store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = small_config(store_path, steps=4, checkpoint_every=1)
    train(
        attrs.evolve(config, loop=attrs.evolve(config.loop, steps=1)),
        tmp_path / "run",
        CPU,
        progress=False,
    )
    state = load_checkpoint(tmp_path / "run")[1]
    state["model"]["lm_head.weight"].fill_(float("inf"))  # logits inf - inf: a NaN loss
    torch.save(state, list_checkpoints(tmp_path / "run")[-1][1])
    with pytest.raises(TrainingError, match="loss of step 2 is nan"):
        train(config, tmp_path / "run", CPU, resume=True, progress=False)


def test_wandb_offline_writes_its_directory_and_disabled_writes_nothing(
    store_path: Path, tmp_path: Path
) -> None:
    config = small_config(store_path, steps=1)
    offline = attrs.evolve(config, logging=LoggingConfig(wandb="offline"))
    train(offline, tmp_path / "offline", CPU, progress=False)
    runs = list((tmp_path / "offline" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    train(config, tmp_path / "disabled", CPU, progress=False)
    written = {p.name for p in (tmp_path / "disabled").iterdir()}
    assert written == {"checkpoints", "config.json", "metrics.jsonl"}


def test_wandb_failure_warns_and_training_goes_on(
    store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    def broken_init(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "init", broken_init)
    config = attrs.evolve(small_config(store_path, steps=2), logging=LoggingConfig(wandb="online"))
    with pytest.warns(UserWarning, match="W&B could not start"):
        train(config, tmp_path / "run", CPU, progress=False)
    assert len(read_metrics(tmp_path / "run")) == 2


def test_evaluation_during_training_logs_pass_at_k(store_path: Path, tmp_path: Path) -> None:
    config = small_config(store_path, steps=2, eval_every=2)
    summary = train(config, tmp_path / "run", CPU, progress=False)
    # pass@2 recomputed from the written submission (two attempts per test input) against
    # the outputs of the held-out tasks: the share of inputs solved, averaged over tasks.
    submission = json.loads(
        (tmp_path / "run" / "eval" / "step-00000002" / "submission.json").read_text()
    )
    per_task = [
        np.mean(
            [
                pair.output is not None
                and any(
                    np.array_equal(attempts[k], pair.output) for k in ("attempt_1", "attempt_2")
                )
                for attempts, pair in zip(submission[task_id], task.test, strict=True)
            ]
        )
        for task_id, task in arc_data.open_store(store_path).test_tasks.items()
    ]
    assert summary.eval_metrics["eval/pass@2"] == pytest.approx(np.mean(per_task))
    assert summary.eval_metrics["eval/num_tasks"] == 12
    assert read_metrics(tmp_path / "run")[-1]["eval/pass@1"] == summary.eval_metrics["eval/pass@1"]
    assert summary.eval_metrics["eval/seconds"] > 0.0
    assert (tmp_path / "run" / "eval" / "step-00000002" / "submission.json").is_file()


def test_freeze_weights_trains_the_puzzle_embeddings_only(store_path: Path, tmp_path: Path) -> None:
    config = small_config(store_path, "iwrm_q_halt_in", steps=2)
    config = attrs.evolve(config, optim=attrs.evolve(config.optim, freeze_weights=True))
    initial = _fresh_model_state(config)
    train(config, tmp_path / "run", CPU, progress=False)
    state = final_state(tmp_path / "run")
    for key, value in initial.items():
        if key != "puzzle_emb":
            assert torch.equal(value, state["model"][key]), key
    assert not torch.equal(initial["puzzle_emb"], state["model"]["puzzle_emb"])


def test_compile_refuses_the_autogram_engine(store_path: Path, tmp_path: Path) -> None:
    """autogram runs the backward under vmap, which compiled regions refuse: refused when
    the run is built, before anything compiles."""
    config = small_config(store_path, "iwrm_q_halt_in", steps=1, compile=True)
    config = attrs.evolve(config, objective=attrs.evolve(config.objective, engine="autogram"))
    with pytest.raises(ValueError, match="--compile cannot run the autogram engine"):
        train(config, tmp_path / "run", CPU, progress=False)


def test_only_the_last_keep_checkpoints_remain(store_path: Path, tmp_path: Path) -> None:
    config = small_config(store_path, steps=7, checkpoint_every=2, keep_checkpoints=3)
    train(config, tmp_path / "run", CPU, progress=False)
    # Written at 2, 4, 6 and the last step, 7; the oldest one pruned.
    assert [step for step, _ in list_checkpoints(tmp_path / "run")] == [4, 6, 7]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "step-00000004.pt",
        "step-00000006.pt",
        "step-00000007.pt",
    ]
    # A resume prunes by the same rule: 8 is added and 4 goes.
    longer = attrs.evolve(config, loop=attrs.evolve(config.loop, steps=8))
    train(longer, tmp_path / "run", CPU, resume=True, progress=False)
    assert [step for step, _ in list_checkpoints(tmp_path / "run")] == [6, 7, 8]


def test_the_logged_rate_follows_warmup_then_cosine_to_the_min_ratio(
    store_path: Path, tmp_path: Path
) -> None:
    config = small_config(store_path, steps=6)
    config = attrs.evolve(
        config, optim=attrs.evolve(config.optim, lr=1e-3, warmup_steps=2, lr_min_ratio=0.1)
    )
    train(config, tmp_path / "run", CPU, progress=False)
    logged = [m["train/lr"] for m in read_metrics(tmp_path / "run")]
    # Step i (1-based) uses lr x i / 2 while warming up, then lr x (0.1 + 0.9 x (1 +
    # cos(pi (i - 2) / 4)) / 2) down to 0.1 lr at the last step, by hand:
    expected = [
        0.5e-3,  # 1 / 2
        1.0e-3,  # 2 / 2: warm-up done, cos(0) = 1
        0.868198052e-3,  # 0.1 + 0.45 x (1 + cos(pi / 4)) = 0.1 + 0.45 x 1.70710678
        0.55e-3,  # 0.1 + 0.45 x (1 + cos(pi / 2))
        0.231801948e-3,  # 0.1 + 0.45 x (1 - 0.70710678)
        0.1e-3,  # cos(pi) = -1: the minimum
    ]
    np.testing.assert_allclose(logged, expected, rtol=1e-8)


def test_without_ema_the_evaluation_uses_the_raw_weights(store_path: Path, tmp_path: Path) -> None:
    config = small_config(store_path, steps=2, eval_every=2)
    no_ema = attrs.evolve(config, optim=attrs.evolve(config.optim, ema=False))
    train(no_ema, tmp_path / "raw", CPU, progress=False)
    train(config, tmp_path / "ema", CPU, progress=False)
    raw_state, ema_state = final_state(tmp_path / "raw"), final_state(tmp_path / "ema")
    assert raw_state["ema"] is None
    assert ema_state["ema"] is not None
    # The EMA does not change the training: both runs hold the same raw weights.
    _weights_equal(raw_state, ema_state)

    def files(folder: Path) -> dict[str, Any]:
        return {
            name: json.loads((folder / name).read_text())
            for name in ("submission.json", "tasks.json", "metrics.json")
        }

    evaluated = tmp_path / "trm-eval"
    result = CliRunner().invoke(
        eval_main,
        ["--run", str(tmp_path / "ema"), "--no-ema", "--out", str(evaluated), "--device", "cpu"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    during = files(tmp_path / "raw" / "eval" / "step-00000002")
    # The run's own evaluation is trm-eval of the raw weights (to the candidates'
    # confidences, which tell even slightly different weights apart)...
    assert during == files(evaluated)
    # ...and not that of the EMA weights, which the other run evaluated.
    with_ema = files(tmp_path / "ema" / "eval" / "step-00000002")
    assert with_ema["tasks.json"] != during["tasks.json"]


def _compile_works() -> bool:
    """Whether torch.compile runs here (it needs a working backend and C++ compiler)."""
    try:
        return bool(torch.compile(lambda x: x + 1)(torch.zeros(1)).item() == 1.0)
    except Exception:  # any failure means: not on this platform
        return False


@pytest.mark.slow
def test_a_compiled_run_gives_the_eager_losses(store_path: Path, tmp_path: Path) -> None:
    """IWRM: the per_sample engine hooks the linear layers, which stay eager between the
    compiled regions; its JD updates match the eager run's."""
    if not _compile_works():
        pytest.skip("torch.compile does not work on this platform")
    eager = small_config(store_path, "iwrm_q_halt_in", steps=2)
    compiled = attrs.evolve(eager, loop=attrs.evolve(eager.loop, compile=True))
    train(eager, tmp_path / "eager", CPU, progress=False)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    train(compiled, tmp_path / "compiled", CPU, progress=False)
    # The run went through the compiler (a graph was captured), not the eager model.
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    runs = [read_metrics(tmp_path / run) for run in ("eager", "compiled")]
    assert [len(metrics) for metrics in runs] == [2, 2]
    assert {m["jd/engine"] for metrics in runs for m in metrics} == {"per_sample"}
    for key in ("train/loss", "train/lm_loss", "train/halt_loss", "train/grad_norm"):
        values = [[m[key] for m in metrics] for metrics in runs]
        # Fused kernels round differently: equal to float32 tolerance, not bit for bit.
        np.testing.assert_allclose(values[1], values[0], rtol=1e-4, err_msg=key)
    for key in ("jd/cosine_to_mean", "jd/gramian_mean"):
        values = [[m[key] for m in metrics] for metrics in runs]
        np.testing.assert_allclose(values[1], values[0], rtol=1e-4, err_msg=key)
    # Both runs moved their weights the same way (step 2's loss depends on step 1's update).
    eager_state, compiled_state = (
        final_state(tmp_path / "eager"),
        final_state(tmp_path / "compiled"),
    )
    for key, value in eager_state["model"].items():
        torch.testing.assert_close(compiled_state["model"][key], value, rtol=1e-3, atol=1e-5)
