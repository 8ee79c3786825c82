"""`trm-eval` on a short run: metrics as JSON, the files, unlabelled stores, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest
from click.testing import CliRunner

import arc_data
from trm_train import Distributed, LoggingConfig, tiny, train
from trm_train.evaluation._eval_cli import main

TaskJson = dict[str, object]


def _tasks(labelled: bool) -> dict[str, TaskJson]:
    rng = np.random.default_rng(3)
    tasks: dict[str, TaskJson] = {}
    for index in range(3):
        grids = [rng.integers(0, 10, (2, 2)) for _ in range(4)]
        train_pairs = [{"input": g.tolist(), "output": g.T.tolist()} for g in grids[:2]]
        tests = [
            {"input": g.tolist(), **({"output": g.T.tolist()} if labelled else {})}
            for g in grids[2:]
        ]
        tasks[f"task{index}"] = {"train": train_pairs, "test": tests}
    return tasks


def _store(folder: Path, labelled: bool) -> Path:
    (folder / "tasks").mkdir(parents=True)
    for task_id, task in _tasks(labelled).items():
        (folder / "tasks" / f"{task_id}.json").write_text(json.dumps(task))
    config = arc_data.BuildConfig(
        sources=(f"dir:{folder / 'tasks'}",),
        subsets=("tasks",),
        test_set="tasks",
        num_aug=2,
        max_grid=10,
    )
    arc_data.build_store(config, folder / "store.zarr")
    return folder / "store.zarr"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evalcli")
    store = _store(root / "labelled", labelled=True)
    meta = arc_data.open_store(store).metadata
    config = tiny(meta.num_puzzle_identifiers, meta.seq_len, store)
    config = attrs.evolve(
        config,
        model=attrs.evolve(config.model, hidden_size=32, halt_max_steps=2),
        data=attrs.evolve(config.data, global_batch_size=4),
        loop=attrs.evolve(config.loop, steps=2),
        logging=LoggingConfig(wandb="disabled"),
    )
    train(config, root / "run", Distributed(), progress=False)
    return root / "run"


def test_eval_prints_metrics_and_writes_the_files(run_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["--run", str(run_dir), "--out", str(tmp_path / "eval"), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["step"] == 2 and metrics["num_tasks"] == 3 and metrics["num_test_inputs"] == 6
    assert {f"pass@{k}" for k in (1, 2, 5, 10, 100, 1000)} <= metrics.keys()
    written = {p.name for p in (tmp_path / "eval").iterdir()}
    assert written == {"submission.json", "tasks.json", "metrics.json", "pictures"}
    submission = json.loads((tmp_path / "eval" / "submission.json").read_text())
    assert sorted(submission) == ["task0", "task1", "task2"]
    assert all(len(attempts) == 2 for attempts in submission.values())


def test_eval_of_an_unlabelled_store_gives_a_submission_only(run_dir: Path, tmp_path: Path) -> None:
    store = _store(tmp_path / "unlabelled", labelled=False)
    result = CliRunner().invoke(
        main,
        [
            "--run",
            str(run_dir),
            "--data",
            str(store),
            "--out",
            str(tmp_path / "eval"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "no score is possible" in result.stderr
    metrics = json.loads(result.stdout)
    assert not any(key.startswith("pass@") for key in metrics)
    assert (tmp_path / "eval" / "submission.json").is_file()


def test_eval_bad_input_exits_2(run_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--run", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no checkpoint" in result.output
    result = CliRunner().invoke(main, ["--run", str(run_dir), "--checkpoint", "7"])
    assert result.exit_code == 2 and "no checkpoint of step 7 (have 2)" in result.output


def test_eval_of_a_damaged_checkpoint_exits_2_naming_it(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    checkpoint = copy / "checkpoints" / "step-00000002.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    result = CliRunner().invoke(main, ["--run", str(copy)])
    assert result.exit_code == 2
    assert "step-00000002.pt: not a readable checkpoint" in " ".join(result.output.split())


# Runs `trm-eval` then `trm-report` on the run in argv[1] and writes to argv[2] the
# modules they loaded.
_EVAL_AND_REPORT = """
import json, sys
from pathlib import Path

from trm_train.evaluation._eval_cli import main as evaluate
from trm_train.reporting._report_cli import main as report

run, out = Path(sys.argv[1]), Path(sys.argv[2])
evaluate(["--run", str(run), "--out", str(out / "eval"), "--no-progress"], standalone_mode=False)
report([str(run), "--pictures", "0"], standalone_mode=False)
(out / "loaded.json").write_text(json.dumps(sorted(sys.modules)))
"""


def test_evaluating_and_reporting_load_no_training_machinery(run_dir: Path, tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-c", _EVAL_AND_REPORT, str(run_dir), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    loaded = json.loads((tmp_path / "loaded.json").read_text())
    assert (tmp_path / "eval" / "metrics.json").is_file()
    training = [m for m in loaded if m.split(".")[:2] == ["trm_train", "training"]]
    assert training == []
    # The configuration needs jd-splits' split names, but not its aggregators.
    assert "jd_splits._presets" in loaded
    assert not [m for m in loaded if m.split(".")[0] in ("adam_atan2", "torchjd", "cvxpy")]
