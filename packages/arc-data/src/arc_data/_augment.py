"""Invertible augmentations: the 8 dihedral transforms and permutations of colours 1..9,
for Sudoku tasks reorderings of rows and columns that keep the puzzle valid, and for
tasks whose colours have fixed meanings (mazes) the dihedral transforms alone."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import attrs
import numpy as np
import numpy.typing as npt

from arc_data._task import Grid

DIHEDRAL_NAMES = (
    "identity",
    "rot90",
    "rot180",
    "rot270",
    "flip_lr",
    "flip_ud",
    "transpose",
    "anti_transpose",
)
# Index of the transform that undoes each one.
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)
IDENTITY_PERMUTATION = tuple(range(10))

Cell = TypeVar("Cell", bound=np.generic)


def dihedral(grid: npt.NDArray[Cell], transform: int) -> npt.NDArray[Cell]:
    """One of the 8 symmetries of the square, by index into `DIHEDRAL_NAMES` (a view);
    of each grid of a stack `[..., h, w]` alike.

    rot90 turns counter-clockwise like `np.rot90`; anti_transpose is `fliplr(rot90(grid))`.
    """
    if transform == 0:
        return grid
    if transform == 1:
        return grid.swapaxes(-1, -2)[..., ::-1, :]
    if transform == 2:
        return grid[..., ::-1, ::-1]
    if transform == 3:
        return grid.swapaxes(-1, -2)[..., ::-1]
    if transform == 4:
        return grid[..., ::-1]
    if transform == 5:
        return grid[..., ::-1, :]
    if transform == 6:
        return grid.swapaxes(-1, -2)
    if transform == 7:
        return grid.swapaxes(-1, -2)[..., ::-1, ::-1]
    raise ValueError(f"dihedral transform {transform} is not in 0..7")


def _canonical_order(order: Iterable[int]) -> tuple[int, ...]:
    # Trailing lines that stay in place change nothing: without them, orders that act
    # alike compare equal, and an order fits any grid with at least its length of lines.
    values = [int(v) for v in order]
    while values and values[-1] == len(values) - 1:
        values.pop()
    return tuple(values)


def _check_order(
    _: object, attribute: attrs.Attribute[tuple[int, ...]], value: tuple[int, ...]
) -> None:
    if sorted(value) != list(range(len(value))):
        raise ValueError(f"{attribute.name} {value} is not a permutation of 0..{len(value) - 1}")


@attrs.frozen
class Augmentation:
    """A reordering of rows and columns, a dihedral transform and a colour permutation
    (background 0 stays 0), applied in this order.

    Row i of the reordered grid is row `row_order[i]` of the original; rows from
    `len(row_order)` on stay in place (columns alike). ARC tasks are never reordered;
    Sudoku tasks permute bands and the rows within each band (stacks and columns alike).
    """

    transform: int = attrs.field(default=0)
    colours: tuple[int, ...] = attrs.field(default=IDENTITY_PERMUTATION)
    row_order: tuple[int, ...] = attrs.field(
        default=(), converter=_canonical_order, validator=_check_order
    )
    col_order: tuple[int, ...] = attrs.field(
        default=(), converter=_canonical_order, validator=_check_order
    )

    @transform.validator
    def _check_transform(self, _: attrs.Attribute[int], value: int) -> None:
        if not 0 <= value < len(DIHEDRAL_NAMES):
            raise ValueError(f"dihedral transform {value} is not in 0..7")

    @colours.validator
    def _check_colours(self, _: attrs.Attribute[tuple[int, ...]], value: tuple[int, ...]) -> None:
        if sorted(value) != list(range(10)) or value[0] != 0:
            raise ValueError(f"{value} is not a permutation of 0..9 fixing 0")

    @property
    def is_identity(self) -> bool:
        return (
            self.transform == 0
            and self.colours == IDENTITY_PERMUTATION
            and not self.row_order
            and not self.col_order
        )

    def apply(self, grid: Grid) -> Grid:
        """Original frame -> augmented frame."""
        reordered = _reorder(grid, self.row_order, self.col_order)
        return np.ascontiguousarray(
            np.asarray(self.colours, dtype=np.uint8)[dihedral(reordered, self.transform)]
        )

    def invert(self, grid: Grid) -> Grid:
        """Augmented frame -> original frame: inverse dihedral, inverse colours, then the
        inverse reordering."""
        inverse_colours = np.argsort(np.asarray(self.colours)).astype(np.uint8)
        restored = inverse_colours[dihedral(grid, DIHEDRAL_INVERSE[self.transform])]
        rows, cols = (tuple(np.argsort(o).tolist()) for o in (self.row_order, self.col_order))
        return np.ascontiguousarray(_reorder(restored, rows, cols))

    def describe(self) -> str:
        text = f"{DIHEDRAL_NAMES[self.transform]}, colours {''.join(map(str, self.colours))}"
        if self.row_order or self.col_order:
            text += f", rows {_listing(self.row_order)}, columns {_listing(self.col_order)}"
        return text


@attrs.frozen(eq=False)
class Versions:
    """One task's augmentations as arrays, version 0 the identity: dihedral transforms
    `[V]`, colour permutations `[V, 10]` and row and column orders `[V, n]` (both None for
    tasks whose augmentations do not reorder lines)."""

    transforms: npt.NDArray[np.uint8]
    colours: npt.NDArray[np.uint8]
    row_orders: npt.NDArray[np.uint8] | None = None
    col_orders: npt.NDArray[np.uint8] | None = None

    def __len__(self) -> int:
        return len(self.transforms)

    def __getitem__(self, index: slice) -> Versions:
        return Versions(
            self.transforms[index],
            self.colours[index],
            None if self.row_orders is None else self.row_orders[index],
            None if self.col_orders is None else self.col_orders[index],
        )

    def augmentation(self, k: int) -> Augmentation:
        return Augmentation(
            int(self.transforms[k]),
            tuple(int(c) for c in self.colours[k]),
            () if self.row_orders is None else self.row_orders[k].tolist(),
            () if self.col_orders is None else self.col_orders[k].tolist(),
        )


def _reorder(grid: Grid, row_order: tuple[int, ...], col_order: tuple[int, ...]) -> Grid:
    if row_order:
        grid = grid[_full_order(row_order, grid.shape[0], "rows")]
    if col_order:
        grid = grid[:, _full_order(col_order, grid.shape[1], "columns")]
    return grid


def _full_order(order: tuple[int, ...], length: int, lines: str) -> npt.NDArray[np.intp]:
    if length < len(order):
        raise ValueError(f"a grid of {length} {lines} cannot take the order {order} of {lines}")
    return np.concatenate([np.asarray(order, dtype=np.intp), np.arange(len(order), length)])


def _listing(order: tuple[int, ...]) -> str:
    return ",".join(map(str, order)) or "unchanged"
