"""Generated Sudoku (`sudoku:N`) and its augmentation, checked by an independent checker and
solution counter written here (plain loops over rows, columns and boxes)."""

from __future__ import annotations

import numpy as np
import pytest

from arc_data import ArcDataError, Augmentation, Task, parse_source, sample_augmentations

BOXES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}


def is_solution(grid: np.ndarray, box: tuple[int, int]) -> bool:
    """Every row, column and box holds 1..n exactly once."""
    box_rows, box_cols = box
    n = box_rows * box_cols
    digits = set(range(1, n + 1))
    units = [list(grid[r]) for r in range(n)] + [list(grid[:, c]) for c in range(n)]
    for top in range(0, n, box_rows):
        for left in range(0, n, box_cols):
            units.append(list(grid[top : top + box_rows, left : left + box_cols].reshape(-1)))
    return all(len(unit) == n and set(unit) == digits for unit in units)


def count_solutions(puzzle: np.ndarray, box: tuple[int, int], limit: int = 2) -> int:
    """Plain backtracking: fill the first blank with every digit its units allow."""
    grid = puzzle.astype(int).tolist()
    box_rows, box_cols = box
    n = box_rows * box_cols

    def allowed(r: int, c: int, d: int) -> bool:
        top, left = r - r % box_rows, c - c % box_cols
        return (
            d not in grid[r]
            and all(grid[k][c] != d for k in range(n))
            and all(
                grid[i][j] != d
                for i in range(top, top + box_rows)
                for j in range(left, left + box_cols)
            )
        )

    def count() -> int:
        for r in range(n):
            for c in range(n):
                if grid[r][c] == 0:
                    total = 0
                    for d in range(1, n + 1):
                        if allowed(r, c, d):
                            grid[r][c] = d
                            total += count()
                            grid[r][c] = 0
                            if total >= limit:
                                return total
                    return total
        return 1

    return count()


def generated(spec: str, seed: int) -> Task:
    source = parse_source(spec, seed=seed)
    (subset,) = source.subsets()
    (task,) = source.read(subset)
    return task


def test_independent_checker_on_hand_made_grids() -> None:
    good = np.array([[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]])
    assert is_solution(good, (2, 2))
    # A Latin square whose top-left box repeats 1 and 2: rows and columns are fine.
    latin = np.array([[1, 2, 3, 4], [2, 1, 4, 3], [3, 4, 1, 2], [4, 3, 2, 1]])
    assert not is_solution(latin, (2, 2))
    # Blanking (0, 0) leaves one solution; blanking a whole 2 x 2 rectangle of 1s and 2s
    # that can swap leaves two.
    puzzle = good.copy()
    puzzle[0, 0] = 0
    assert count_solutions(puzzle, (2, 2)) == 1
    puzzle[[0, 0, 2, 2], [0, 1, 0, 1]] = 0
    assert count_solutions(puzzle, (2, 2)) == 2


@pytest.mark.parametrize(("side", "givens"), [(4, 5), (6, 10)])
def test_generated_puzzles_are_valid_unique_and_disjoint(side: int, givens: int) -> None:
    task = generated(f"sudoku:{side}?train=40&test=10&givens={givens}", seed=3)
    box = BOXES[side]
    assert (task.task_id, task.subset, task.sudoku_box) == (f"sudoku{side}",) * 2 + (box,)
    assert len(task.train) == 40 and len(task.test) == 10
    for pair in (*task.train, *task.test):
        assert pair.output is not None and pair.input.shape == (side, side)
        assert is_solution(pair.output, box)
        given = pair.input != 0
        assert given.sum() == givens
        np.testing.assert_array_equal(pair.input[given], pair.output[given])
        assert count_solutions(pair.input, box) == 1
    puzzles = {p.input.tobytes() for p in (*task.train, *task.test)}
    assert len(puzzles) == 50
    train_solutions = {p.output.tobytes() for p in task.train if p.output is not None}
    test_solutions = {p.output.tobytes() for p in task.test if p.output is not None}
    assert not train_solutions & test_solutions


def test_nine_by_nine_puzzles_are_valid_with_the_default_26_givens() -> None:
    task = generated("sudoku:9?train=4&test=2", seed=0)
    assert task.sudoku_box == (3, 3)
    for pair in (*task.train, *task.test):
        assert pair.output is not None and is_solution(pair.output, (3, 3))
        given = pair.input != 0
        assert given.sum() == 26
        np.testing.assert_array_equal(pair.input[given], pair.output[given])


def test_four_by_four_train_avoids_every_held_out_solution() -> None:
    # 100 held-out puzzles occupy a good part of the 288 4 x 4 solution grids, so a
    # generator that ignored them would hit them often.
    task = generated("sudoku:4?train=300&test=100&givens=6", seed=1)
    test_solutions = {p.output.tobytes() for p in task.test if p.output is not None}
    assert len(test_solutions) > 50
    assert all(
        p.output is not None and p.output.tobytes() not in test_solutions for p in task.train
    )


