"""Invertible augmentations: the 8 dihedral transforms and permutations of colours 1..9,
for Sudoku tasks reorderings of rows and columns that keep the puzzle valid, and for
tasks whose colours have fixed meanings (mazes) the dihedral transforms alone."""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Iterable
from typing import TypeVar

import attrs
import numpy as np
import numpy.typing as npt

from arc_data._sudoku import draw_symmetry
from arc_data._task import NUM_COLOURS, Grid, Task

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
# Colours 1..9 by index 0..8: a permutation of 0..8 as one of colours 1..9.
_SHIFTED_COLOURS = np.arange(1, 10, dtype=np.uint8)
RETRY_FACTOR = 5

Cell = TypeVar("Cell", bound=np.generic)
# (dihedral transform, colour permutation, row order, column order) of one version; the
# orders are None for tasks whose augmentations do not reorder lines.
Candidate = tuple[
    int, npt.NDArray[np.uint8], npt.NDArray[np.uint8] | None, npt.NDArray[np.uint8] | None
]
# A family of augmentations: its identity, a draw from a generator, and the content key
# that tells versions apart.
Family = tuple[Candidate, Callable[[np.random.Generator], Candidate], Callable[[Candidate], bytes]]


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


def sample_augmentations(task: Task, num_aug: int, rng: np.random.Generator) -> list[Augmentation]:
    """The identity followed by up to `num_aug` augmentations giving distinct task contents.

    Candidates whose augmented task equals one already kept (symmetric tasks, unused
    colours) are rejected; at most `RETRY_FACTOR * num_aug` candidates are drawn. A
    Sudoku task (`task.sudoku_box`) draws only symmetries that keep it a valid Sudoku. A
    task with fixed colours (`task.fixed_colours`) keeps its colours and tries each of the
    7 other dihedral transforms once, in random order: at most 7 augmentations.
    """
    versions = sample_versions(task, num_aug, rng)
    return [versions.augmentation(k) for k in range(len(versions))]


def sample_versions(task: Task, num_aug: int, rng: np.random.Generator) -> Versions:
    """`sample_augmentations` as arrays."""
    if task.fixed_colours:
        return _dihedral_versions(task, num_aug, rng)
    if task.sudoku_box is None:
        return _arc_versions(task, num_aug, rng)
    identity, draw, key = _sudoku_family(task, task.sudoku_box)
    kept = [identity]
    seen = {key(identity)}
    for _ in range(RETRY_FACTOR * num_aug):
        if len(kept) > num_aug:
            break
        candidate = draw(rng)
        content = key(candidate)
        if content not in seen:
            seen.add(content)
            kept.append(candidate)
    transforms = np.asarray([c[0] for c in kept], dtype=np.uint8)
    colours = np.stack([c[1] for c in kept])
    return Versions(
        transforms,
        colours,
        np.stack([c[2] for c in kept if c[2] is not None]),
        np.stack([c[3] for c in kept if c[3] is not None]),
    )


def _arc_versions(task: Task, num_aug: int, rng: np.random.Generator) -> Versions:
    """ARC augmentations (any dihedral, colours 1..9), drawn as `sample_versions` draws
    them; the loop is spelled out (no candidate tuples, colours as bytes) as it runs
    for every draw of every task."""
    classes, firsts = _content_classes(task)
    # The colours of a permutation that tell contents apart under each transform (0
    # first, which stays 0: a getter of one item would not return a tuple).
    getters = [operator.itemgetter(0, *colours) for colours in firsts]
    identity = bytes(range(10))
    transforms = [0]
    colours = [identity]
    seen = {(classes[0], getters[0](identity))}
    integers, permutation = rng.integers, rng.permutation
    for _ in range(RETRY_FACTOR * num_aug):
        if len(transforms) > num_aug:
            break
        transform = int(integers(0, 8))
        perm = b"\0" + _SHIFTED_COLOURS[permutation(9)].tobytes()
        content = (classes[transform], getters[transform](perm))
        if content not in seen:
            seen.add(content)
            transforms.append(transform)
            colours.append(perm)
    return Versions(
        np.asarray(transforms, dtype=np.uint8),
        np.frombuffer(b"".join(colours), dtype=np.uint8).reshape(-1, 10).copy(),
    )


