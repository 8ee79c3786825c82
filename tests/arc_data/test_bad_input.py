"""Every malformed input: one line on stderr naming file, task and problem; exit code 2;
no store written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arc_data import ArcDataError, parse_source, read_subsets
from arc_data._cli import main

GOOD_TASK: dict[str, Any] = {
    "train": [{"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}],
    "test": [{"input": [[5, 5]]}],
}
GOOD_SOLUTIONS: dict[str, Any] = {"t1": [[[1, 1]]]}

CleanFailure = Callable[..., None]


def run_build(prefix: Path, output: Path, *extra: str) -> Any:
    return CliRunner().invoke(
        main,
        [
            "build",
            "--source",
            f"kaggle:{prefix}",
            "--subsets",
            "ev",
            "--test-set",
            "ev",
            "--num-aug",
            "2",
            "--output",
            str(output),
            *extra,
        ],
    )


def write(
    folder: Path, challenges: Any, solutions: Any = GOOD_SOLUTIONS, raw: str | None = None
) -> Path:
    prefix = folder / "arc"
    path = Path(f"{prefix}_ev_challenges.json")
    path.write_text(raw if raw is not None else json.dumps(challenges))
    if solutions is not None:
        Path(f"{prefix}_ev_solutions.json").write_text(json.dumps(solutions))
    return prefix


def with_train_input(grid: Any) -> dict[str, Any]:
    return {"t1": {"train": [{"input": grid, "output": [[1]]}], "test": GOOD_TASK["test"]}}


BAD_CHALLENGES = {
    "ragged rows": (
        with_train_input([[1, 2], [3]]),
        "ragged rows (row 1 has 1 cells, row 0 has 2)",
    ),
    "empty grid": (with_train_input([]), "expected a non-empty list of rows"),
    "empty row": (with_train_input([[]]), "row 0 is list [], expected a non-empty list"),
    "too many rows": (with_train_input([[1]] * 31), "31 rows, more than 30"),
    "too many columns": (with_train_input([[1] * 31]), "31 columns, more than 30"),
    "colour 10": (with_train_input([[1, 10]]), "colour 10 at (0, 1) is outside 0..9"),
    "negative colour": (with_train_input([[-1]]), "colour -1 at (0, 0) is outside 0..9"),
    "string colour": (with_train_input([["3"]]), "cell (0, 0) is str '3', not a colour"),
    "float colour": (with_train_input([[1.5]]), "cell (0, 0) is float 1.5, not a colour"),
    "bool colour": (with_train_input([[True]]), "cell (0, 0) is bool True, not a colour"),
    "bool among colours": (
        with_train_input([[1, 2], [3, False]]),
        "cell (1, 1) is bool False, not a colour",
    ),
    "colour past a byte": (with_train_input([[1, 300]]), "colour 300 at (0, 1) is outside 0..9"),
    "task not an object": ({"t1": [1, 2]}, "expected an object with 'train' and 'test'"),
    "missing train": ({"t1": {"test": GOOD_TASK["test"]}}, "missing 'train'"),
    "empty test": (
        {"t1": {"train": GOOD_TASK["train"], "test": []}},
        "'test' must be a non-empty list",
    ),
    "pair without output": (
        {"t1": {"train": [{"input": [[1]]}], "test": GOOD_TASK["test"]}},
        "train[0]: missing 'output'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CHALLENGES))
def test_malformed_challenges(
    assert_clean_failure: CleanFailure, tmp_path: Path, case: str
) -> None:
    challenges, message = BAD_CHALLENGES[case]
    prefix = write(tmp_path, challenges)
    output = tmp_path / "out.zarr"
    assert_clean_failure(
        run_build(prefix, output), output, "arc_ev_challenges.json", "task t1", message
    )


def test_non_json(assert_clean_failure: CleanFailure, tmp_path: Path) -> None:
    prefix = write(tmp_path, None, raw='{"t1": {"train": [')
    output = tmp_path / "out.zarr"
    assert_clean_failure(
        run_build(prefix, output), output, "arc_ev_challenges.json", "not valid JSON"
    )


def test_top_level_not_an_object(assert_clean_failure: CleanFailure, tmp_path: Path) -> None:
    prefix = write(tmp_path, [GOOD_TASK])
    output = tmp_path / "out.zarr"
    assert_clean_failure(
        run_build(prefix, output), output, "arc_ev_challenges.json", "expected a JSON object"
    )


def test_solution_count_must_match_test_inputs(
    assert_clean_failure: CleanFailure, tmp_path: Path
) -> None:
    prefix = write(tmp_path, {"t1": GOOD_TASK}, {"t1": [[[1]], [[2]]]})
    output = tmp_path / "out.zarr"
    assert_clean_failure(
        run_build(prefix, output),
        output,
        "arc_ev_solutions.json",
        "task t1",
        "2 solutions for 1 test inputs",
    )


def test_malformed_solution_grid(assert_clean_failure: CleanFailure, tmp_path: Path) -> None:
    prefix = write(tmp_path, {"t1": GOOD_TASK}, {"t1": [[[1, 2], [3]]]})
    output = tmp_path / "out.zarr"
    assert_clean_failure(
        run_build(prefix, output), output, "arc_ev_solutions.json", "task t1", "ragged rows"
    )


def test_solutions_missing_for_a_task(assert_clean_failure: CleanFailure, tmp_path: Path) -> None:
    prefix = write(tmp_path, {"t1": GOOD_TASK, "t2": GOOD_TASK}, GOOD_SOLUTIONS)
    output = tmp_path / "out.zarr"
    assert_clean_failure(
        run_build(prefix, output), output, "arc_ev_solutions.json", "task t2", "no solutions"
    )


def test_unknown_subset(assert_clean_failure: CleanFailure, tmp_path: Path) -> None:
    prefix = write(tmp_path, {"t1": GOOD_TASK})
    output = tmp_path / "out.zarr"
    result = CliRunner().invoke(
        main,
        [
            "build",
            "--source",
            f"kaggle:{prefix}",
            "--subsets",
            "nope",
            "--test-set",
            "none",
            "--output",
            str(output),
        ],
    )
    assert_clean_failure(result, output, "unknown subset 'nope'", "ev")


def test_kaggle_prefix_without_files(assert_clean_failure: CleanFailure, tmp_path: Path) -> None:
    """A prefix matching no challenges file names the pattern and the folder it looked in,
    not an "unknown subset" among none."""
    folder = tmp_path / "data"
    write(folder.parent, {"t1": GOOD_TASK})  # tmp_path/arc_ev_*: another folder
    folder.mkdir()
    Path(f"{folder / 'other'}_ev_challenges.json").write_text("{}")  # another prefix
    output = tmp_path / "out.zarr"
    result = run_build(folder / "arc", output)
    assert_clean_failure(
        result, output, f"kaggle:{folder / 'arc'}: no arc_*_challenges.json file in {folder}"
    )
    assert "unknown subset" not in result.stderr and "no such directory" not in result.stderr

    result = run_build(tmp_path / "nowhere" / "arc", output)
    assert_clean_failure(
        result,
        output,
        f"no arc_*_challenges.json file in {tmp_path / 'nowhere'} (no such directory)",
    )


def test_unknown_source(assert_clean_failure: CleanFailure, tmp_path: Path) -> None:
    output = tmp_path / "out.zarr"
    result = CliRunner().invoke(main, ["build", "--source", "http:x", "--output", str(output)])
    assert_clean_failure(result, output, "source 'http:x'", "unknown kind")


def test_test_set_outside_the_subsets(assert_clean_failure: CleanFailure, tmp_path: Path) -> None:
    prefix = write(tmp_path, {"t1": GOOD_TASK})
    output = tmp_path / "out.zarr"
    result = CliRunner().invoke(
        main,
        [
            "build",
            "--source",
            f"kaggle:{prefix}",
            "--subsets",
            "ev",
            "--test-set",
            "other",
            "--output",
            str(output),
        ],
    )
    assert_clean_failure(result, output, "test set 'other' is not among the subsets")


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    prefix = write(tmp_path, {"t1": GOOD_TASK})
    output = tmp_path / "out.zarr"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    result = run_build(prefix, output)
    assert result.exit_code == 2 and "already exists (pass --overwrite" in result.stderr
    assert (output / "keep.txt").read_text() == "mine"
    # --overwrite replaces an arc-data store, never a folder of other files.
    result = run_build(prefix, output, "--overwrite")
    assert result.exit_code == 2, result.output
    assert "exists and is not an arc-data store; --overwrite replaces stores only" in result.stderr
    assert sorted(p.name for p in output.iterdir()) == ["keep.txt"]
    (output / "keep.txt").unlink()
    assert run_build(prefix, output, "--overwrite").exit_code == 0  # an empty folder
    first = (output / "zarr.json").read_bytes()
    assert run_build(prefix, output, "--overwrite", "--seed", "1").exit_code == 0  # a store
    assert (output / "zarr.json").read_bytes() != first
    # Nor a file.
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert run_build(prefix, notes, "--overwrite").exit_code == 2
    assert notes.read_text() == "mine"


# Fuzzing: whatever JSON the readers get, they return tasks or raise ArcDataError.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 12)
    | st.floats(allow_nan=False)
    | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["train", "test", "input", "output", "x"]), children, max_size=4
        )
    ),
    max_leaves=30,
)
grids = st.lists(st.lists(st.integers(-1, 10), min_size=0, max_size=4), min_size=0, max_size=4)
near_valid_tasks = st.fixed_dictionaries(
    {
        "train": st.lists(st.fixed_dictionaries({"input": grids, "output": grids}), max_size=3),
        "test": st.lists(st.fixed_dictionaries({"input": grids}), max_size=2),
    }
)


@given(
    document=st.dictionaries(
        st.text(min_size=1, max_size=5), json_values | near_valid_tasks, max_size=3
    ),
    solutions=st.none() | json_values,
)
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_fuzzed_kaggle_files(tmp_path: Path, document: Any, solutions: Any) -> None:
    prefix = tmp_path / "fuzz"
    Path(f"{prefix}_ev_challenges.json").write_text(json.dumps(document))
    solutions_path = Path(f"{prefix}_ev_solutions.json")
    if solutions is None:
        solutions_path.unlink(missing_ok=True)
    else:
        solutions_path.write_text(json.dumps(solutions))
    try:
        tasks = read_subsets([parse_source(f"kaggle:{prefix}")], ["ev"])["ev"]
    except ArcDataError:
        return
    for task in tasks:
        for grid in task.grids():
            assert grid.ndim == 2 and min(grid.shape) >= 1 and max(grid.shape) <= 30
            assert grid.max() <= 9
