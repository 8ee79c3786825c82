"""tools/study.py end to end at toy size: a small generated Sudoku family, two arms, two
seeds, an SGD sweep of two rates, 2 steps per run, 2-step timing probes; then the same
command again."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_study_trains_the_grid_writes_records_tables_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "docs"
    command = [
        sys.executable, str(ROOT / "tools/study.py"), "--family", "sudoku", "--steps", "2",
        "--seeds", "0,1", "--arms", "sum,iwrm_q_halt_in", "--sgd-lrs", "0.01,0.1",
        "--sudoku-source", "sudoku:4?train=80&test=6&givens=8", "--probe-steps", "2",
        "--work-dir", str(tmp_path / "work"), "--out-dir", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    records = sorted(p.stem for p in (out / "records").glob("*.json"))
    # 2 arms x 2 seeds with AdamATan2; the sweep (2 arms x 2 rates) on seed 0; seed 1 of
    # each SGD arm at its tuned rate.
    adam = [k for k in records if "adam_atan2" in k]
    sgd = [k for k in records if "-sgd-" in k]
    assert len(adam) == 4 and len(sgd) == 6
    assert sum(k.endswith("seed1") for k in sgd) == 2
    run = json.loads((out / "records" / "sudoku-adam_atan2-sum-seed0.json").read_text())
    assert run["steps"] == 2 and len(run["train"]["loss"]) == 2
    assert [e["step"] for e in run["evals"]] == [1, 2]
    assert run["items"] == 6  # the 6 held-out puzzles
    tables = (out / "tables.md").read_text()
    assert "## sudoku, adam_atan2, 2 steps" in tables and "## sudoku, sgd, 2 steps" in tables
    # 3 tables per optimizer, and a row per rate of the SGD sweep.
    assert tables.count("| `iwrm_q_halt_in` |") == 3 * 2 + 2
    assert "| `iwrm_q_halt_in` | 0.1 |" in tables
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sudoku/adam_atan2"]["iwrm_q_halt_in"]["pass@1"]["pairs"] == 2
    # One probe per arm and optimizer, and the wall-time axis reads them.
    probes = sorted(p.stem for p in (out / "timing").glob("*.json"))
    assert probes == [
        f"sudoku-{optimizer}-{arm}{lr}-probe"
        for optimizer, lr in (("adam_atan2", ""), ("sgd", "-lr0.01"))
        for arm in ("iwrm_q_halt_in", "sum")
    ]
    probe = json.loads((out / "timing" / "sudoku-adam_atan2-sum-probe.json").read_text())
    assert len(probe["step_seconds"]) == 2 and probe["seconds_per_step"] == probe["step_seconds"][1]
    sources = re.findall(r"\d \((probe|runs)\) \|", tables)
    assert sources == ["probe"] * 2 * 2  # 2 arms x 2 optimizers
    for name in ("sudoku-adam_atan2.png", "sudoku-sgd.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "start" not in again.stderr and "0 runs trained" in again.stderr
