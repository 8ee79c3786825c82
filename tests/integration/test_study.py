"""tools/study.py end to end. With real trm-train processes at toy size: a small generated
Sudoku family, two arms, two seeds, 2 steps per run, 2-step timing probes; then the same
command again. In process, with each training replaced by a record made up from its
spec: the SGD part (a sweep on the first seed, the other seeds at the tuned rate), whose
real runs would cost more processes than everything else."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools"


@pytest.mark.slow
def test_study_trains_the_grid_writes_records_tables_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "docs"
    command = [
        sys.executable, str(TOOLS / "study.py"), "--family", "sudoku", "--steps", "2",
        "--seeds", "0,1", "--arms", "sum,iwrm_q_halt_in", "--no-sgd",
        "--sudoku-source", "sudoku:4?train=80&test=6&givens=8", "--probe-steps", "2",
        "--work-dir", str(tmp_path / "work"), "--out-dir", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    records = sorted(p.stem for p in (out / "records").glob("*.json"))
    assert records == [
        f"sudoku-adam_atan2-{arm}-seed{seed}"
        for arm in ("iwrm_q_halt_in", "sum")
        for seed in (0, 1)
    ]
    run = json.loads((out / "records" / "sudoku-adam_atan2-sum-seed0.json").read_text())
    assert run["steps"] == 2 and len(run["train"]["loss"]) == 2
    assert [e["step"] for e in run["evals"]] == [1, 2]
    assert run["items"] == 6  # the 6 held-out puzzles
    tables = (out / "tables.md").read_text()
    assert "## sudoku, adam_atan2, 2 steps" in tables and "## sudoku, sgd" not in tables
    assert tables.count("| `iwrm_q_halt_in` |") == 3  # equal steps, equal time, diagnostics
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sudoku/adam_atan2"]["iwrm_q_halt_in"]["pass@1"]["pairs"] == 2
    # One probe per arm, and the wall-time axis reads them.
    probes = sorted(p.stem for p in (out / "timing").glob("*.json"))
    assert probes == [f"sudoku-adam_atan2-{arm}-probe" for arm in ("iwrm_q_halt_in", "sum")]
    probe = json.loads((out / "timing" / "sudoku-adam_atan2-sum-probe.json").read_text())
    assert len(probe["step_seconds"]) == 2 and probe["seconds_per_step"] == probe["step_seconds"][1]
    # The commit of the code the probe timed (the runs may have trained an older one).
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    if head.returncode == 0:
        assert probe["code"].rstrip("+") == head.stdout.strip()
    else:
        assert probe["code"] is None
    assert re.findall(r"\d \((probe|runs)\) \|", tables) == ["probe"] * 2
    assert (out / "sudoku-adam_atan2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "start" not in again.stderr and "0 runs trained" in again.stderr


@pytest.fixture
def study(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(TOOLS))
    module = importlib.import_module("study")
    yield module
    for name in ("study", "study_analysis", "study_protocol", "study_report"):
        sys.modules.pop(name, None)


def _made_up_record(spec: Any, run_dir: Path) -> dict[str, Any]:
    """A finished run whose training loss falls fastest at SGD rate 0.03 (then 0.1, 0.01),
    and faster with UPGrad on the internal losses than with their mean."""
    speed = {None: 0.2, 0.01: 0.1, 0.03: 0.3, 0.1: 0.2}[spec.lr]
    speed += 0.05 if spec.arm.name == "stack_internal_losses" else 0.0
    losses = [2.0 - speed * step for step in range(spec.length)]
    steps = spec.length
    return {
        "family": spec.family.name,
        "optimizer": spec.optimizer,
        "arm": spec.arm.name,
        "split": spec.arm.split,
        "seed": spec.seed,
        "lr": spec.lr,
        "steps": steps,
        "command": "made up",
        "items": 2,
        "train": {
            "loss": losses,
            "lm_loss": losses,
            "step_seconds": [1.0] * steps,
            "gd_cosine": [1.0] * steps,
            "conflict_share": [0.0] * steps,
        },
        "evals": [
            {"step": step, "train_seconds": step, "pass@1": 0.5, "pass@2": 0.5, "solved": ["a"]}
            for step in range(spec.eval_every, steps + 1, spec.eval_every)
        ],
    }


def _made_up_probe(spec: Any, run_dir: Path) -> dict[str, Any]:
    arm, optimizer = spec.arm.name, spec.optimizer
    return {"family": spec.family.name, "optimizer": optimizer, "arm": arm, "seconds_per_step": 1.0}


def test_study_tunes_sgd_on_the_first_seed_then_trains_the_others_at_that_rate(
    study: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained: list[str] = []

    def made_up_training(spec: Any, store: Path, run_dir: Path, log: Path) -> None:
        assert store == tmp_path / "work" / "data" / "sudoku.zarr"
        trained.append(spec.key)

    monkeypatch.setattr(
        study, "ensure_store", lambda family, data_dir, start: family.store(data_dir)
    )
    monkeypatch.setattr(study, "run_training", made_up_training)
    monkeypatch.setattr(study, "run_record", _made_up_record)
    monkeypatch.setattr(study, "probe_record", _made_up_probe)
    arguments = [
        "--family", "sudoku", "--steps", "6", "--seeds", "0,1,2",
        "--arms", "sum,iwrm_q_halt_in,stack_internal_losses,stack_internal_losses mean",
        "--sgd-lrs", "0.01,0.03,0.1", "--probe-steps", "3", "--jobs", "1",
        "--work-dir", str(tmp_path / "work"), "--out-dir", str(tmp_path / "docs"),
    ]  # fmt: skip
    result = CliRunner().invoke(study.main, arguments)
    assert result.exit_code == 0, result.output
    arms = ("sum", "iwrm_q_halt_in")  # the SGD arms
    adam = (*arms, "stack_internal_losses", "stack_internal_losses-mean")
    # One job: runs start in the order submitted. Seed-major AdamATan2 grid with the SGD
    # sweep after the first seed; then the other seeds with SGD at the rate of the lowest
    # first-half loss AUC (0.03 for both arms); last, one probe per arm and optimizer.
    assert trained == [
        *(f"sudoku-adam_atan2-{arm}-seed0" for arm in adam),
        *(f"sudoku-sgd-{arm}-lr{lr}-seed0" for arm in arms for lr in ("0.01", "0.03", "0.1")),
        *(f"sudoku-adam_atan2-{arm}-seed{seed}" for seed in (1, 2) for arm in adam),
        *(f"sudoku-sgd-{arm}-lr0.03-seed{seed}" for arm in arms for seed in (1, 2)),
        *(f"sudoku-{o}-{arm}{lr}-probe" for arm in arms for o, lr in (("adam_atan2", ""), ("sgd", "-lr0.01"))),
        *(f"sudoku-adam_atan2-{arm}-probe" for arm in adam[2:]),
    ]  # fmt: skip
    tables = (tmp_path / "docs" / "tables.md").read_text()
    assert "## sudoku, sgd, 6 steps" in tables and "| `iwrm_q_halt_in` | 0.03 |" in tables
    # The JD arm against its GD control over 3 seeds: the same score, solved items and
    # steps to half GD's score; an LM-loss AUC 0.05 x 0.5 lower over its 2 steps.
    row = "| `stack_internal_losses` | `stack_internal_losses mean` | 3 | +0.000 [0.000, 0.000]"
    row += " | **-0.025 [-0.025, -0.025]** | +0.000 [0.000, 0.000] | +0 [0, 0] |"  # bold: real
    assert row in tables
    assert (tmp_path / "docs" / "sudoku-sgd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
