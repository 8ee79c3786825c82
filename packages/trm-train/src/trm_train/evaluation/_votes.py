"""Votes of the scorer: each crop un-augmented to its task's frame, the distinct grids
per test input counted (see `_scoring` for the rule).

Everything is batched with numpy: predictions are grouped by the shape of their grid in
the original frame and by dihedral transform, so each group is un-augmented by one
gather, and the distinct grids per test input are found by sorting row hashes.
"""

from __future__ import annotations

import functools
from typing import Any, cast

import attrs
import numpy as np
import numpy.typing as npt

from arc_data import COLOUR_OFFSET, DIHEDRAL_INVERSE, MAX_GRID_SIZE, ArcStore, Grid, dihedral

# The test-input id is prepended to each grid as 4 bytes, so the distinct rows of one
# shape are the distinct (test input, grid) pairs.
_ID_BYTES = 4
# Per-position offsets of the row hash (rows as 8-byte words: id bytes + up to 30 x 30).
_HASH_OFFSETS = np.random.default_rng(0x5C0BE).integers(
    0, 2**64, size=-(-(_ID_BYTES + MAX_GRID_SIZE**2) // 8), dtype=np.uint64
)
# Transforms that exchange rows and columns (rot90, rot270, transpose, anti-transpose).
_SWAPS = np.array([dihedral(np.zeros((1, 2), np.uint8), t).shape == (2, 1) for t in range(8)])


@attrs.frozen(eq=False)
class InputLayout:
    """Test inputs of the held-out tasks, numbered task by task in `test_tasks` order."""

    task_ids: tuple[str, ...]
    first_input: npt.NDArray[np.int64]  # [tasks + 1]
    expected: tuple[Grid | None, ...]  # [inputs]
    # Per index into `metadata.tasks`, the id of the task's first test input (-1: not held out).
    base_of_task_index: npt.NDArray[np.int64]

    @classmethod
    def of(cls, store: ArcStore) -> InputLayout:
        tasks = store.test_tasks
        if not tasks:
            raise ValueError(f"{store.path}: the store has no held-out test tasks to score")
        task_ids = tuple(tasks)
        counts = [len(tasks[t].test) for t in task_ids]
        first_input = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        position = {task_id: k for k, task_id in enumerate(task_ids)}
        base = np.full(len(store.metadata.tasks), -1, dtype=np.int64)
        for index, (subset, task_id) in enumerate(store.metadata.tasks):
            if subset == store.metadata.test_set and task_id in position:
                base[index] = first_input[position[task_id]]
        expected = tuple(pair.output for t in task_ids for pair in tasks[t].test)
        return cls(task_ids, first_input, expected, base)

    @property
    def num_inputs(self) -> int:
        return len(self.expected)


@attrs.frozen(eq=False)
class Votes:
    """Distinct (test input, grid) candidates, unranked."""

    inputs: npt.NDArray[np.int64]
    votes: npt.NDArray[np.int64]
    confidence: npt.NDArray[np.float64]  # mean
    first: npt.NDArray[np.int64]  # earliest prediction voting for it
    correct: npt.NDArray[np.bool_]
    grids: list[Grid]


def count_votes(
    store: ArcStore,
    layout: InputLayout,
    *,
    tokens: npt.NDArray[np.integer[Any]],
    shapes: npt.NDArray[np.int64],
    identifiers: npt.NDArray[np.int32],
    input_ids: npt.NDArray[np.int64],
    confidence: npt.NDArray[np.float64],
) -> Votes:
    """Un-augment the (non-empty) crops and count the distinct grids per test input."""
    size = store.metadata.grid_size
    transforms = store.identifier_transform[identifiers].astype(np.int64)
    swapped = _SWAPS[transforms]
    out_rows = np.where(swapped, shapes[:, 1], shapes[:, 0])
    out_cols = np.where(swapped, shapes[:, 0], shapes[:, 1])
    inverse_colours = np.argsort(store.identifier_colours[identifiers], axis=1).astype(np.uint8)
    row_orders, col_orders = store.identifier_row_orders, store.identifier_col_orders
    expected_by_shape = _expected_by_shape(layout)
    id_bytes = input_ids.astype(f">u{_ID_BYTES}").view(np.uint8).reshape(-1, _ID_BYTES)

    parts: list[tuple[npt.NDArray[Any], ...]] = []
    grids: list[Grid] = []
    # Group by the grid's shape in the original frame, then by transform within a shape.
    shape_key = out_rows * (size + 1) + out_cols
    for members in _groups(shape_key):
        rows, cols = int(out_rows[members[0]]), int(out_cols[members[0]])
        block = np.empty((len(members), _ID_BYTES + rows * cols), dtype=np.uint8)
        block[:, :_ID_BYTES] = id_bytes[members]
        for local in _groups(transforms[members]):
            chosen = members[local]
            transform = int(transforms[chosen[0]])
            crop_rows, crop_cols = (cols, rows) if _SWAPS[transform] else (rows, cols)
            canvases = tokens[chosen].reshape(-1, size, size)[:, :crop_rows, :crop_cols]
            flat = canvases.reshape(len(chosen), -1)[
                :, _inverse_order(crop_rows, crop_cols, transform)
            ]
            if row_orders is not None and col_orders is not None:
                flat = _restore_line_order(
                    flat.reshape(-1, rows, cols),
                    row_orders[identifiers[chosen]],
                    col_orders[identifiers[chosen]],
                )
            colours = (flat - COLOUR_OFFSET).astype(np.intp)
            block[local, _ID_BYTES:] = np.take_along_axis(inverse_colours[chosen], colours, axis=1)
        first, inverse = _distinct_rows(block)
        candidate_grids = block[first, _ID_BYTES:]
        candidate_inputs = input_ids[members[first]]
        correct = np.zeros(len(first), dtype=bool)
        if (rows, cols) in expected_by_shape:
            slot_of_input, expected = expected_by_shape[(rows, cols)]
            slots = slot_of_input[candidate_inputs]
            matches = (candidate_grids == expected[np.maximum(slots, 0)]).all(axis=1)
            correct = (slots >= 0) & matches
        counts = np.bincount(inverse, minlength=len(first))
        sums = np.bincount(inverse, weights=confidence[members], minlength=len(first))
        parts.append((candidate_inputs, counts, sums / counts, members[first], correct))
        grids.extend(candidate_grids.reshape(-1, rows, cols))
    if not parts:
        none = np.zeros(0, dtype=np.int64)
        return Votes(none, none, np.zeros(0), none, np.zeros(0, dtype=bool), [])
    inputs, counts, means, firsts, correct = (
        np.concatenate(column) for column in zip(*parts, strict=True)
    )
    return Votes(inputs, counts, means, firsts, correct, grids)


def _restore_line_order(
    grids: npt.NDArray[Any], row_orders: npt.NDArray[np.uint8], col_orders: npt.NDArray[np.uint8]
) -> npt.NDArray[Any]:
    """Undo the row and column reordering of Sudoku augmentations (row i of a reordered
    grid is row `row_order[i]` of the original) on `[n, rows, cols]` grids, flattened.
    A crop that cuts through the reordered lines cannot be mapped back; it is left as is
    (its shape differs from the answer's, so it can never match)."""
    count, rows, cols = grids.shape
    row_order = row_orders[:, :rows].astype(np.intp)
    col_order = col_orders[:, :cols].astype(np.intp)
    whole = (row_order.max(1) < rows) & (col_order.max(1) < cols)
    inverse_rows = np.argsort(row_order, axis=1)
    inverse_cols = np.argsort(col_order, axis=1)
    restored = grids[
        np.arange(count)[:, None, None], inverse_rows[:, :, None], inverse_cols[:, None, :]
    ]
    return np.where(whole[:, None, None], restored, grids).reshape(count, -1)


def _groups(keys: npt.NDArray[np.integer[Any]]) -> list[npt.NDArray[np.int64]]:
    """Positions of each distinct key, keys in increasing order, positions in order."""
    order = np.argsort(keys, kind="stable")
    cuts = np.flatnonzero(np.diff(keys[order])) + 1
    return [part.astype(np.int64) for part in np.split(order, cuts)] if len(keys) else []


def _distinct_rows(
    block: npt.NDArray[np.uint8],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The first row of each distinct row content, and each row's index into those.

    Sorting 64-bit row hashes is many times faster than sorting the rows themselves; the
    grouping is then checked exactly, and a hash collision falls back to the exact sort.
    """
    words = _as_words(block)
    hashes = _mix(words + _HASH_OFFSETS[: words.shape[1]]).sum(axis=1, dtype=np.uint64)
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    if not (block == block[first[inverse]]).all():
        _, first, inverse = np.unique(block, axis=0, return_index=True, return_inverse=True)
    return first.astype(np.int64), inverse.reshape(-1).astype(np.int64)


def _mix(z: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finaliser: every input bit moves about half the output bits (a plain
    multiply would let high input bytes reach only the high output bits: collisions)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _as_words(block: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    """Rows zero-padded to whole 8-byte words, read as uint64."""
    words = np.zeros((len(block), -(-block.shape[1] // 8) * 8), dtype=np.uint8)
    words[:, : block.shape[1]] = block
    return words.view(np.uint64)


@functools.cache
def _inverse_order(rows: int, cols: int, transform: int) -> npt.NDArray[np.intp]:
    """For a rows x cols augmented grid, the flat position of each original-frame cell."""
    cells = np.arange(rows * cols).reshape(rows, cols)
    # dihedral only moves cells around, so it works on positions as on colours.
    moved = dihedral(cast(Grid, cells), DIHEDRAL_INVERSE[transform])
    return np.ascontiguousarray(moved).reshape(-1).astype(np.intp)


def _expected_by_shape(
    layout: InputLayout,
) -> dict[tuple[int, int], tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]]:
    """Per output shape: the slot of each test input in a stack of the true outputs of that
    shape (-1 for the inputs whose output has another shape or is unknown), and the stack."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for input_id, grid in enumerate(layout.expected):
        if grid is not None:
            by_shape.setdefault((int(grid.shape[0]), int(grid.shape[1])), []).append(input_id)
    result = {}
    for shape, ids in by_shape.items():
        slots = np.full(layout.num_inputs, -1, dtype=np.int64)
        slots[ids] = np.arange(len(ids))
        stack = np.stack([cast(Grid, layout.expected[i]).reshape(-1) for i in ids])
        result[shape] = (slots, stack)
    return result
