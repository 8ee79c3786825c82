"""Maze sources: generated mazes (`maze:N`) and Maze-Hard CSV files (`maze-csv:PATH`).

As for Sudoku, all mazes of a source are examples of one task, so they share one puzzle
identifier per augmented version: the source offers one subset holding one task (both
named `mazeN` or after the path) whose train pairs are the training mazes and whose test
pairs are the held-out ones. Colours: walls 5, open 0, S 3, G 2, path 4 (see `_maze`).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from pathlib import Path

import attrs
import numpy as np
import numpy.typing as npt

from arc_data._errors import ArcDataError
from arc_data._maze import (
    CHARSET,
    COLOUR_OF_CHAR,
    MAX_SIDE,
    MIN_SIDE,
    answer_problem,
    generate,
    maze_key,
)
from arc_data._source_options import (
    check_subset,
    parameters,
    read_csv_grids,
    split_by_group,
    subsample,
)
from arc_data._task import MAX_GRID_SIZE, Grid, Pair, Task

DEFAULT_TRAIN = 1000
DEFAULT_TEST = 200
# A CSV maze may have any side that fits a canvas; 2 is the least that holds S and G.
MIN_CSV_SIDE = 2
SIDE_OF_LENGTH = {n * n: n for n in range(MIN_CSV_SIDE, MAX_GRID_SIZE + 1)}
# Separate the generator's and the CSV subsampler's streams from the build's others.
GENERATOR_STREAM = 0x3A2E
CSV_STREAM = 0x3A2E5
NOT_A_COLOUR = 255

Stack = npt.NDArray[np.uint8]


@attrs.frozen
class MazeSource:
    """`maze:N?train=T&test=M`: T training and M held-out N x N perfect mazes generated
    from the build's seed; no held-out maze, rotated, reflected or travelled the other
    way, is a training maze."""

    spec: str
    side: int
    train: int
    test: int
    seed: int

    def subsets(self) -> list[str]:
        return [f"maze{self.side}"]

    def read(self, subset: str) -> list[Task]:
        check_subset(self.spec, subset, self.subsets())
        # Held-out mazes come from their own stream: they depend on the seed, N and their
        # count, not on how many training mazes are asked for.
        test_seed, train_seed = np.random.SeedSequence(
            [self.seed, GENERATOR_STREAM, self.side]
        ).spawn(2)
        test = generate(self.side, self.test, np.random.default_rng(test_seed))
        self._check_made(len(test), self.test, "held-out")
        held_out = frozenset(maze_key(question) for question, _ in test)
        train = generate(self.side, self.train, np.random.default_rng(train_seed), held_out)
        self._check_made(len(train), self.train, "training")
        return [_task(subset, train, test)]

    def _check_made(self, made: int, wanted: int, split: str) -> None:
        if made < wanted:
            raise ArcDataError(
                f"{self.spec}: made only {made} of {wanted} distinct {split} mazes (up to "
                f"symmetry) before giving up: too few {self.side}x{self.side} mazes; ask "
                "for fewer mazes or a larger side"
            )


@attrs.frozen
class MazeCsvSource:
    """`maze-csv:PATH?train=T&test=M`: mazes from CSV files with the header
    `source,question,answer,rating` (Maze-Hard's). PATH is a folder holding `train.csv`
    and `test.csv` (T and M subsample them, default all), or one CSV file whose mazes are
    split up to symmetry with at least M held out (required)."""

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
            train_questions, train_answers = _read_csv(self.path / "train.csv")
            test_questions, test_answers = _read_csv(self.path / "test.csv")
            side, test_side = train_questions.shape[1], test_questions.shape[1]
            if test_side != side:
                raise ArcDataError(
                    f"{self.path}: train.csv holds {side}x{side} mazes, "
                    f"test.csv {test_side}x{test_side}"
                )
            test_rows = subsample(len(test_questions), self.test, rng, f"{self.path}/test.csv")
            train_rows = subsample(len(train_questions), self.train, rng, f"{self.path}/train.csv")
        else:
            if self.test is None:
                raise ArcDataError(
                    f"{self.spec}: a single CSV file needs test=M, the number of mazes to "
                    "hold out (up to symmetry)"
                )
            train_questions, train_answers = _read_csv(self.path)
            test_questions, test_answers = train_questions, train_answers
            test_rows, rest = _split_by_maze(train_questions, self.test, rng, self.spec)
            train_rows = rest[subsample(len(rest), self.train, rng, str(self.path))]
        train = list(zip(train_questions[train_rows], train_answers[train_rows], strict=True))
        test = list(zip(test_questions[test_rows], test_answers[test_rows], strict=True))
        return [_task(subset, train, test)]


def parse_maze_source(kind: str, value: str, spec: str, seed: int) -> MazeSource | MazeCsvSource:
    """`maze:N[?train=T&test=M]` or `maze-csv:PATH[?train=T&test=M]`."""
    base, _, query = value.partition("?")
    values = parameters(spec, query, ("train", "test"))
    if kind == "maze":
        if not (base.isascii() and base.isdigit()) or not (
            MIN_SIDE <= int(base) <= MAX_SIDE and int(base) % 2
        ):
            raise ArcDataError(
                f"source {spec!r}: maze side {base!r}; choose an odd number from {MIN_SIDE} "
                f"to {MAX_SIDE}"
            )
        return MazeSource(
            spec=spec,
            side=int(base),
            train=values.get("train", DEFAULT_TRAIN),
            test=values.get("test", DEFAULT_TEST),
            seed=seed,
        )
    if not base:
        raise ArcDataError(f"source {spec!r}: expected maze-csv:PATH")
    return MazeCsvSource(
        spec=spec, path=Path(base), train=values.get("train"), test=values.get("test"), seed=seed
    )


def _task(name: str, train: Sequence[tuple[Grid, Grid]], test: Sequence[tuple[Grid, Grid]]) -> Task:
    return Task(
        task_id=name,
        subset=name,
        train=tuple(Pair(q, a) for q, a in train),
        test=tuple(Pair(q, a) for q, a in test),
        fixed_colours=True,
    )


def _read_csv(path: Path) -> tuple[Stack, Stack]:
    """Questions and answers `[k, n, n]` of a maze CSV file as colours, checked: one S and
    one G, and answers that draw a shortest S-G path on the question."""
    raw_questions, raw_answers, lines = read_csv_grids(
        path,
        SIDE_OF_LENGTH,
        f"N*N for a side N from {MIN_CSV_SIDE} to {MAX_GRID_SIZE}",
        "mazes",
    )
    # A question has no path yet: 'o' is an answer's character only.
    colour_questions = _colours(path, lines, raw_questions, "question", CHARSET.replace("o", ""))
    colour_answers = _colours(path, lines, raw_answers, "answer", CHARSET)
    for k, (question, answer) in enumerate(zip(colour_questions, colour_answers, strict=True)):
        problem = answer_problem(question, answer)
        if problem is not None:
            raise ArcDataError(f"{path}: line {lines[k]}: {problem}")
    return colour_questions, colour_answers


def _colours(path: Path, lines: array[int], raw: Stack, field: str, allowed: str) -> Stack:
    """The colours of `raw` characters; the first character not in `allowed` is an error
    naming its line and cell."""
    table = np.full(256, NOT_A_COLOUR, dtype=np.uint8)
    for char in allowed:
        table[ord(char)] = COLOUR_OF_CHAR[CHARSET.index(char)]
    colours = table[raw]
    bad = np.argwhere(colours == NOT_A_COLOUR)
    if len(bad):
        k, r, c = (int(x) for x in bad[0])
        raise ArcDataError(
            f"{path}: line {lines[k]}: {field} has {chr(raw[k, r, c])!r} at row {r + 1}, "
            f"column {c + 1}; expected one of {allowed!r}"
        )
    return colours


def _split_by_maze(
    questions: Stack, test: int, rng: np.random.Generator, spec: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Rows held out and rows left: whole mazes up to symmetry (`maze_key`), in random
    order, are held out until they hold at least `test` rows."""
    first_of_key: dict[bytes, int] = {}
    group = np.asarray(
        [first_of_key.setdefault(maze_key(q), len(first_of_key)) for q in questions],
        dtype=np.intp,
    )
    held, rest = split_by_group(group, test, rng)
    if not len(rest):
        raise ArcDataError(
            f"{spec}: holding out {test} mazes up to symmetry leaves none to train on "
            f"({len(questions)} mazes, {len(first_of_key)} distinct up to symmetry)"
        )
    return held, rest
