"""Sudoku rules: box shapes, solution checks, a solver, puzzle generation, and the
symmetries that keep a Sudoku valid.

A Sudoku of side n = r * c has boxes of r rows by c columns: c bands of r rows and r
stacks of c columns. Digits 1..n are ARC colours 1..n and a blank is colour 0.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from arc_data._task import Grid

# Side -> (box rows, box columns). 6 x 6 uses 2 x 3 boxes, as is usual.
BOX_SHAPES: dict[int, tuple[int, int]] = {4: (2, 2), 6: (2, 3), 9: (3, 3)}
# The fewest givens with which a puzzle can have a unique solution (9 x 9: McGuire et al.,
# 2012; 4 x 4 and 6 x 6 by exhaustive search, known results).
MIN_GIVENS = {4: 4, 6: 8, 9: 17}
# Dihedral transforms (indices into DIHEDRAL_NAMES) that keep rows rows: with non-square
# boxes the others (rot90, rot270, transpose, anti-transpose) would turn r x c boxes into
# c x r ones.
ROW_KEEPING_TRANSFORMS = (0, 2, 4, 5)
# The generator gives up once its failed attempts exceed this plus 10 per puzzle made: a
# success rate under about 1 in 11 means the request is out of reach, not unlucky.
GIVE_UP_AFTER = 100
GIVE_UP_PER_PUZZLE = 10

Cells = list[int]


def valid_solutions(grids: npt.NDArray[np.uint8], box: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """Per grid of `grids` `[k, n, n]`: does every row, column and box hold 1..n?"""
    rows, cols = box
    n = rows * cols
    # A unit of n cells holds each of 1..n once iff the union of its digits' bits is full.
    bits = np.left_shift(np.uint16(1), grids.astype(np.uint16)) & np.uint16(((1 << n) - 1) << 1)
    full = ((1 << n) - 1) << 1
    boxes = bits.reshape(len(grids), cols, rows, rows, cols).transpose(0, 1, 3, 2, 4)
    valid: npt.NDArray[np.bool_] = (
        (np.bitwise_or.reduce(bits, axis=2) == full).all(axis=1)
        & (np.bitwise_or.reduce(bits, axis=1) == full).all(axis=1)
        & (np.bitwise_or.reduce(boxes.reshape(len(grids), n, n), axis=2) == full).all(axis=1)
    )
    return valid


def first_violation(grid: Grid, box: tuple[int, int]) -> str:
    """The first row, column or box of a non-solution that does not hold 1..n, in words."""
    rows, cols = box
    n = rows * cols
    digits = set(range(1, n + 1))
    for r in range(n):
        if set(grid[r].tolist()) != digits:
            return f"row {r + 1} is {_digits(grid[r])}"
    for c in range(n):
        if set(grid[:, c].tolist()) != digits:
            return f"column {c + 1} is {_digits(grid[:, c])}"
    for b in range(n):
        cells = grid[b // rows * rows : (b // rows + 1) * rows, b % rows * cols :][:, :cols]
        if set(cells.reshape(-1).tolist()) != digits:
            return f"box {b + 1} is {_digits(cells.reshape(-1))}"
    raise ValueError("a valid solution has no violation")


def random_solution(box: tuple[int, int], rng: np.random.Generator) -> Cells:
    """A complete grid, filled by backtracking with the digits tried in random order."""
    n = box[0] * box[1]
    solution = _solve([0] * (n * n), box, rng)
    assert solution is not None  # an empty grid always has solutions
    return solution


def carve(
    solution: Cells, givens: int, box: tuple[int, int], rng: np.random.Generator
) -> Cells | None:
    """Blank the cells of `solution` in random order, each only if the puzzle keeps a
    unique solution, until `givens` remain; None if the grid runs out of removable cells.

    One pass suffices: a cell that cannot be blanked now cannot be later either, since
    blanking more cells only adds solutions. The puzzle stays unique iff no solution puts
    another digit in the blanked cell: one search for such a solution, instead of
    counting solutions (which would find the known one first).
    """
    puzzle = list(solution)
    remaining = len(puzzle)
    for cell in rng.permutation(len(puzzle)).tolist():
        if remaining == givens:
            break
        value, puzzle[cell] = puzzle[cell], 0
        if _solve(puzzle, box, None, banned=(cell, value)) is None:
            remaining -= 1
        else:
            puzzle[cell] = value
    return puzzle if remaining == givens else None


def generate(
    box: tuple[int, int],
    givens: int,
    count: int,
    rng: np.random.Generator,
    excluded_solutions: frozenset[bytes] = frozenset(),
) -> list[tuple[Grid, Grid]]:
    """Up to `count` distinct (puzzle, solution) pairs with `givens` givens and a unique
    solution, none solving to an excluded grid (their bytes). Fewer when attempts fail
    too often (see GIVE_UP_AFTER): the caller reports the shortfall."""
    n = box[0] * box[1]
    made: list[tuple[Grid, Grid]] = []
    seen: set[bytes] = set()
    failures = 0
    while len(made) < count and failures <= GIVE_UP_AFTER + GIVE_UP_PER_PUZZLE * len(made):
        solution = np.asarray(random_solution(box, rng), dtype=np.uint8).reshape(n, n)
        if solution.tobytes() in excluded_solutions:
            failures += 1
            continue
        carved = carve(solution.reshape(-1).tolist(), givens, box, rng)
        puzzle = None if carved is None else np.asarray(carved, dtype=np.uint8).reshape(n, n)
        if puzzle is None or puzzle.tobytes() in seen:
            failures += 1
            continue
        seen.add(puzzle.tobytes())
        made.append((puzzle, solution))
    return made


def draw_symmetry(
    box: tuple[int, int], rng: np.random.Generator
) -> tuple[int, npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """A random validity-keeping symmetry: (dihedral transform, row order, column order,
    colour permutation). Rows are reordered by permuting the bands and the rows within
    each band, columns likewise by stacks; digits 1..n are relabelled, 0 and n+1..9 stay.
    """
    rows, cols = box
    n = rows * cols
    transforms = range(8) if rows == cols else ROW_KEEPING_TRANSFORMS
    transform = int(rng.choice(transforms))
    row_order = np.concatenate([b * rows + rng.permutation(rows) for b in rng.permutation(cols)])
    col_order = np.concatenate([s * cols + rng.permutation(cols) for s in rng.permutation(rows)])
    colours = np.concatenate([[0], rng.permutation(n) + 1, np.arange(n + 1, 10)])
    return (
        transform,
        row_order.astype(np.uint8),
        col_order.astype(np.uint8),
        colours.astype(np.uint8),
    )


@functools.cache
def _units(box: tuple[int, int]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Row, column and box index of every flat cell."""
    rows, cols = box
    n = rows * cols
    cells = range(n * n)
    return (
        tuple(i // n for i in cells),
        tuple(i % n for i in cells),
        tuple(i // n // rows * rows + i % n // cols for i in cells),
    )


def _solve(
    cells: Cells,
    box: tuple[int, int],
    rng: np.random.Generator | None,
    banned: tuple[int, int] = (-1, 0),
) -> Cells | None:
    """The first solution of a puzzle (flat cells, 0 blank) whose givens do not clash, or
    None. Depth-first search over the blanks, most constrained cell first, with digit
    sets as bit masks; with `rng` each cell's digits are tried in random order; `banned`
    (cell, digit) keeps that digit out of that cell."""
    row_of, col_of, box_of = _units(box)
    n = box[0] * box[1]
    full = ((1 << n) - 1) << 1
    banned_cell, banned_bit = banned[0], 1 << banned[1]
    grid = list(cells)
    used_rows, used_cols, used_boxes = [0] * n, [0] * n, [0] * n
    for i, value in enumerate(grid):
        if value:
            used_rows[row_of[i]] |= 1 << value
            used_cols[col_of[i]] |= 1 << value
            used_boxes[box_of[i]] |= 1 << value
    blanks = [i for i, value in enumerate(grid) if not value]

    def descend(depth: int) -> bool:
        if depth == len(blanks):
            return True
        best, best_free, best_count = depth, 0, n + 1
        for k in range(depth, len(blanks)):
            i = blanks[k]
            free = full & ~(used_rows[row_of[i]] | used_cols[col_of[i]] | used_boxes[box_of[i]])
            if i == banned_cell:
                free &= ~banned_bit
            count = free.bit_count()
            if count < best_count:
                best, best_free, best_count = k, free, count
                if count <= 1:
                    break
        if not best_count:
            return False
        blanks[depth], blanks[best] = blanks[best], blanks[depth]
        i = blanks[depth]
        r, c, b = row_of[i], col_of[i], box_of[i]
        values = [v for v in range(1, n + 1) if best_free >> v & 1]
        if rng is not None:
            values = [values[k] for k in rng.permutation(len(values)).tolist()]
        for value in values:
            bit = 1 << value
            grid[i] = value
            used_rows[r] |= bit
            used_cols[c] |= bit
            used_boxes[b] |= bit
            if descend(depth + 1):
                return True
            used_rows[r] ^= bit
            used_cols[c] ^= bit
            used_boxes[b] ^= bit
        grid[i] = 0
        return False

    return grid if descend(0) else None


def _digits(values: npt.NDArray[np.uint8]) -> str:
    return "".join(str(v) for v in values.tolist())
