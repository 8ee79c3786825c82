"""Sudoku-Extreme CSV files (`sudoku-csv:PATH`), and every malformed Sudoku input through
the CLI: one line on stderr, exit code 2, no store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from arc_data import Task, parse_source
from arc_data._cli import main

HEADER = "source,question,answer,rating"
# A 4 x 4 solution and a puzzle of it, as Sudoku-Extreme writes them ('.' blank).
ANSWER = "1234341221434321"
QUESTION = "1.3...1.2.4...2."

CleanFailure = Callable[..., None]


def as_text(grid: np.ndarray, blank: str) -> str:
    return "".join(blank if v == 0 else str(v) for v in grid.reshape(-1).tolist())


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *(f"gen,{q},{a},7" for q, a in rows)]) + "\n")
    return path


def rows_of(task: Task, blank: str, *, test: bool = False) -> list[tuple[str, str]]:
    pairs = task.test if test else task.train
    return [
        (as_text(p.input, blank), as_text(p.output, "0")) for p in pairs if p.output is not None
    ]


def read(spec: str, seed: int = 0) -> Task:
    source = parse_source(spec, seed=seed)
    (subset,) = source.subsets()
    (task,) = source.read(subset)
    return task


@pytest.fixture(scope="module")
def generated() -> Task:
    source = parse_source("sudoku:6?train=8&test=3", seed=2)
    (task,) = source.read("sudoku6")
    return task


def test_folder_round_trip(tmp_path: Path, generated: Task) -> None:
    folder = tmp_path / "extreme"
    # '.' blanks in one file, '0' in the other: both are read as blank.
    write_csv(folder / "train.csv", rows_of(generated, "."))
    write_csv(folder / "test.csv", rows_of(generated, "0", test=True))
    source = parse_source(f"sudoku-csv:{folder}")
    assert source.subsets() == ["extreme"]
    task = read(f"sudoku-csv:{folder}")
    assert (task.task_id, task.subset, task.sudoku_box) == ("extreme", "extreme", (2, 3))
    for got, want in zip(
        (*task.train, *task.test), (*generated.train, *generated.test), strict=True
    ):
        np.testing.assert_array_equal(got.input, want.input)
        assert got.output is not None and want.output is not None
        np.testing.assert_array_equal(got.output, want.output)


def test_folder_subsample_keeps_file_order_and_follows_the_seed(
    tmp_path: Path, generated: Task
) -> None:
    folder = tmp_path / "extreme"
    write_csv(folder / "train.csv", rows_of(generated, "."))
    write_csv(folder / "test.csv", rows_of(generated, ".", test=True))
    position = {p.input.tobytes(): k for k, p in enumerate(generated.train)}

    def picked(seed: int) -> list[int]:
        task = read(f"sudoku-csv:{folder}?train=3&test=2", seed)
        assert len(task.test) == 2
        return [position[p.input.tobytes()] for p in task.train]

    first = picked(0)
    assert len(first) == 3 and first == sorted(first)
    assert first == picked(0) and first != picked(1)


def test_single_file_is_split_by_solution_grid(tmp_path: Path) -> None:
    # With all 16 givens the 10 puzzles are 10 distinct solutions.
    source = parse_source("sudoku:4?train=10&test=1&givens=16", seed=0)
    (task,) = source.read("sudoku4")
    rows = []
    for pair in task.train:
        assert pair.output is not None
        # A second puzzle of the same solution: the full grid with one cell blank.
        other = pair.output.copy()
        other[0, 0] = 0
        rows += [(as_text(pair.input, "."), as_text(pair.output, "0"))]
        rows += [(as_text(other, "."), as_text(pair.output, "0"))]
    path = write_csv(tmp_path / "mine.csv", rows)
    split = read(f"sudoku-csv:{path}?test=5")
    assert split.subset == "mine"
    # 10 solutions of 2 puzzles each: 3 whole solutions are needed to hold out 5 puzzles.
    assert len(split.test) == 6 and len(split.train) == 14
    held = {p.output.tobytes() for p in split.test if p.output is not None}
    assert len(held) == 3
    assert all(p.output is not None and p.output.tobytes() not in held for p in split.train)
    assert len(read(f"sudoku-csv:{path}?test=5&train=4").train) == 4


def build(source: str, output: Path, subset: str) -> Any:
    return CliRunner().invoke(
        main,
        [
            "build",
            "--source",
            source,
            "--subsets",
            subset,
            "--test-set",
            subset,
            "--num-aug",
            "2",
            "--output",
            str(output),
        ],
    )


LATIN = "1234214334124321"  # rows and columns hold 1..4, the top-left box 1, 2, 2, 1
BAD_FILES: dict[str, tuple[str, list[tuple[str, str]], str]] = {
    "wrong header": (
        "source,puzzle,solution,rating",
        [(QUESTION, ANSWER)],
        "header is 'source,puzzle,solution,rating', expected source,question,answer,rating",
    ),
    "short row": (HEADER, [(QUESTION, ANSWER + ",9")], "line 2: 5 fields, expected 4"),
    "odd length": (
        HEADER,
        [(QUESTION[:15], ANSWER)],
        "line 2: question of 15 and answer of 16 characters; expected 16, 36 or 81",
    ),
    "mixed sizes": (
        HEADER,
        [(QUESTION, ANSWER), ("." * 36, "1" * 36)],
        "line 3: question of 36 and answer of 36 characters; expected 16 as on line 2",
    ),
    "letter": (
        HEADER,
        [("1.x" + QUESTION[3:], ANSWER)],
        "line 2: question has 'x' at row 1, column 3; expected '.' or '0' (blank) or 1..4",
    ),
    "digit above n": (
        HEADER,
        [(QUESTION, ANSWER), ("5" + QUESTION[1:], ANSWER)],
        "line 3: question has '5' at row 1, column 1",
    ),
    "blank answer": (
        HEADER,
        [(QUESTION, "." + ANSWER[1:])],
        "line 2: answer has '.' at row 1, column 1; expected 1..4",
    ),
    "invalid answer": (
        HEADER,
        [(QUESTION, ANSWER), ("................", LATIN)],
        "line 3: answer is not a valid 4x4 Sudoku (2x2 boxes): box 1 is 1221",
    ),
    "givens disagree": (
        HEADER,
        [("1.4" + QUESTION[3:], ANSWER)],
        "line 2: question gives 4 at row 1, column 3 where the answer has 3",
    ),
    "no puzzles": (HEADER, [], "no puzzles"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_malformed_csv(assert_clean_failure: CleanFailure, tmp_path: Path, case: str) -> None:
    header, rows, message = BAD_FILES[case]
    folder = tmp_path / "bad"
    write_csv(folder / "train.csv", rows, header)
    write_csv(folder / "test.csv", [(QUESTION, ANSWER)])
    output = tmp_path / "out.zarr"
    assert_clean_failure(build(f"sudoku-csv:{folder}", output, "bad"), output, "train.csv", message)


def test_empty_file_and_missing_test_file(
    assert_clean_failure: CleanFailure, tmp_path: Path
) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "train.csv").write_text("")
    output = tmp_path / "out.zarr"
    result = build(f"sudoku-csv:{folder}", output, "bad")
    assert_clean_failure(result, output, "train.csv: empty, expected the header source,question")
    write_csv(folder / "train.csv", [(QUESTION, ANSWER)])
    result = build(f"sudoku-csv:{folder}", output, "bad")
    assert_clean_failure(result, output, "test.csv: cannot read (No such file or directory)")


def test_file_and_folder_requests_that_cannot_be_met(
    assert_clean_failure: CleanFailure, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "one.csv", [(QUESTION, ANSWER), ("1" + "." * 15, ANSWER)])
    output = tmp_path / "out.zarr"
    result = build(f"sudoku-csv:{path}", output, "one")
    assert_clean_failure(result, output, "a single CSV file needs test=M")
    result = build(f"sudoku-csv:{path}?test=1", output, "one")
    assert_clean_failure(
        result,
        output,
        "holding out 1 puzzles by solution grid leaves none to train on (2 puzzles, 1 distinct solutions)",
    )
    write_csv(tmp_path / "set" / "train.csv", [(QUESTION, ANSWER)])
    write_csv(tmp_path / "set" / "test.csv", [(QUESTION, ANSWER)])
    result = build(f"sudoku-csv:{tmp_path / 'set'}?train=2", output, "set")
    assert_clean_failure(result, output, "set/train.csv: 2 puzzles asked for, 1 available")
    write_csv(tmp_path / "set" / "test.csv", [("." * 36, "123456456123231564564231312645645312")])
    result = build(f"sudoku-csv:{tmp_path / 'set'}", output, "set")
    assert_clean_failure(result, output, "set: train.csv holds 4x4 puzzles, test.csv 6x6")


BAD_SPECS = {
    "sudoku:5": "source 'sudoku:5': Sudoku side '5'; choose 4, 6 or 9",
    "sudoku:9?givens=16": "16 givens; a 9x9 Sudoku with a unique solution has 17 to 81",
    "sudoku:4?givens=17": "17 givens; a 4x4 Sudoku with a unique solution has 4 to 16",
    "sudoku:4?size=3": "unknown parameter 'size'; choose from train, test, givens",
    "sudoku:4?train=0": "train='0' is not a positive integer",
    "sudoku:4?test=-1": "test='-1' is not a positive integer",
    "sudoku:4?test=1&test=2": "parameter 'test' given twice",
    "sudoku-csv:x.csv?givens=3": "unknown parameter 'givens'; choose from train, test",
    "sudoku:4?givens=16&train=300&test=1": "of 300 distinct training puzzles with 16 givens",
}


@pytest.mark.parametrize("spec", sorted(BAD_SPECS))
def test_bad_sudoku_specs(assert_clean_failure: CleanFailure, tmp_path: Path, spec: str) -> None:
    output = tmp_path / "out.zarr"
    subset = "x" if spec.startswith("sudoku-csv") else "sudoku4"
    assert_clean_failure(build(spec, output, subset), output, BAD_SPECS[spec])


def test_unknown_subset_names_the_one_offered(
    assert_clean_failure: CleanFailure, tmp_path: Path
) -> None:
    output = tmp_path / "out.zarr"
    result = build("sudoku:4", output, "sudoku6")
    assert_clean_failure(result, output, "unknown subset 'sudoku6' (available: sudoku:4: sudoku4)")
