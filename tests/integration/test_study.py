"""tools/study.py on a tiny setting: two splits, two seeds, two steps each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import arc_data

ROOT = Path(__file__).resolve().parents[2]


def test_study_writes_a_table_with_every_split_and_the_plot(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    (tmp_path / "tasks").mkdir()
    for index in range(4):
        grids = [rng.integers(0, 10, (2, 3)) for _ in range(3)]
        pairs = [{"input": g.tolist(), "output": g[::-1].tolist()} for g in grids]
        (tmp_path / "tasks" / f"t{index}.json").write_text(
            json.dumps({"train": pairs[:2], "test": pairs[2:]})
        )
    config = arc_data.BuildConfig(
        sources=(f"dir:{tmp_path / 'tasks'}",),
        subsets=("tasks",),
        test_set="tasks",
        num_aug=1,
        max_grid=10,
    )
    arc_data.build_store(config, tmp_path / "store.zarr")
    out = tmp_path / "docs" / "table.md"
    command = [
        sys.executable,
        str(ROOT / "tools" / "study.py"),
        "--store",
        str(tmp_path / "store.zarr"),
        "--steps",
        "2",
        "--seeds",
        "0,1",
        "--batch-size",
        "4",
        "--splits",
        "sum,iwrm_q_halt_in",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--out",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == ["sum", "iwrm_q_halt_in"]
    assert all(row.count("|") == 9 and "±" in row for row in rows)
    raw = json.loads(out.with_suffix(".json").read_text())
    assert len(raw["sum"]) == 2 and 0.0 <= raw["sum"][0]["pass@2"] <= 1.0
    assert out.with_name("table-gd-cosine.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A second call reads the finished runs back instead of training again.
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "seed" not in again.stderr.split("wrote")[0]
