"""Token canvases of one task's augmented versions: each pair in each version, at its
canvas offset, as an input row and a label row."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from arc_data._augment import DIHEDRAL_NAMES, Cell, Versions, dihedral
from arc_data._encoding import COLOUR_OFFSET, EOS, PAD, VOCAB_SIZE
from arc_data._task import Grid, Pair

# Canvases and grid cells encoded at once: the versions of an ARC task (a few pairs) mostly
# fit in one go, while a Sudoku task (thousands of pairs in every version) or a task of
# large grids at many versions is encoded a slice of versions at a time, so memory stays
# near that of 2 x 16384 canvases and a few index arrays of 2**20 cells whatever its size.
CHUNK_CANVASES = 1 << 14
CHUNK_CELLS = 1 << 20
# Per dihedral transform, whether it exchanges rows and columns (rot90, rot270, transpose,
# anti-transpose).
SWAPS = np.array([False, True, False, True, False, False, True, True])

Offsets = npt.NDArray[np.int64]
Tokens = npt.NDArray[np.uint8]
Indices = npt.NDArray[np.intp]


def version_chunks(num_versions: int, pairs: Sequence[Pair]) -> list[slice]:
    """Consecutive slices of versions holding at most CHUNK_CANVASES canvases and about
    CHUNK_CELLS grid cells (at least one version each). The slicing does not change the
    canvases, only how many are encoded at once."""
    cells = sum(_cells(pair.input) + _cells(pair.output) for pair in pairs)
    step = max(1, min(CHUNK_CANVASES // max(1, len(pairs)), CHUNK_CELLS // max(1, cells)))
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
    swapped = SWAPS[transforms][:, None]
    room_rows = size - np.where(swapped, widths, heights)
    room_cols = size - np.where(swapped, heights, widths)
    rows = rng.integers(0, room_rows + 1, size=shape)
    cols = rng.integers(0, room_cols + 1, size=shape)
    rows[:, 0] = 0
    cols[:, 0] = 0
    return rows, cols


def encode_versions(
    pairs: Sequence[Pair], versions: Versions, rows: Offsets, cols: Offsets, size: int
) -> tuple[Tokens, Tokens]:
    """Token canvases `[len(versions) * len(pairs), size, size]` of inputs and labels,
    version-major (views, not contiguous); `rows` and `cols` are the offsets
    `[versions, pairs]`."""
    num, count = len(versions), len(pairs)
    # Colour permutation of each version as a token lookup table (PAD and EOS fixed).
    lookup = np.empty((num, VOCAB_SIZE), dtype=np.uint8)
    lookup[:, PAD] = PAD
    lookup[:, EOS] = EOS
    lookup[:, COLOUR_OFFSET:] = versions.colours + COLOUR_OFFSET
    # Canvases are written into frames one row and one column wider, so that the EOS
    # border of a grid touching the canvas edge lands in the margin, cropped at the end
    # (cheaper than testing every cell): all the input frames, then all the label frames.
    # Grid e < count of a version is its pair e's input, count + e that pair's output;
    # `starts` `[versions, 2 * count]` is where each grid begins.
    side = size + 1
    grids = [pair.input for pair in pairs] + [pair.output for pair in pairs]
    layout = _Layout(grids, versions, side)
    frames = np.zeros((2, num * count, side, side), dtype=np.uint8)
    if layout.owners.size:
        canvas = np.arange(num * count, dtype=np.int64).reshape(num, count)
        canvas = np.concatenate([canvas, canvas + num * count], axis=1)
        starts = (canvas * side + np.tile(rows, 2)) * side + np.tile(cols, 2)
        # Versions sorted by template, so that each template serves a contiguous slice.
        order = np.argsort(layout.keys, kind="stable")
        keys = layout.keys[order]
        bounds = np.flatnonzero(np.diff(keys)) + 1
        targets = np.take(starts[order], layout.owners, axis=1)
        values = np.empty(targets.shape, dtype=np.uint8)
        tables = lookup[order]
        for first, last in zip([0, *bounds.tolist()], [*bounds.tolist(), num], strict=True):
            key = int(keys[first])
            targets[first:last] += layout.places[key]
            values[first:last] = np.take(tables[first:last], layout.patterns[key], axis=1)
        # Every cell of every canvas of the slice in one scatter.
        frames.reshape(-1)[targets] = values
    return frames[0, :, :size, :size], frames[1, :, :size, :size]


class _Layout:
    """Where each cell of a set of grids (None for a missing one) goes under each version:
    flat arrays over the cells of all the grids and their EOS borders (without the PAD
    corner, which the zeroed canvas holds).

    Per template (one per dihedral transform, or one per version when versions reorder
    lines), `patterns` `[templates, cells]` are the tokens before the colour permutation
    and `places` `[templates, cells]` the offsets in a canvas frame of `side` columns;
    `owners` `[cells]` is the grid of each cell (the same for every template) and `keys`
    `[versions]` the template of each version.
    """

    def __init__(self, grids: Sequence[Grid | None], versions: Versions, side: int) -> None:
        reorders = versions.row_orders is not None and versions.col_orders is not None
        templates = len(versions) if reorders else len(DIHEDRAL_NAMES)
        pattern_parts: list[npt.NDArray[np.uint8]] = []
        place_parts: list[Indices] = []
        owner_parts: list[Indices] = []
        for members in _same_shape(grids):
            stack = np.stack([grids[e] for e in members.tolist()])
            count, height, width = stack.shape
            # Each grid's tokens followed by one EOS, which the border cells take.
            tokens = np.full((count, height * width + 1), EOS, dtype=np.uint8)
            tokens[:, :-1] = stack.reshape(count, -1) + COLOUR_OFFSET
            if reorders:
                assert versions.row_orders is not None and versions.col_orders is not None
                source, place = _reordered_templates(
                    height,
                    width,
                    versions,
                    _extend(versions.row_orders, height),
                    _extend(versions.col_orders, width),
                    side,
                )
            else:
                source, place = _dihedral_templates(height, width, side)
            cells = source.shape[1]
            # np.take and np.tile: cheaper than the indexing and broadcasting alike.
            taken = np.take(tokens, source, axis=1)
            pattern_parts.append(taken.transpose(1, 0, 2).reshape(templates, -1))
            place_parts.append(np.tile(place, (1, count)))
            owner_parts.append(np.repeat(members, cells))
        self.patterns: npt.NDArray[np.uint8] = _join(pattern_parts, templates, np.uint8)
        self.places: Indices = _join(place_parts, templates, np.intp)
        self.owners: Indices = np.concatenate(owner_parts) if owner_parts else np.zeros(0, np.intp)
        self.keys: Indices = (
            np.arange(len(versions)) if reorders else versions.transforms.astype(np.intp)
        )


def _same_shape(grids: Sequence[Grid | None]) -> list[npt.NDArray[np.int64]]:
    """Positions of the grids of each shape (missing outputs left out), in order."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for e, grid in enumerate(grids):
        if grid is not None:
            by_shape.setdefault(grid.shape, []).append(e)
    return [np.asarray(members, dtype=np.int64) for members in by_shape.values()]


