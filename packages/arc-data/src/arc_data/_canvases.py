"""Token canvases of one task's augmented versions: each pair in each version, at its
canvas offset, as an input row and a label row."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from arc_data._augment import Versions, dihedral
from arc_data._encoding import COLOUR_OFFSET, EOS, PAD, VOCAB_SIZE
from arc_data._task import Grid, Pair

# Canvases encoded at once: the versions of an ARC task (a few pairs) mostly fit in one
# go, while a Sudoku task (thousands of pairs in every version) is encoded a slice of
# versions at a time, so memory stays near that of 2 x 16384 canvases whatever its size.
CHUNK_CANVASES = 1 << 14
# Dihedral transforms that exchange rows and columns (rot90, rot270, transpose, anti-transpose).
SWAPPING_TRANSFORMS = (1, 3, 6, 7)

Offsets = npt.NDArray[np.int64]


def version_chunks(num_versions: int, num_pairs: int) -> list[slice]:
    """Consecutive slices of versions holding at most CHUNK_CANVASES canvases (at least one
    version each)."""
    step = max(1, CHUNK_CANVASES // max(1, num_pairs))
    return [slice(start, start + step) for start in range(0, num_versions, step)]


def canvas_offsets(
    pairs: Sequence[Pair],
    transforms: npt.NDArray[np.uint8],
    size: int,
    rng: np.random.Generator | None,
) -> tuple[Offsets, Offsets]:
    """Canvas offsets `[versions, pairs]` of every pair: random where `rng` is given (the
    train split), except the first pair of each version; all (0, 0) without it."""
    shape = (len(transforms), len(pairs))
    if rng is None:
        return np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    heights = np.asarray([max(p.input.shape[0], _rows(p.output)) for p in pairs])
    widths = np.asarray([max(p.input.shape[1], _cols(p.output)) for p in pairs])
    swapped = np.isin(transforms, SWAPPING_TRANSFORMS)[:, None]
    room_rows = size - np.where(swapped, widths, heights)
    room_cols = size - np.where(swapped, heights, widths)
    rows = rng.integers(0, room_rows + 1, size=shape)
    cols = rng.integers(0, room_cols + 1, size=shape)
    rows[:, 0] = 0
    cols[:, 0] = 0
    return rows, cols


def encode_versions(
    pairs: Sequence[Pair], versions: Versions, rows: Offsets, cols: Offsets, size: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Token canvases `[len(versions) * len(pairs), size * size]` of inputs and labels,
    version-major; `rows` and `cols` are the offsets `[versions, pairs]`."""
    count = len(pairs)
    # Colour permutation of each version as a token lookup table (PAD and EOS fixed).
    lookup = np.empty((len(versions), VOCAB_SIZE), dtype=np.uint8)
    lookup[:, PAD] = PAD
    lookup[:, EOS] = EOS
    lookup[:, COLOUR_OFFSET:] = versions.colours + COLOUR_OFFSET
    inputs = np.zeros((len(versions), count, size, size), dtype=np.uint8)
    labels = np.zeros((len(versions), count, size, size), dtype=np.uint8)
    # The versions sharing a dihedral transform and the grids sharing a shape are written
    # at once: their patches permuted and scattered to their offsets, cells beyond the
    # canvas dropped.
    for transform in np.unique(versions.transforms).tolist():
        group = np.flatnonzero(versions.transforms == transform)
        for canvases, grids in (
            (inputs, [pair.input for pair in pairs]),
            (labels, [pair.output for pair in pairs]),
        ):
            for members in _same_shape(grids):
                stack = np.stack([grids[e] for e in members.tolist()])
                patches = _patches(stack, transform, versions, group)
                patch_rows, patch_cols = _cell_coordinates(*patches.shape[2:])
                target_rows = rows[group[:, None], members][:, :, None] + patch_rows
                target_cols = cols[group[:, None], members][:, :, None] + patch_cols
                inside = (target_rows < size) & (target_cols < size)
                canvas = group[:, None, None] * count + members[None, :, None]
                target = (canvas * size + target_rows) * size + target_cols
                tables = lookup[group]
                tokens = patches.reshape(len(patches), -1)
                # A shared patch is one gather for the whole group.
                values = (
                    tables[:, tokens[0]]
                    if len(tokens) == 1
                    else np.take_along_axis(tables, tokens, axis=1)
                ).reshape(target.shape)
                canvases.reshape(-1)[target[inside]] = values[inside]
    shape = (len(versions) * count, size * size)
    return inputs.reshape(shape), labels.reshape(shape)


def _same_shape(grids: Sequence[Grid | None]) -> list[npt.NDArray[np.int64]]:
    """Positions of the grids of each shape (missing outputs left out), in order."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for e, grid in enumerate(grids):
        if grid is not None:
            by_shape.setdefault(grid.shape, []).append(e)
    return [np.asarray(members, dtype=np.int64) for members in by_shape.values()]


def _patches(
    stack: npt.NDArray[np.uint8], transform: int, versions: Versions, group: npt.NDArray[np.int64]
) -> npt.NDArray[np.uint8]:
    """Tokens `[k, m, h + 1, w + 1]` of the m transformed grids of `stack` `[m, h, w]`, each
    with the EOS row below and EOS column right (the corner PAD): shared by the versions of
    the group (k = 1) unless they reorder lines, then one set per version of the group."""
    if versions.row_orders is None or versions.col_orders is None:
        reordered = stack[None]
    else:
        row_orders = _extend(versions.row_orders[group], stack.shape[1])
        col_orders = _extend(versions.col_orders[group], stack.shape[2])
        reordered = stack[:, row_orders[:, :, None], col_orders[:, None, :]].swapaxes(0, 1)
    positions = _positions(stack.shape[1], stack.shape[2], transform)
    moved = reordered.reshape(*reordered.shape[:2], -1)[:, :, positions]
    height, width = positions.shape
    patches = np.full((*reordered.shape[:2], height + 1, width + 1), EOS, dtype=np.uint8)
    patches[:, :, :height, :width] = moved + COLOUR_OFFSET
    patches[:, :, height, width] = PAD
    return patches


def _extend(orders: npt.NDArray[np.uint8], length: int) -> npt.NDArray[np.intp]:
    """Line orders `[k, n]` for `length` lines: lines from n on stay in place."""
    tail = np.broadcast_to(
        np.arange(orders.shape[1], length), (len(orders), length - orders.shape[1])
    )
    return np.concatenate([orders.astype(np.intp), tail], axis=1)


@functools.cache
def _positions(height: int, width: int, transform: int) -> npt.NDArray[np.intp]:
    """Flat cell of a height x width grid that each cell of its transform comes from."""
    return dihedral(np.arange(height * width, dtype=np.intp).reshape(height, width), transform)


@functools.cache
def _cell_coordinates(height: int, width: int) -> npt.NDArray[np.int64]:
    """Row and column of every cell of a height x width patch, `[2, 1, 1, cells]`."""
    return np.indices((height, width)).reshape(2, 1, 1, -1)


def _rows(grid: npt.NDArray[np.uint8] | None) -> int:
    return 0 if grid is None else int(grid.shape[0])


def _cols(grid: npt.NDArray[np.uint8] | None) -> int:
    return 0 if grid is None else int(grid.shape[1])
