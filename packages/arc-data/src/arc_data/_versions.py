"""Drawing a task's distinct versions: the identity and up to `num_aug` augmentations
whose task contents differ, for ARC tasks (any dihedral transform and colour permutation),
tasks with fixed colours (dihedral transforms alone) and Sudoku tasks (symmetries that
keep the puzzle valid)."""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from arc_data._augment import DIHEDRAL_NAMES, Augmentation, Versions, dihedral
from arc_data._sudoku import draw_symmetry
from arc_data._task import NUM_COLOURS, Grid, Task

# Colours 1..9 by index 0..8: a permutation of 0..8 as one of colours 1..9.
_SHIFTED_COLOURS = np.arange(1, 10, dtype=np.uint8)
RETRY_FACTOR = 5

# (dihedral transform, colour permutation, row order, column order) of one version; the
# orders are None for tasks whose augmentations do not reorder lines.
Candidate = tuple[
    int, npt.NDArray[np.uint8], npt.NDArray[np.uint8] | None, npt.NDArray[np.uint8] | None
]
# A family of augmentations: its identity, a draw from a generator, and the content key
# that tells versions apart.
Family = tuple[Candidate, Callable[[np.random.Generator], Candidate], Callable[[Candidate], bytes]]


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
