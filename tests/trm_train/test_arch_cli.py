"""`trm-train --arch transformer`: the no-recursion baseline trains, is recorded in
config.json, and resume / evaluation read it back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from trm_train import TrainConfig, load_trained_model, read_metrics, read_run_config
from trm_train.evaluation._eval_cli import main as eval_main
from trm_train.training._cli import main


@pytest.fixture(scope="module")
def store_path(transform_store: Callable[..., Path]) -> Path:
    return transform_store(
        tasks=4, shape=(2, 3), transform="transpose", seed=2, num_aug=2, held_out=True
    )


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args, "--wandb", "disabled", "--no-progress"])
    return result.exit_code, result.output


@pytest.mark.parametrize(("split", "objectives"), [("sum", 1), ("stack_internal_losses", 2)])
def test_the_transformer_baseline_trains_resumes_and_evaluates(
    store_path: Path, tmp_path: Path, split: str, objectives: int
) -> None:
    out = tmp_path / "run"
    common = ("--split", split, "--batch-size", "4", "--out", str(out))
    code, output = run("--data", str(store_path), "--arch", "transformer", "--steps", "3", *common)
    assert code == 0, output
    assert json.loads((out / "config.json").read_text())["model"]["arch"] == "transformer"
    config = read_run_config(out)
    assert config.model.arch == "transformer" and config.model.cycles == 1
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    # One cycle per step: stack_internal_losses has lm and one refinement objective.
    assert metrics[-1]["jd/num_objectives"] == objectives
    if split != "sum":
        return

    code, output = run("--resume", str(out), "--arch", "trm")
    assert code == 2 and "remove --arch" in output
    code, output = run("--resume", str(out), "--steps", "4")
    assert code == 0, output
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3, 4]
    assert read_run_config(out).model.arch == "transformer"
    model, _, step = load_trained_model(out)
    assert step == 4 and model.config.arch == "transformer"

    result = CliRunner().invoke(
        eval_main, ["--run", str(out), "--out", str(tmp_path / "eval"), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["step"] == 4


def test_a_config_without_arch_reads_as_trm(store_path: Path, tmp_path: Path) -> None:
    code, output = run(
        "--data",
        str(store_path),
        "--steps",
        "1",
        "--batch-size",
        "4",
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 0, output
    values = json.loads((tmp_path / "run" / "config.json").read_text())
    assert values["model"].pop("arch") == "trm"  # the default, recorded
    assert TrainConfig.from_dict(values).model.arch == "trm"  # runs written before --arch
