"""Sudoku sources: generated puzzles (`sudoku:N`) and Sudoku-Extreme CSV files
(`sudoku-csv:PATH`).

As in TRM, all puzzles of a source are examples of one task, so they share one puzzle
identifier per augmented version: the source offers one subset holding one task (both
named `sudokuN` or after the path) whose train pairs are the training puzzles and whose
test pairs are the held-out ones. Digits are colours 1..n, a blank is colour 0.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import numpy as np
import numpy.typing as npt

from arc_data._errors import ArcDataError
from arc_data._source_options import (
    check_subset,
    parameters,
    read_csv_grids,
    split_by_group,
    subsample,
)
from arc_data._sudoku import (
    BOX_SHAPES,
    MIN_GIVENS,
    first_violation,
    generate,
    valid_solutions,
)
from arc_data._task import Grid, Pair, Task

DEFAULT_TRAIN = 1000
DEFAULT_TEST = 200
# Well above the fewest givens, so that most attempts succeed (about 1 in 2 for 9 x 9
# at 24 givens, 1 in 5 at 23; 6 x 6 at 9 givens 1 in 5).
DEFAULT_GIVENS = {4: 6, 6: 12, 9: 26}
SIDE_OF_LENGTH = {16: 4, 36: 6, 81: 9}
# Separate the generator's and the CSV subsampler's streams from the build's others.
GENERATOR_STREAM = 0x5D0C
CSV_STREAM = 0x5D0C5
# Rows checked at once, to bound memory on the 3.8 M rows of Sudoku-Extreme's train.csv.
CHECK_ROWS = 1 << 16

Stack = npt.NDArray[np.uint8]


@attrs.frozen
class SudokuSource:
    """`sudoku:N?train=T&test=M&givens=G`: T training and M held-out puzzles of side N
    with G givens and a unique solution, generated from the build's seed; no held-out
    solution grid is the solution of a training puzzle."""

    spec: str
    side: int
    train: int
    test: int
    givens: int
    seed: int

    def subsets(self) -> list[str]:
        return [f"sudoku{self.side}"]

    def read(self, subset: str) -> list[Task]:
        check_subset(self.spec, subset, self.subsets())
        box = BOX_SHAPES[self.side]
        # Held-out puzzles come from their own stream: they depend on the seed, N, the
        # givens and their count, not on how many training puzzles are asked for.
        test_seed, train_seed = np.random.SeedSequence(
            [self.seed, GENERATOR_STREAM, self.side]
        ).spawn(2)
        test = generate(box, self.givens, self.test, np.random.default_rng(test_seed))
        self._check_made(len(test), self.test, "held-out")
        held_out = frozenset(solution.tobytes() for _, solution in test)
        train = generate(box, self.givens, self.train, np.random.default_rng(train_seed), held_out)
        self._check_made(len(train), self.train, "training")
        return [_task(subset, train, test, box)]

    def _check_made(self, made: int, wanted: int, split: str) -> None:
        if made < wanted:
            raise ArcDataError(
                f"{self.spec}: made only {made} of {wanted} distinct {split} puzzles with "
                f"{self.givens} givens before giving up (too few such puzzles, or too few "
                "givens to reach often); ask for fewer puzzles or more givens"
            )


@attrs.frozen
class SudokuCsvSource:
    """`sudoku-csv:PATH?train=T&test=M`: puzzles from CSV files with the header
    `source,question,answer,rating` (Sudoku-Extreme's). PATH is a folder holding
    `train.csv` and `test.csv` (T and M subsample them, default all), or one CSV file
    whose puzzles are split by solution grid with at least M held out (required)."""

    spec: str
    path: Path
    train: int | None
    test: int | None
    seed: int

    def subsets(self) -> list[str]:
        return [self.path.name if self.path.suffix.lower() != ".csv" else self.path.stem]

    def read(self, subset: str) -> list[Task]:
        check_subset(self.spec, subset, self.subsets())
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, CSV_STREAM]))
        if self.path.is_dir():
            train_questions, train_answers, box = _read_csv(self.path / "train.csv")
            test_questions, test_answers, test_box = _read_csv(self.path / "test.csv")
            if test_box != box:
                raise ArcDataError(
                    f"{self.path}: train.csv holds {_side(box)}x{_side(box)} puzzles, "
                    f"test.csv {_side(test_box)}x{_side(test_box)}"
                )
            test_rows = subsample(len(test_questions), self.test, rng, f"{self.path}/test.csv")
            train_rows = subsample(len(train_questions), self.train, rng, f"{self.path}/train.csv")
        else:
            if self.test is None:
                raise ArcDataError(
                    f"{self.spec}: a single CSV file needs test=M, the number of puzzles to "
                    "hold out (by solution grid)"
                )
            train_questions, train_answers, box = _read_csv(self.path)
            test_questions, test_answers = train_questions, train_answers
            test_rows, rest = _split_by_solution(train_answers, self.test, rng, self.spec)
            train_rows = rest[subsample(len(rest), self.train, rng, str(self.path))]
        train = _pairs(train_questions[train_rows], train_answers[train_rows])
        test = _pairs(test_questions[test_rows], test_answers[test_rows])
        return [_task(subset, train, test, box)]


def parse_sudoku_source(
    kind: str, value: str, spec: str, seed: int
) -> SudokuSource | SudokuCsvSource:
    """`sudoku:N[?train=T&test=M&givens=G]` or `sudoku-csv:PATH[?train=T&test=M]`."""
    base, _, query = value.partition("?")
    if kind == "sudoku":
        values = parameters(spec, query, ("train", "test", "givens"))
        if not base.isdigit() or int(base) not in BOX_SHAPES:
            raise ArcDataError(f"source {spec!r}: Sudoku side {base!r}; choose 4, 6 or 9")
        side = int(base)
        givens = values.get("givens", DEFAULT_GIVENS[side])
        if not MIN_GIVENS[side] <= givens <= side * side:
            raise ArcDataError(
                f"source {spec!r}: {givens} givens; a {side}x{side} Sudoku with a unique "
                f"solution has {MIN_GIVENS[side]} to {side * side}"
            )
        return SudokuSource(
            spec=spec,
            side=side,
            train=values.get("train", DEFAULT_TRAIN),
            test=values.get("test", DEFAULT_TEST),
            givens=givens,
            seed=seed,
        )
    values = parameters(spec, query, ("train", "test"))
    if not base:
        raise ArcDataError(f"source {spec!r}: expected sudoku-csv:PATH")
    return SudokuCsvSource(
        spec=spec,
        path=Path(base),
        train=values.get("train"),
        test=values.get("test"),
        seed=seed,
    )


def _task(
    name: str,
    train: Sequence[tuple[Grid, Grid]],
    test: Sequence[tuple[Grid, Grid]],
    box: tuple[int, int],
) -> Task:
    return Task(
        task_id=name,
        subset=name,
        train=tuple(Pair(q, a) for q, a in train),
        test=tuple(Pair(q, a) for q, a in test),
        sudoku_box=box,
    )


def _pairs(questions: Stack, answers: Stack) -> list[tuple[Grid, Grid]]:
    return list(zip(questions, answers, strict=True))


def _side(box: tuple[int, int]) -> int:
    return box[0] * box[1]


def _read_csv(path: Path) -> tuple[Stack, Stack, tuple[int, int]]:
    """Questions and answers `[k, n, n]` of a Sudoku CSV file (blank 0), checked: answers
    are valid solutions and agree with every given."""
    # Views of the buffers, turned into digits in place once their characters are checked.
    digits, solutions, lines = read_csv_grids(path, SIDE_OF_LENGTH, "16, 36 or 81", "puzzles")
    side = digits.shape[1]
    box = BOX_SHAPES[side]
    last = ord("0") + side
    _check_alphabet(
        path,
        lines,
        digits,
        lambda raw: (raw == ord(".")) | ((raw >= ord("0")) & (raw <= last)),
        f"question has {{}}; expected '.' or '0' (blank) or 1..{side}",
    )
    _check_alphabet(
        path,
        lines,
        solutions,
        lambda raw: (raw >= ord("1")) & (raw <= last),
        f"answer has {{}}; expected 1..{side}",
    )
    digits[digits == ord(".")] = ord("0")
    digits -= np.uint8(ord("0"))
    solutions -= np.uint8(ord("0"))
    bad = _first_index(len(lines), lambda rows: valid_solutions(solutions[rows], box))
    if bad is not None:
        raise ArcDataError(
            f"{path}: line {lines[bad]}: answer is not a valid {side}x{side} Sudoku "
            f"({box[0]}x{box[1]} boxes): {first_violation(solutions[bad], box)}"
        )

    def agree(rows: slice | int) -> npt.NDArray[np.bool_]:
        given_or_blank: npt.NDArray[np.bool_] = (digits[rows] == 0) | (
            digits[rows] == solutions[rows]
        )
        return given_or_blank

    bad = _first_index(len(lines), lambda rows: _all_cells(agree(rows)))
    if bad is not None:
        r, c = (int(x[0]) for x in np.nonzero(~agree(bad)))
        raise ArcDataError(
            f"{path}: line {lines[bad]}: question gives {digits[bad, r, c]} at row {r + 1}, "
            f"column {c + 1} where the answer has {solutions[bad, r, c]}"
        )
    return digits, solutions, box


def _all_cells(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Per grid of `mask` `[k, n, n]`: is every cell true?"""
    return np.asarray(mask.all(axis=(1, 2)), dtype=np.bool_)


def _first_index(total: int, ok: Callable[[slice], npt.NDArray[np.bool_]]) -> int | None:
    """The first row failing `ok`, checked CHECK_ROWS rows at a time."""
    for start in range(0, total, CHECK_ROWS):
        bad = np.flatnonzero(~ok(slice(start, start + CHECK_ROWS)))
        if len(bad):
            return start + int(bad[0])
    return None


def _check_alphabet(
    path: Path,
    lines: array[int],
    raw: Stack,
    allowed: Callable[[Stack], npt.NDArray[np.bool_]],
    message: str,
) -> None:
    """Report the first cell whose character `allowed` rejects (`message` names it)."""
    bad = _first_index(len(lines), lambda rows: _all_cells(allowed(raw[rows])))
    if bad is not None:
        r, c = (int(x[0]) for x in np.nonzero(~allowed(raw[bad])))
        found = f"{chr(raw[bad, r, c])!r} at row {r + 1}, column {c + 1}"
        raise ArcDataError(f"{path}: line {lines[bad]}: " + message.format(found))


def _split_by_solution(
    answers: Stack, test: int, rng: np.random.Generator, spec: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Rows held out and rows left: whole solution grids, in random order, are held out
    until they hold at least `test` puzzles."""
    _, group = np.unique(answers.reshape(len(answers), -1), axis=0, return_inverse=True)
    held, rest = split_by_group(group.reshape(-1), test, rng)
    if not len(rest):
        raise ArcDataError(
            f"{spec}: holding out {test} puzzles by solution grid leaves none to train on "
            f"({len(answers)} puzzles, {int(group.max()) + 1} distinct solutions)"
        )
    return held, rest