def _join(parts: list[npt.NDArray[Cell]], templates: int, dtype: type[Cell]) -> npt.NDArray[Cell]:
    return np.concatenate(parts, axis=1) if parts else np.zeros((templates, 0), dtype=dtype)


@functools.cache
def _dihedral_templates(height: int, width: int, side: int) -> tuple[Indices, Indices]:
    """`_reordered_templates` of a grid whose lines stay in place, for each of the 8
    dihedral transforms: sources and places `[8, cells]` (shared: read-only)."""
    templates = [
        _bordered(_positions(height, width, t), height * width, side)
        for t in range(len(DIHEDRAL_NAMES))
    ]
    sources, places = np.stack([t[0] for t in templates]), np.stack([t[1] for t in templates])
    sources.flags.writeable = places.flags.writeable = False
    return sources, places


def _reordered_templates(
    height: int,
    width: int,
    versions: Versions,
    rows: Indices,
    cols: Indices,
    side: int,
) -> tuple[Indices, Indices]:
    """Per version, source and frame place `[versions, cells]` of each cell of a height x
    width grid under its reordering of lines `rows`, `cols` `[versions, n]` then its
    dihedral transform, with the EOS row below and EOS column right."""
    cells = np.arange(height * width, dtype=np.intp).reshape(height, width)
    templates = [
        _bordered(dihedral(cells[r][:, c], t), height * width, side)
        for t, r, c in zip(versions.transforms.tolist(), rows, cols, strict=True)
    ]
    return np.stack([t[0] for t in templates]), np.stack([t[1] for t in templates])


def _bordered(order: Indices, eos: int, side: int) -> tuple[Indices, Indices]:
    """Cells of the transformed grid `order` (source cell of each) and its EOS border
    (source `eos`), row-major, without the corner (PAD, which the zeroed canvas holds)."""
    height, width = order.shape
    source = np.full((height + 1, width + 1), eos, dtype=np.intp)
    source[:height, :width] = order
    place = np.arange(height + 1)[:, None] * side + np.arange(width + 1)
    return source.reshape(-1)[:-1], place.reshape(-1)[:-1].astype(np.intp)


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


def _cells(grid: Grid | None) -> int:
    """Cells a grid and its EOS border fill."""
    return 0 if grid is None else (grid.shape[0] + 1) * (grid.shape[1] + 1)


def _rows(grid: npt.NDArray[np.uint8] | None) -> int:
    return 0 if grid is None else int(grid.shape[0])


def _cols(grid: npt.NDArray[np.uint8] | None) -> int:
    return 0 if grid is None else int(grid.shape[1])
