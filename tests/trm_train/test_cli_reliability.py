"""The commands on runs used from elsewhere, moved, failing or refused: one-line errors,
exit 2 for what the user can fix, and run folders left as they were."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from trm_train import list_checkpoints, read_run_config
from trm_train.evaluation._eval_cli import main as eval_main
from trm_train.reporting._report_cli import main as report_main
from trm_train.training._cli import main as train_main
from trm_train.training._step import train_step
from trm_train.training._trainer import Trainer

# A shrunk tiny model: a step takes milliseconds.
SMALL = ("--batch-size", "4", "--hidden-size", "16", "--num-heads", "2", "--L-layers", "1")
QUIET = ("--wandb", "disabled", "--no-progress")


@pytest.fixture(scope="module")
def store_path(transform_store: Callable[..., Path]) -> Path:
    return transform_store(
        tasks=4, shape=(2, 3), transform="transpose", seed=2, num_aug=2, held_out=True
    )


@pytest.fixture(scope="module")
def train_only_store(transform_store: Callable[..., Path]) -> Path:
    return transform_store(
        tasks=4, shape=(2, 3), transform="transpose", seed=2, num_aug=2, held_out=False
    )


def train(*args: str) -> Result:
    return CliRunner().invoke(train_main, [*args, *QUIET])


def error_lines(result: Result) -> list[str]:
    """The output's lines, after checking it is a plain error: no usage text, no traceback."""
    assert "Usage:" not in result.output and "Traceback" not in result.output, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    return [line for line in result.output.splitlines() if line.strip()]


