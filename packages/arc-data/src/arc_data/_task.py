"""ARC tasks in memory, and their validation from parsed JSON."""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from arc_data._errors import ArcDataError

Grid = npt.NDArray[np.uint8]

MAX_GRID_SIZE = 30
NUM_COLOURS = 10


@attrs.frozen
class Pair:
    """One demonstration or test pair. `output` is None when the solution is unknown."""

    input: Grid
    output: Grid | None


@attrs.frozen
class Task:
    """An ARC task: demonstration pairs and test pairs, identified within its subset.

    `sudoku_box` is (rows, columns) of the boxes when every grid is a Sudoku of side
    rows * columns (blank 0): its augmentations must then keep Sudoku validity.
    `fixed_colours` says that colours have fixed meanings (a maze's wall, start, goal and
    path): its augmentations are then the dihedral transforms only, colours stay.
    """

    task_id: str
    subset: str
    train: tuple[Pair, ...]
    test: tuple[Pair, ...]
    sudoku_box: tuple[int, int] | None = None
    fixed_colours: bool = False

    @property
    def has_test_outputs(self) -> bool:
        return all(pair.output is not None for pair in self.test)

    def grids(self) -> list[Grid]:
        """Every known grid of the task, in a fixed order."""
        out: list[Grid] = []
        for pair in (*self.train, *self.test):
            out.append(pair.input)
            if pair.output is not None:
                out.append(pair.output)
        return out

    def max_side(self) -> int:
        return max(int(max(grid.shape)) for grid in self.grids())


def parse_grid(value: Any, where: str) -> Grid:
    """A grid from JSON (a non-empty list of equal-length lists of ints 0..9, at most 30x30)."""
    grid = _valid_grid(value)
    if grid is not None:
        return grid
    # Something is wrong (or unusual, such as int subclasses): find it cell by cell.
    if not isinstance(value, list) or not value:
        raise ArcDataError(f"{where}: expected a non-empty list of rows, got {_describe(value)}")
    if len(value) > MAX_GRID_SIZE:
        raise ArcDataError(f"{where}: {len(value)} rows, more than {MAX_GRID_SIZE}")
    width = -1
    for r, row in enumerate(value):
        if not isinstance(row, list) or not row:
            raise ArcDataError(f"{where}: row {r} is {_describe(row)}, expected a non-empty list")
        if width == -1:
            width = len(row)
        elif len(row) != width:
            raise ArcDataError(
                f"{where}: ragged rows (row {r} has {len(row)} cells, row 0 has {width})"
            )
        for c, cell in enumerate(row):
            # bool is an int subclass in Python; a colour must be a real integer.
            if not isinstance(cell, int) or isinstance(cell, bool):
                raise ArcDataError(f"{where}: cell ({r}, {c}) is {_describe(cell)}, not a colour")
            if not 0 <= cell < NUM_COLOURS:
                raise ArcDataError(f"{where}: colour {cell} at ({r}, {c}) is outside 0..9")
    if width > MAX_GRID_SIZE:
        raise ArcDataError(f"{where}: {width} columns, more than {MAX_GRID_SIZE}")
    return np.asarray(value, dtype=np.uint8)


def _valid_grid(value: Any) -> Grid | None:
    """The grid when `value` is a list of lists of plain ints 0..9 of one length, within
    30 x 30 (what JSON files hold), checked a list at a time rather than a cell at a
    time; None otherwise."""
    if type(value) is not list or not 0 < len(value) <= MAX_GRID_SIZE:
        return None
    width = len(value[0]) if type(value[0]) is list else 0
    if not 0 < width <= MAX_GRID_SIZE:
        return None
    if any(type(row) is not list or len(row) != width for row in value):
        return None
    cells = itertools.chain.from_iterable(value)
    # Exactly int: bool, an int subclass, must be refused, and bytes() would take it.
    if set(map(type, cells)) != {int}:
        return None
    try:
        data = bytearray(itertools.chain.from_iterable(value))
    except ValueError:  # a negative colour, or one past 255
        return None
    grid = np.frombuffer(data, dtype=np.uint8).reshape(len(value), width)
    return grid if int(grid.max()) < NUM_COLOURS else None


def parse_task(
    value: Any,
    *,
    task_id: str,
    subset: str,
    source: str,
    solutions: Any | None = None,
    solutions_source: str = "",
) -> Task:
    """Validate one task in the ARC JSON structure.

    `value` is `{"train": [{"input", "output"}...], "test": [{"input"[, "output"]}...]}`.
    `solutions`, when given, is the list of test output grids (Kaggle layout) and must
    match the test inputs one to one.
    """
    where = f"{source}: task {task_id}"
    if not isinstance(value, dict):
        raise ArcDataError(
            f"{where}: expected an object with 'train' and 'test', got {_describe(value)}"
        )
    for key in ("train", "test"):
        if key not in value:
            raise ArcDataError(f"{where}: missing '{key}'")
        if not isinstance(value[key], list) or not value[key]:
            raise ArcDataError(f"{where}: '{key}' must be a non-empty list of pairs")
    train = tuple(
        _parse_pair(pair, f"{where}: train[{i}]", need_output=True)
        for i, pair in enumerate(value["train"])
    )
    test = tuple(
        _parse_pair(pair, f"{where}: test[{i}]", need_output=False)
        for i, pair in enumerate(value["test"])
    )
    if solutions is not None:
        sol_where = f"{solutions_source}: task {task_id}"
        if not isinstance(solutions, list):
            raise ArcDataError(
                f"{sol_where}: expected a list of output grids, got {_describe(solutions)}"
            )
        if len(solutions) != len(test):
            raise ArcDataError(
                f"{sol_where}: {len(solutions)} solutions for {len(test)} test inputs"
            )
        test = tuple(
            Pair(pair.input, parse_grid(grid, f"{sol_where}: solution[{i}]"))
            for i, (pair, grid) in enumerate(zip(test, solutions, strict=True))
        )
    return Task(task_id=task_id, subset=subset, train=train, test=test)


def task_to_json(task: Task) -> dict[str, Any]:
    """The task in the public ARC JSON layout (outputs omitted where unknown)."""

    def pair_json(pair: Pair) -> dict[str, Any]:
        out: dict[str, Any] = {"input": pair.input.tolist()}
        if pair.output is not None:
            out["output"] = pair.output.tolist()
        return out

    return {"train": [pair_json(p) for p in task.train], "test": [pair_json(p) for p in task.test]}


def _parse_pair(value: Any, where: str, *, need_output: bool) -> Pair:
    if not isinstance(value, dict):
        raise ArcDataError(
            f"{where}: expected an object with 'input' and 'output', got {_describe(value)}"
        )
    if "input" not in value:
        raise ArcDataError(f"{where}: missing 'input'")
    if need_output and "output" not in value:
        raise ArcDataError(f"{where}: missing 'output'")
    grid_in = parse_grid(value["input"], f"{where}.input")
    grid_out = parse_grid(value["output"], f"{where}.output") if "output" in value else None
    return Pair(grid_in, grid_out)


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"