def test_generation_is_deterministic_and_held_out_set_ignores_the_train_count() -> None:
    def grids(task: Task) -> list[bytes]:
        return [
            p.input.tobytes() + p.output.tobytes()
            for p in (*task.train, *task.test)
            if p.output is not None
        ]

    first = generated("sudoku:6?train=10&test=5", seed=8)
    assert grids(first) == grids(generated("sudoku:6?train=10&test=5", seed=8))
    assert grids(first) != grids(generated("sudoku:6?train=10&test=5", seed=9))
    more = generated("sudoku:6?train=20&test=5", seed=8)
    assert grids(more)[20:] == grids(first)[10:]  # the same 5 held-out puzzles


def test_a_request_beyond_the_pool_fails_with_the_count_made() -> None:
    # With all 16 givens a puzzle is its solution: 288 grids, 1 held out, 287 left to train.
    with pytest.raises(ArcDataError, match="made only 287 of 300 distinct training puzzles"):
        generated("sudoku:4?givens=16&train=300&test=1", seed=0)
    assert len(generated("sudoku:4?givens=16&train=287&test=1", seed=0).train) == 287


def test_transposing_a_six_by_six_breaks_its_boxes() -> None:
    # Why 6 x 6 augmentation keeps to the row-keeping transforms: the 2 x 3 boxes of a
    # transposed grid are the 3 x 2 boxes of the original.
    solution = generated("sudoku:6?train=1&test=1", seed=0).train[0].output
    assert solution is not None and is_solution(solution, (2, 3))
    assert not is_solution(solution.T, (2, 3)) and is_solution(solution.T, (3, 2))


def test_reordering_by_hand() -> None:
    grid = np.array([[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]], dtype=np.uint8)
    aug = Augmentation(0, (0, 2, 1, 3, 4, 5, 6, 7, 8, 9), row_order=(2, 3, 0, 1), col_order=(1, 0))
    # Bands swapped, the first two columns swapped, then digits 1 and 2 swapped.
    expected = np.array([[2, 1, 4, 3], [3, 4, 1, 2], [1, 2, 3, 4], [4, 3, 2, 1]])
    np.testing.assert_array_equal(aug.apply(grid), expected)
    assert is_solution(expected, (2, 2))
    np.testing.assert_array_equal(aug.invert(aug.apply(grid)), grid)
    assert aug.describe() == "identity, colours 0213456789, rows 2,3,0,1, columns 1,0"
    # Trailing lines that stay in place are dropped: equal actions compare equal.
    assert Augmentation(row_order=(1, 0, 2, 3)) == Augmentation(row_order=(1, 0))
    assert Augmentation(row_order=(0, 1, 2)).is_identity
    with pytest.raises(ValueError, match="not a permutation"):
        Augmentation(row_order=(0, 2))
    with pytest.raises(ValueError, match="a grid of 2 rows cannot take"):
        Augmentation(row_order=(2, 0, 1)).apply(grid[:2])


@pytest.mark.parametrize("side", [4, 6, 9])
def test_augmentations_keep_sudoku_valid_and_invert_exactly(side: int) -> None:
    task = generated(f"sudoku:{side}?train=6&test=2", seed=4)
    box = BOXES[side]
    augs = sample_augmentations(task, 40, np.random.default_rng(5))
    assert augs[0].is_identity and len(augs) == 41
    transforms = {aug.transform for aug in augs}
    if side == 6:
        assert transforms <= {0, 2, 4, 5}  # identity, rot180, flip_lr, flip_ud
    else:
        assert transforms & {1, 3, 6, 7}  # square boxes allow the swapping ones too
    digits = set(range(1, side + 1))
    for aug in augs:
        assert aug.colours[side + 1 :] == tuple(range(side + 1, 10))  # only 1..n relabelled
        for pair in (*task.train, *task.test):
            assert pair.output is not None
            puzzle, solution = aug.apply(pair.input), aug.apply(pair.output)
            assert is_solution(solution, box) and set(solution.reshape(-1).tolist()) == digits
            given = puzzle != 0
            assert given.sum() == (pair.input != 0).sum()
            np.testing.assert_array_equal(puzzle[given], solution[given])
            np.testing.assert_array_equal(aug.invert(puzzle), pair.input)
            np.testing.assert_array_equal(aug.invert(solution), pair.output)
    contents = {b"".join(aug.apply(g).tobytes() for g in task.grids()) for aug in augs}
    assert len(contents) == 41


def test_sudoku_augmentation_is_deterministic_per_generator() -> None:
    task = generated("sudoku:9?train=2&test=1", seed=0)
    first = sample_augmentations(task, 10, np.random.default_rng(1))
    assert first == sample_augmentations(task, 10, np.random.default_rng(1))
    assert first != sample_augmentations(task, 10, np.random.default_rng(2))