@pytest.fixture
def project(store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp/project with data/store.zarr and runs/run (2 steps, trained from inside the
    project with relative paths); the working directory is then tmp/elsewhere."""
    root = tmp_path.resolve() / "project"  # the recorded paths are the real ones
    shutil.copytree(store_path, root / "data" / "store.zarr")
    monkeypatch.chdir(root)
    result = train("--data", "data/store.zarr", "--steps", "2", *SMALL, "--out", "runs/run")
    assert result.exit_code == 0, result.output
    (root.parent / "elsewhere").mkdir()
    monkeypatch.chdir(root.parent / "elsewhere")
    return root


@pytest.fixture
def run_dir(store_path: Path, tmp_path: Path) -> Path:
    """A 2-step run trained with absolute paths."""
    out = tmp_path / "run"
    result = train("--data", str(store_path), "--steps", "2", *SMALL, "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def test_the_run_records_its_store_absolutely(project: Path) -> None:
    saved = json.loads((project / "runs/run/config.json").read_text())["data"]
    assert Path(saved["store"]) == project / "data" / "store.zarr"


def test_a_run_resumes_evaluates_and_reports_from_another_directory(project: Path) -> None:
    run_dir = str(project / "runs" / "run")
    result = train("--resume", run_dir, "--steps", "3")
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(eval_main, ["--run", run_dir, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["step"] == 3
    result = CliRunner().invoke(report_main, [run_dir, "--pictures", "0"])
    assert result.exit_code == 0, result.output
    assert "cannot be opened" not in (project / "runs/run/report.md").read_text()


def test_a_moved_project_finds_its_store_from_the_run_folder(project: Path) -> None:
    moved = project.parent / "moved"
    shutil.move(project, moved)
    run_dir = str(moved / "runs" / "run")
    result = train("--resume", run_dir, "--steps", "3")
    assert result.exit_code == 0, result.output
    # The store is recorded again where it now is.
    assert read_run_config(moved / "runs" / "run").data.store == moved / "data" / "store.zarr"
    again = project.parent / "again"
    shutil.move(moved, again)
    run_dir = str(again / "runs" / "run")
    result = CliRunner().invoke(eval_main, ["--run", run_dir, "--no-progress"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(report_main, [run_dir, "--pictures", "0"])
    assert result.exit_code == 0, result.output
    report = (again / "runs" / "run" / "report.md").read_text()
    assert "cannot be opened" not in report and "held-out test set" in report


def test_a_lost_store_is_named_with_the_path_tried_from_the_run_folder(project: Path) -> None:
    shutil.rmtree(project / "data")
    run_dir = project / "runs" / "run"
    for command, args in [
        (train_main, ["--resume", str(run_dir), "--steps", "3", *QUIET]),
        (eval_main, ["--run", str(run_dir), "--no-progress"]),
    ]:
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())
        assert str(project / "data" / "store.zarr") in text
        assert str(run_dir / ".." / ".." / "data" / "store.zarr") in text


def test_a_resume_that_would_train_nothing_is_refused(run_dir: Path) -> None:
    config = (run_dir / "config.json").read_bytes()
    for steps in (["--steps", "1"], ["--steps", "2"], []):
        result = train("--resume", str(run_dir), *steps)
        assert result.exit_code == 2, result.output
        assert "checkpoint of step 2" in " ".join(result.output.split())
        assert (run_dir / "config.json").read_bytes() == config
    assert [step for step, _ in list_checkpoints(run_dir)] == [2]


def test_an_unwritable_out_is_one_line_exit_2(store_path: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    result = train("--data", str(store_path), "--steps", "1", *SMALL, "--out", str(tmp_path / "file/run"))  # fmt: skip
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "file/run" in lines[0]


def test_eval_and_report_map_file_errors_to_one_line_exit_2(run_dir: Path) -> None:
    (run_dir.parent / "file").write_text("not a folder")
    result = CliRunner().invoke(
        eval_main,
        ["--run", str(run_dir), "--out", str(run_dir.parent / "file/eval"), "--no-progress"],
    )
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "file/eval" in lines[0]
    (run_dir / "report").write_text("a file where the charts go")
    result = CliRunner().invoke(report_main, [str(run_dir)])
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "report" in lines[0]


def _failing_step(monkeypatch: pytest.MonkeyPatch, on_call: int) -> None:
    """Make the `on_call`-th training step of the next runs raise a ValueError."""
    calls = []

    def step(trainer: Trainer) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == on_call:
            raise ValueError("a broken batch")
        return train_step(trainer)

    monkeypatch.setattr("trm_train.training._loop.train_step", step)


def test_a_failure_during_training_names_the_step_and_the_last_checkpoint(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = (run_dir / "config.json").read_bytes()
    _failing_step(monkeypatch, on_call=2)
    result = train("--resume", str(run_dir), "--steps", "4")
    assert result.exit_code == 1
    text = " ".join(error_lines(result))
    assert "step 4" in text and "a broken batch" in text
    assert str(run_dir / "checkpoints" / "step-00000002.pt") in text
    # Step 3 was trained: the run changed, and its folder says so.
    assert (run_dir / "config.json").read_bytes() != config
    _failing_step(monkeypatch, on_call=1)
    result = train("--resume", str(run_dir), "--steps", "5")
    assert result.exit_code == 1 and "step 3" in " ".join(error_lines(result))
    # Nothing trained: the folder keeps the configuration of the last good checkpoint.
    assert read_run_config(run_dir).loop.steps == 4


def test_a_failed_start_leaves_no_half_run_folder(
    store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    result = train("--data", str(store_path), "--steps", "1", "--batch-size", "1000", "--out", str(out))  # fmt: skip
    assert result.exit_code == 2 and "fewer than one global batch" in result.output
    assert not out.exists()
    # A folder that was there keeps its own files and loses only what the failed start wrote.
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _failing_step(monkeypatch, on_call=1)
    result = train("--data", str(store_path), "--steps", "1", *SMALL, "--out", str(out))
    assert result.exit_code == 1 and "step 1" in result.output
    assert sorted(path.name for path in out.iterdir()) == ["notes.txt"]


def test_eval_every_needs_a_test_split(
    train_only_store: Path, store_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = ("--data", str(train_only_store), "--steps", "1", *SMALL)
    result = train(*args, "--eval-every", "1", "--out", str(out))
    assert result.exit_code == 2 and "no test split" in result.output
    assert not out.exists()
    # A recipe's own evaluation interval is dropped instead, so the run records no evaluation.
    result = train(*args, "--recipe", "cpu", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert read_run_config(out).loop.eval_every is None
    result = train("--resume", str(out), "--steps", "2", "--eval-every", "1")
    assert result.exit_code == 2 and "no test split" in result.output
