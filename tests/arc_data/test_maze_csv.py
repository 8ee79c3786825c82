"""Maze-Hard CSV files (`maze-csv:PATH`), and every malformed maze input through the CLI:
one line on stderr, exit code 2, no store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from arc_data import Task, parse_source
from arc_data._cli import main

HEADER = ["source", "question", "answer", "rating"]
CHAR = {5: "#", 0: " ", 3: "S", 2: "G", 4: "o"}
# A 7 x 7 maze whose shortest path runs along the top; a detour runs along the bottom.
QUESTION = ["#######", "#S   G#", "# ### #", "#     #", "# ### #", "#     #", "#######"]
ANSWER = ["#######", "#SoooG#", *QUESTION[2:]]

CleanFailure = Callable[..., None]


def text(rows: list[str]) -> str:
    return "".join(rows)


def edit(rows: list[str], row: int, col: int, char: str) -> str:
    changed = [list(r) for r in rows]
    changed[row][col] = char
    return "".join("".join(r) for r in changed)


def as_text(grid: np.ndarray) -> str:
    return "".join(CHAR[v] for v in grid.reshape(-1).tolist())


def write_csv(path: Path, rows: list[tuple[str, str]], header: list[str] = HEADER) -> Path:
    # Plain commas, as Maze-Hard writes them (no field holds a comma or a quote).
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([",".join(header), *(f"gen,{q},{a},0" for q, a in rows)]) + "\n")
    return path


def rows_of(pairs: tuple[Any, ...]) -> list[tuple[str, str]]:
    return [(as_text(p.input), as_text(p.output)) for p in pairs]


def read(spec: str, seed: int = 0) -> Task:
    source = parse_source(spec, seed=seed)
    (subset,) = source.subsets()
    (task,) = source.read(subset)
    return task


@pytest.fixture(scope="module")
def generated() -> Task:
    return read("maze:9?train=8&test=3", seed=2)


def test_folder_round_trip(tmp_path: Path, generated: Task) -> None:
    folder = tmp_path / "hard"
    write_csv(folder / "train.csv", rows_of(generated.train))
    write_csv(folder / "test.csv", rows_of(generated.test))
    assert parse_source(f"maze-csv:{folder}").subsets() == ["hard"]
    task = read(f"maze-csv:{folder}")
    assert (task.task_id, task.subset, task.fixed_colours) == ("hard", "hard", True)
    assert len(task.train) == 8 and len(task.test) == 3
    for got, want in zip(
        (*task.train, *task.test), (*generated.train, *generated.test), strict=True
    ):
        np.testing.assert_array_equal(got.input, want.input)
        assert got.output is not None and want.output is not None
        np.testing.assert_array_equal(got.output, want.output)


def test_folder_subsample_keeps_file_order_and_follows_the_seed(
    tmp_path: Path, generated: Task
) -> None:
    folder = tmp_path / "hard"
    write_csv(folder / "train.csv", rows_of(generated.train))
    write_csv(folder / "test.csv", rows_of(generated.test))
    position = {p.input.tobytes(): k for k, p in enumerate(generated.train)}

    def picked(seed: int) -> list[int]:
        task = read(f"maze-csv:{folder}?train=3&test=2", seed)
        assert len(task.test) == 2
        return [position[p.input.tobytes()] for p in task.train]

    first = picked(0)
    assert len(first) == 3 and first == sorted(first)
    assert first == picked(0) and first != picked(1)


def test_single_file_is_split_by_maze_up_to_symmetry(tmp_path: Path, generated: Task) -> None:
    # Each maze twice: as generated, and turned a quarter with S and G swapped.
    rows = []
    swap = np.asarray([0, 1, 3, 2, 4, 5, 6, 7, 8, 9], dtype=np.uint8)  # S <-> G
    for pair in generated.train:
        assert pair.output is not None
        rows += [(as_text(pair.input), as_text(pair.output))]
        rows += [(as_text(swap[np.rot90(pair.input)]), as_text(swap[np.rot90(pair.output)]))]
    path = write_csv(tmp_path / "mine.csv", rows)
    split = read(f"maze-csv:{path}?test=3")
    assert split.subset == "mine"
    # 8 mazes of 2 rows each: 2 whole mazes are needed to hold out 3 rows.
    assert len(split.test) == 4 and len(split.train) == 12
    held = {as_text(p.input) for p in split.test}
    for k in range(0, len(rows), 2):
        assert (rows[k][0] in held) == (rows[k + 1][0] in held)  # a maze's rows stay together
    assert not held & {as_text(p.input) for p in split.train}
    assert len(read(f"maze-csv:{path}?test=3&train=5").train) == 5


def build(source: str, output: Path, subset: str) -> Any:
    args = ["build", "--source", source, "--subsets", subset, "--test-set", subset]
    return CliRunner().invoke(main, [*args, "--num-aug", "2", "--output", str(output)])


GOOD = (text(QUESTION), text(ANSWER))
DETOUR = ["#######", "#S   G#", "#o###o#", "#ooooo#", "# ### #", "#     #", "#######"]
CLOSED = ["#######", "#S  #G#", "# #####", *QUESTION[3:]]
# A 5 x 5 maze without walls, G straight right of S.
SMALL = ("S   G" + " " * 20, "SoooG" + " " * 20)
BAD_FILES: dict[str, tuple[list[str], list[tuple[str, str]], str]] = {
    "wrong header": (
        ["source", "q", "a", "rating"],
        [GOOD],
        "header is 'source,q,a,rating', expected source,question,answer,rating",
    ),
    "short row": (HEADER, [(GOOD[0], GOOD[1] + ",9")], "line 2: 5 fields, expected 4"),
    "not square": (
        HEADER,
        [(GOOD[0][:-1], GOOD[1])],
        "line 2: question of 48 and answer of 49 characters; expected N*N for a side N from "
        "2 to 30",
    ),
    "too large": (
        HEADER,
        [("#" * 961, "#" * 961)],
        "line 2: question of 961 and answer of 961 characters; expected N*N",
    ),
    "mixed sizes": (
        HEADER,
        [GOOD, SMALL],
        "line 3: question of 25 and answer of 25 characters; expected 49 as on line 2",
    ),
    "letter": (
        HEADER,
        [GOOD, (edit(QUESTION, 1, 3, "x"), GOOD[1])],
        "line 3: question has 'x' at row 2, column 4; expected one of '# SG'",
    ),
    "path in question": (
        HEADER,
        [(edit(QUESTION, 1, 2, "o"), GOOD[1])],
        "line 2: question has 'o' at row 2, column 3; expected one of '# SG'",
    ),
    "letter in answer": (
        HEADER,
        [(GOOD[0], edit(ANSWER, 6, 0, "."))],
        "line 2: answer has '.' at row 7, column 1; expected one of '# SGo'",
    ),
    "two starts": (
        HEADER,
        [(edit(QUESTION, 5, 5, "S"), edit(ANSWER, 5, 5, "S"))],
        "line 2: question has 2 'S' cells; expected exactly one",
    ),
    "no goal": (
        HEADER,
        [(edit(QUESTION, 1, 5, " "), edit(ANSWER, 1, 5, " "))],
        "line 2: question has 0 'G' cells; expected exactly one",
    ),
    "wall turned into path": (
        HEADER,
        [(GOOD[0], edit(ANSWER, 0, 0, "o"))],
        "line 2: answer has 'o' at row 1, column 1 where the question has '#' (only ' ' may "
        "become 'o')",
    ),
    "start dropped": (
        HEADER,
        [(GOOD[0], edit(ANSWER, 1, 1, "o"))],
        "line 2: answer has 'o' at row 2, column 2 where the question has 'S'",
    ),
    "not a shortest path": (
        HEADER,
        [(GOOD[0], text(DETOUR))],
        "line 2: answer marks 7 path cells; a shortest path from S to G has 3",
    ),
    "path cells apart": (
        HEADER,
        [(GOOD[0], edit(["#######", "#So oG#", *QUESTION[2:]], 3, 3, "o"))],
        "line 2: the path cells do not connect S to G",
    ),
    "goal out of reach": (
        HEADER,
        [(text(CLOSED), text(CLOSED))],
        "line 2: G cannot be reached from S",
    ),
    "no mazes": (HEADER, [], "no mazes"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_malformed_csv(assert_clean_failure: CleanFailure, tmp_path: Path, case: str) -> None:
    header, rows, message = BAD_FILES[case]
    folder = tmp_path / "bad"
    write_csv(folder / "train.csv", rows, header)
    write_csv(folder / "test.csv", [GOOD])
    output = tmp_path / "out.zarr"
    assert_clean_failure(build(f"maze-csv:{folder}", output, "bad"), output, "train.csv", message)


def test_empty_missing_and_mismatched_files(
    assert_clean_failure: CleanFailure, tmp_path: Path
) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "train.csv").write_text("")
    output = tmp_path / "out.zarr"
    result = build(f"maze-csv:{folder}", output, "bad")
    assert_clean_failure(result, output, "train.csv: empty, expected the header source,question")
    write_csv(folder / "train.csv", [GOOD])
    result = build(f"maze-csv:{folder}", output, "bad")
    assert_clean_failure(result, output, "test.csv: cannot read (No such file or directory)")
    write_csv(folder / "test.csv", [SMALL])
    result = build(f"maze-csv:{folder}", output, "bad")
    assert_clean_failure(result, output, "bad: train.csv holds 7x7 mazes, test.csv 5x5")
    path = write_csv(tmp_path / "one.csv", [GOOD])
    assert_clean_failure(build(f"maze-csv:{path}", output, "one"), output, "needs test=M")
    result = build(f"maze-csv:{path}?test=1", output, "one")
    assert_clean_failure(
        result,
        output,
        "holding out 1 mazes up to symmetry leaves none to train on (1 mazes, 1 distinct",
    )


BAD_SPECS = {
    "maze:4": ("maze4", "source 'maze:4': maze side '4'; choose an odd number from 5 to 29"),
    "maze:3": ("maze3", "maze side '3'; choose an odd number from 5 to 29"),
    "maze:31": ("maze31", "maze side '31'; choose an odd number from 5 to 29"),
    "maze:nine": ("maze9", "maze side 'nine'; choose an odd number"),
    "maze:9?givens=3": ("maze9", "unknown parameter 'givens'; choose from train, test"),
    "maze:9?train=0": ("maze9", "train='0' is not a positive integer"),
    "maze-csv:?test=1": ("x", "source 'maze-csv:?test=1': expected maze-csv:PATH"),
    "maze:5?train=10&test=1": ("maze5", "made only 3 of 10 distinct training mazes"),
}


@pytest.mark.parametrize("spec", sorted(BAD_SPECS))
def test_bad_maze_specs(assert_clean_failure: CleanFailure, tmp_path: Path, spec: str) -> None:
    output = tmp_path / "out.zarr"
    subset, message = BAD_SPECS[spec]
    assert_clean_failure(build(spec, output, subset), output, message)
