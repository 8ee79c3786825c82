"""ARC-GEN-small (`../shared/data/arc-gen-small`), the CPU family closest to ARC-AGI-2."""

from __future__ import annotations

from pathlib import Path

import pytest

from arc_data import parse_source, read_subsets

ARC_GEN = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "arc-gen-small"


@pytest.fixture(scope="module")
def prefix() -> Path:
    prefix = ARC_GEN / "arc-gen"
    if not Path(f"{prefix}_gen10_challenges.json").is_file():
        pytest.skip("the shared ARC-GEN-small files are not on this machine")
    return prefix


def test_arc_gen_small_reads_as_kaggle_combined_json(prefix: Path) -> None:
    tasks = read_subsets([parse_source(f"kaggle:{prefix}")], ["gen10"])["gen10"]
    # Its README: 100 ARC-AGI-2 training tasks, 240 train and 60 held-out pairs each,
    # every grid at most 10 x 10, the held-out outputs in the solutions file.
    assert len(tasks) == 100
    assert {(len(t.train), len(t.test)) for t in tasks} == {(240, 60)}
    assert all(t.has_test_outputs for t in tasks)
    shapes = [
        grid.shape
        for t in tasks
        for pair in (*t.train, *t.test)
        for grid in (pair.input, pair.output)
        if grid is not None
    ]
    assert max(h for h, _ in shapes) <= 10 and max(w for _, w in shapes) <= 10
