"""`trm-train` from the command line: help, bad input (exit 2), a short run, resume."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torchjd.aggregation import GramianWeightedAggregator, MGDAWeighting

import arc_data
from jd_splits import SPLIT_NAMES
from trm_train import (
    Distributed,
    list_checkpoints,
    load_checkpoint,
    read_metrics,
    read_run_config,
)
from trm_train.training._build import build_trainer
from trm_train.training._cli import main


@pytest.fixture(scope="module")
def store_path(transform_store: Callable[..., Path]) -> Path:
    return transform_store(
        tasks=4, shape=(2, 3), transform="transpose", seed=2, num_aug=2, held_out=True
    )


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args, "--wandb", "disabled", "--no-progress"])
    return result.exit_code, result.output


def test_help_lists_every_split_and_the_distributed_semantics() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for name in SPLIT_NAMES:
        assert name in text
    assert "torchrun" in text and "averaged" in text


def test_a_short_stack_internal_run_writes_checkpoints_and_metrics(
    store_path: Path, tmp_path: Path
) -> None:
    code, output = run(
        "--data",
        str(store_path),
        "--split",
        "stack_internal_and_sum",
        "--recipe",
        "tiny",
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 0, output
    assert [step for step, _ in list_checkpoints(tmp_path / "run")] == [3]
    assert len(read_metrics(tmp_path / "run")) == 3
    config = read_run_config(tmp_path / "run")
    assert config.objective.split == "stack_internal_and_sum"
    # The write-up's refinement split: the no-ACT model, differential losses, w = 1e-4.
    assert config.model.act_mode == "none" and config.model.cycle_outputs
    assert config.model.internal_losses == "differential"
    assert config.objective.intermediate_weight == 1e-4 and config.data.global_batch_size == 4
    metrics = read_metrics(tmp_path / "run")
    assert "train/q_halt_accuracy" not in metrics[-1] and metrics[-1]["train/halt_loss"] == 0


def test_epochs_become_steps(store_path: Path, tmp_path: Path) -> None:
    code, output = run(
        "--data",
        str(store_path),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 0, output
    store = arc_data.open_store(store_path)
    per_epoch = arc_data.TrainSampler(store.train, 4, seed=0).batches_in_epoch()
    assert read_run_config(tmp_path / "run").loop.steps == per_epoch


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--split", "iwrm"], "unknown split 'iwrm'; valid names: sum,"),
        (["--steps", "2", "--epochs", "1"], "--steps or --epochs, not both"),
        (["--aggregator", "nope"], "'nope' is not one of"),
        (
            ["--aggregator-param", "pref_vector"],
            "aggregator parameter 'pref_vector' is not KEY=VALUE",
        ),
        (
            ["--aggregator", "cagrad", "--aggregator-param", "radius=1"],
            "unknown parameter 'radius': aggregator 'cagrad' accepts: c (float, 0.5), norm_eps",
        ),
        (
            ["--aggregator", "krum"],
            "missing required parameter n_byzantine: aggregator 'krum' accepts: n_byzantine "
            "(int, required), n_selected (int, 1)",
        ),
        (
            ["--aggregator", "nashmtl", "--aggregator-param", "n_tasks=4.5"],
            "aggregator 'nashmtl': n_tasks must be an int, got '4.5'",
        ),
    ],
)
def test_bad_options_exit_2(store_path: Path, args: list[str], message: str) -> None:
    code, output = run("--data", str(store_path), *args)
    assert code == 2
    assert message in " ".join(output.split())


def test_aggregator_params_round_trip_through_config_json(store_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, output = run(
        "--data",
        str(store_path),
        "--split",
        "iwrm_q_halt_in",
        "--aggregator",
        "mgda",
        "--aggregator-param",
        "max_iters=7",
        "--aggregator-param",
        "epsilon=0.01",
        "--steps",
        "1",
        "--batch-size",
        "4",
        "--out",
        str(out),
    )
    assert code == 0, output
    saved = json.loads((out / "config.json").read_text())["objective"]
    assert saved["aggregator_params"] == {"max_iters": 7, "epsilon": 0.01}
    config = read_run_config(out)
    assert config.objective.aggregator_params == {"max_iters": 7, "epsilon": 0.01}
    aggregator = build_trainer(config, Distributed(), resume=True).jd.aggregator
    assert isinstance(aggregator, GramianWeightedAggregator)
    weighting = aggregator.gramian_weighting
    assert isinstance(weighting, MGDAWeighting)
    assert (weighting.max_iters, weighting.epsilon) == (7, 0.01)
    code, output = run("--resume", str(out), "--aggregator-param", "max_iters=8")
    assert code == 2 and "remove --aggregator-param" in output
    code, output = run("--resume", str(out), "--steps", "2")
    assert code == 0, output


def test_missing_store_exits_2_naming_it(tmp_path: Path) -> None:
    code, output = run("--data", str(tmp_path / "nothing.zarr"))
    assert code == 2 and "nothing.zarr: no such store" in output
    code, output = run("--steps", "1")
    assert code == 2 and "--data STORE is required" in output


def test_resume_keeps_the_configuration(store_path: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    assert run("--data", str(store_path), "--steps", "1", "--batch-size", "4", "--out", out)[0] == 0
    code, output = run("--resume", out, "--lr", "0.1")
    assert code == 2 and "remove --lr" in output
    code, output = run("--resume", out, "--steps", "2")
    assert code == 0, output
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == [1, 2]
    code, output = run("--data", str(store_path), "--steps", "1", "--out", out)
    assert code == 1 and "already holds a run" in output


def test_split_spellings_select_the_same_mode(store_path: Path, tmp_path: Path) -> None:
    code, output = run(
        "--data",
        str(store_path),
        "--split",
        "Stack-Supervisions",
        "--steps",
        "1",
        "--batch-size",
        "4",
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 0, output
    config = read_run_config(tmp_path / "run")
    assert config.objective.split == "stack_supervisions" and config.objective.stacks_supervisions
    # T = halt_max_steps unrolled steps on the no-ACT model, with the write-up's carry noise.
    assert config.model.act_mode == "none" and config.model.halt_max_steps == 4
    assert config.model.carry_perturbation == 0.001
    assert read_metrics(tmp_path / "run")[0]["jd/num_objectives"] == 4


def test_fine_tuning_starts_from_a_checkpoint_trained_on_other_puzzles(
    store_path: Path, transform_store: Callable[..., Path], tmp_path: Path
) -> None:
    source = str(tmp_path / "source")
    code, output = run(
        "--data", str(store_path), "--steps", "2", "--batch-size", "4", "--out", source
    )
    assert code == 0, output
    _, source_state = load_checkpoint(Path(source))
    other = transform_store(
        tasks=3, shape=(2, 3), transform="transpose", seed=5, num_aug=1, held_out=True
    )
    rows_before = source_state["model"]["puzzle_emb"].shape[0]
    rows_after = arc_data.open_store(other).metadata.num_puzzle_identifiers
    assert rows_before != rows_after
    # Frozen weights: the network must come out exactly as loaded.
    target = tmp_path / "target"
    code, output = run(
        "--data", str(other), "--init-from", source, "--freeze-weights", "--steps", "1",
        "--batch-size", "4", "--out", str(target),
    )  # fmt: skip
    assert code == 0, output
    assert f"has {rows_before} rows, the model's {rows_after}" in " ".join(output.split())
    _, state = load_checkpoint(target)
    for key, value in source_state["model"].items():
        if key != "puzzle_emb":
            assert torch.equal(state["model"][key], value), key
    # Row 0, the blank puzzle, is never trained: it keeps the source table's mean row.
    mean_row = source_state["model"]["puzzle_emb"].float().mean(0)
    torch.testing.assert_close(state["model"]["puzzle_emb"][0], mean_row)
    assert read_run_config(target).init_from == Path(source)


def test_fine_tuning_an_act_checkpoint_into_the_no_act_model_drops_the_q_head(
    store_path: Path, tmp_path: Path
) -> None:
    source = str(tmp_path / "source")
    assert (
        run("--data", str(store_path), "--steps", "1", "--batch-size", "4", "--out", source)[0] == 0
    )
    code, output = run(
        "--data", str(store_path), "--split", "stack_internal_losses", "--init-from", source,
        "--steps", "1", "--batch-size", "4", "--out", str(tmp_path / "target"),
    )  # fmt: skip
    assert code == 0, output
    assert "q_head" in output
    code, output = run(
        "--data", str(store_path), "--init-from", str(tmp_path / "nothing.pt"),
        "--steps", "1", "--out", str(tmp_path / "bad"),
    )  # fmt: skip
    assert code == 2 and "nothing.pt" in output


def test_examples_per_draw_reaches_the_sampler_and_the_epoch_size(
    store_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    code, output = run(
        "--data", str(store_path), "--examples-per-draw", "1", "--epochs", "1",
        "--batch-size", "4", "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    config = read_run_config(out)
    assert config.data.examples_per_draw == 1
    store = arc_data.open_store(store_path)
    sampler = arc_data.TrainSampler(store.train, 4, seed=0, examples_per_draw=1)
    # An epoch still covers every task's examples once: 4 tasks x 2 demonstrations of the
    # drawn version (of 3) in batches of 4.
    assert store.train.num_examples == 4 * 2 * 3
    assert config.loop.steps == sampler.batches_in_epoch() == 2


@pytest.mark.parametrize(
    ("args", "mlp_t", "positions", "puzzle_len"),
    [
        (["--mlp-t"], True, "none", 4),
        (["--mlp-t", "--pos-encodings", "learned", "--puzzle-emb-len", "2"], True, "learned", 2),
        (["--recipe", "cpu_sudoku"], True, "none", 4),
        (["--recipe", "cpu_sudoku", "--attention", "--pos-encodings", "rope"], False, "rope", 4),
    ],
)
def test_token_mixing_and_position_options_reach_the_model(
    store_path: Path,
    tmp_path: Path,
    args: list[str],
    mlp_t: bool,
    positions: str,
    puzzle_len: int,
) -> None:
    out = tmp_path / "run"
    code, output = run(
        "--data", str(store_path), *args, "--steps", "1", "--batch-size", "4", "--out", str(out)
    )  # fmt: skip
    assert code == 0, output
    model = read_run_config(out).model
    assert (model.mlp_t, model.pos_encodings, model.puzzle_emb_len) == (
        mlp_t,
        positions,
        puzzle_len,
    )


def test_mlp_t_with_rope_is_refused(store_path: Path, tmp_path: Path) -> None:
    code, output = run(
        "--data", str(store_path), "--mlp-t", "--pos-encodings", "rope", "--out", str(tmp_path)
    )  # fmt: skip
    assert code == 2 and "rope" in output