def _dihedral_versions(task: Task, num_aug: int, rng: np.random.Generator) -> Versions:
    """The identity and up to `num_aug` of the other 7 dihedral transforms, each tried
    once in random order and kept if it gives new task contents; colours stay."""
    classes, firsts = _content_classes(task)

    def key(transform: int) -> bytes:
        return bytes((classes[transform], *firsts[transform]))

    kept = [0]
    seen = {key(0)}
    for transform in (rng.permutation(len(DIHEDRAL_NAMES) - 1) + 1).tolist():
        if len(kept) > num_aug:
            break
        content = key(transform)
        if content not in seen:
            seen.add(content)
            kept.append(transform)
    identity = np.arange(10, dtype=np.uint8)
    return Versions(np.asarray(kept, dtype=np.uint8), np.tile(identity, (len(kept), 1)))


def _content_classes(task: Task) -> tuple[list[int], list[list[int]]]:
    """What tells the task's contents apart under each dihedral transform t and colour
    permutation p, cheaper to compare than the contents themselves.

    Write the task's grids under t as one sequence (and their shapes). A sequence is its
    pattern (each cell replaced by the rank of its colour in order of first appearance)
    and that order of colours, `firsts[t]`; a permutation keeps the pattern and permutes
    the order. So the contents under (t, p) and (t', p') are equal exactly when t and t'
    give the same shapes and pattern (`classes[t] == classes[t']`, the first transform
    giving them) and `p[firsts[t]] == p'[firsts[t']]`.
    """
    # Grids of one shape are transformed at once. The order of the grids is the same for
    # every transform, so it does not change which contents are equal.
    by_shape: dict[tuple[int, ...], list[Grid]] = {}
    for grid in task.grids():
        by_shape.setdefault(grid.shape, []).append(grid)
    stacks = [np.stack(grids) for grids in by_shape.values()]
    patterns: dict[bytes, int] = {}
    classes: list[int] = []
    firsts: list[list[int]] = []
    for transform in range(len(DIHEDRAL_NAMES)):
        moved = [dihedral(stack, transform) for stack in stacks]
        cells = b"".join(m.tobytes() for m in moved)
        # As bytes: find and translate scan the cells in C, no array built per colour.
        found = {cells.find(colour): colour for colour in range(NUM_COLOURS)}
        order = [found[at] for at in sorted(found) if at >= 0]
        ranks = bytearray(256)
        for rank, colour in enumerate(order):
            ranks[colour] = rank
        # The shapes, then the pattern (bytes 0..9, never the "|" that ends the shapes).
        shapes = repr([m.shape for m in moved]).encode()
        classes.append(patterns.setdefault(shapes + b"|" + cells.translate(ranks), transform))
        firsts.append(order)
    return classes, firsts


def _sudoku_family(task: Task, box: tuple[int, int]) -> Family:
    """Identity, draw and content key of Sudoku symmetries (every grid is n x n)."""
    side = box[0] * box[1]
    flat = np.stack([g.reshape(-1) for g in task.grids()])
    cells = np.arange(side * side).reshape(side, side)

    def key(candidate: Candidate) -> bytes:
        transform, perm, rows, cols = candidate
        assert rows is not None and cols is not None
        # The flat cell each augmented cell comes from, the same for every grid.
        source = dihedral(cells[rows][:, cols], transform).reshape(-1)
        return hashlib.blake2b(perm[flat[:, source]].tobytes(), digest_size=16).digest()

    def draw(rng: np.random.Generator) -> Candidate:
        transform, rows, cols, perm = draw_symmetry(box, rng)
        return transform, perm, rows, cols

    identity = np.arange(side, dtype=np.uint8)
    return (0, np.arange(10, dtype=np.uint8), identity, identity), draw, key


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
