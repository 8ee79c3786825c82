"""Generated mazes (`maze:N`) and their augmentation, checked by an independent checker
written here (plain breadth-first search over a dict of cells, and a walk along the path)."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from arc_data import ArcDataError, Pair, Task, parse_source, sample_augmentations

# The documented colours of Maze-Hard's characters.
COLOUR = {"#": 5, " ": 0, "S": 3, "G": 2, "o": 4}
WALL, OPEN, START, GOAL, PATH = (COLOUR[c] for c in "# SGo")
Cell = tuple[int, int]


def grid_of(rows: list[str]) -> np.ndarray:
    return np.asarray([[COLOUR[c] for c in row] for row in rows], dtype=np.uint8)


def neighbours(cell: Cell, grid: np.ndarray) -> list[Cell]:
    r, c = cell
    near = [(r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)]
    return [(i, j) for i, j in near if 0 <= i < grid.shape[0] and 0 <= j < grid.shape[1]]


def only(grid: np.ndarray, colour: int) -> Cell:
    cells = list(zip(*np.nonzero(grid == colour), strict=True))
    assert len(cells) == 1, f"{len(cells)} cells of colour {colour}"
    return int(cells[0][0]), int(cells[0][1])


def search(question: np.ndarray) -> tuple[dict[Cell, int], dict[Cell, int]]:
    """Steps from S to every reachable open cell, and how many shortest paths reach it
    (counted layer by layer)."""
    start = only(question, START)
    steps, ways = {start: 0}, {start: 1}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        for near in neighbours(cell, question):
            if question[near] == WALL:
                continue
            if near not in steps:
                steps[near] = steps[cell] + 1
                ways[near] = 0
                queue.append(near)
            if steps[near] == steps[cell] + 1:
                ways[near] += ways[cell]
    return steps, ways


def shortest_paths(question: np.ndarray) -> tuple[int, int]:
    """(steps of a shortest S-G path, how many shortest paths there are); (-1, 0) when G
    is out of reach."""
    goal = only(question, GOAL)
    steps, ways = search(question)
    return (steps[goal], ways[goal]) if goal in steps else (-1, 0)


def check_answer(question: np.ndarray, answer: np.ndarray) -> int:
    """Assert that `answer` is `question` with the only shortest S-G path drawn; the path
    length in steps."""
    assert set(np.unique(question).tolist()) <= {WALL, OPEN, START, GOAL}
    drawn = answer != question
    assert (question[drawn] == OPEN).all() and (answer[drawn] == PATH).all()
    start, goal = only(question, START), only(question, GOAL)
    # Walk from S: each step must have exactly one way on (a shortest path never touches
    # itself), and the walk must end at G having used every path cell.
    path = {(int(r), int(c)) for r, c in zip(*np.nonzero(drawn), strict=True)} | {goal}
    previous, cell, walked = {start}, start, 0
    while cell != goal:
        ahead = [n for n in neighbours(cell, answer) if n in path and n not in previous]
        assert len(ahead) == 1, f"at {cell} the path goes on to {ahead}"
        previous.add(cell)
        cell = ahead[0]
        walked += 1
    assert len(previous) == len(path)  # S and every path cell, G not counted
    assert shortest_paths(question) == (walked, 1)
    return walked


def is_perfect(maze: np.ndarray) -> bool:
    """Open cells (anything but walls) connected, with one edge fewer than cells: a tree."""
    cells = {(int(r), int(c)) for r, c in zip(*np.nonzero(maze != WALL), strict=True)}
    edges = sum(1 for cell in cells for n in neighbours(cell, maze) if n in cells) // 2
    seen, queue = {next(iter(cells))}, deque([next(iter(cells))])
    while queue:
        for n in neighbours(queue.popleft(), maze):
            if n in cells and n not in seen:
                seen.add(n)
                queue.append(n)
    return seen == cells and edges == len(cells) - 1


def variants(question: np.ndarray) -> set[bytes]:
    """The 8 rotations and reflections of a maze, with S and G told apart by nothing."""
    merged = np.where(question == GOAL, START, question)
    return {np.rot90(g, k).tobytes() for g in (merged, np.fliplr(merged)) for k in range(4)}


def generated(spec: str, seed: int) -> Task:
    source = parse_source(spec, seed=seed)
    (subset,) = source.subsets()
    (task,) = source.read(subset)
    return task


SHORT = ["#######", "#S   G#", "# ### #", "#     #", "#######"]


def test_independent_checker_on_hand_made_mazes() -> None:
    question = grid_of(SHORT)
    assert shortest_paths(question) == (4, 1)
    assert check_answer(question, grid_of(["#######", "#SoooG#", *SHORT[2:]])) == 4
    detour = grid_of(["#######", "#S   G#", "#o###o#", "#ooooo#", "#######"])
    with pytest.raises(AssertionError):
        check_answer(question, detour)
    # Two equally short paths around a pillar: not unique.
    assert shortest_paths(grid_of(["#####", "#S  #", "# # #", "#  G#", "#####"])) == (4, 2)
    assert shortest_paths(grid_of(["#####", "#S# #", "### #", "#  G#", "#####"])) == (-1, 0)
    assert is_perfect(grid_of(["#####", "#   #", "### #", "#   #", "#####"]))
    assert not is_perfect(grid_of(["#####", "#   #", "# # #", "#   #", "#####"]))


@pytest.mark.parametrize("side", [5, 9, 15])
def test_generated_mazes_are_perfect_with_their_unique_shortest_path_drawn(side: int) -> None:
    # Only 4 distinct 5 x 5 mazes up to symmetry.
    train, test = (3, 1) if side == 5 else (30, 10)
    task = generated(f"maze:{side}?train={train}&test={test}", seed=3)
    assert (task.task_id, task.subset) == (f"maze{side}",) * 2
    assert task.fixed_colours and task.sudoku_box is None
    assert len(task.train) == train and len(task.test) == test
    keys: list[set[bytes]] = []
    for pair in (*task.train, *task.test):
        assert pair.output is not None and pair.input.shape == (side, side)
        assert pair.input.dtype == np.uint8
        assert (pair.input[[0, -1]] == WALL).all() and (pair.input[:, [0, -1]] == WALL).all()
        assert is_perfect(pair.input)
        walked = check_answer(pair.input, pair.output)
        # S and G on lattice cells (odd row and column), G at least half as far from S as
        # the farthest lattice cell.
        assert all(x % 2 for x in (*only(pair.input, START), *only(pair.input, GOAL)))
        steps = search(pair.input)[0]
        farthest = max(steps[(r, c)] for r in range(1, side, 2) for c in range(1, side, 2))
        assert 2 * walked >= farthest >= walked >= 2
        keys.append(variants(pair.input))
    # Distinct up to symmetry and direction of travel, hence train and test disjoint.
    assert all(not (a & b) for i, a in enumerate(keys) for b in keys[i + 1 :])


def test_colours_are_the_documented_ones() -> None:
    task = generated("maze:11?train=5&test=2", seed=0)
    for pair in (*task.train, *task.test):
        assert pair.output is not None
        assert set(np.unique(pair.input).tolist()) == {WALL, OPEN, START, GOAL}
        assert set(np.unique(pair.output).tolist()) <= {WALL, OPEN, START, GOAL, PATH}


def test_generation_is_deterministic_and_held_out_set_ignores_the_train_count() -> None:
    def grids(task: Task) -> list[bytes]:
        return [
            p.input.tobytes() + p.output.tobytes()
            for p in (*task.train, *task.test)
            if p.output is not None
        ]

    first = generated("maze:9?train=10&test=4", seed=8)
    assert grids(first) == grids(generated("maze:9?train=10&test=4", seed=8))
    assert grids(first) != grids(generated("maze:9?train=10&test=4", seed=9))
    more = generated("maze:9?train=20&test=4", seed=8)
    assert grids(more)[20:] == grids(first)[10:]  # the same 4 held-out mazes


def test_small_train_sets_avoid_every_held_out_maze_up_to_symmetry() -> None:
    # 7 x 7 mazes are few enough that an unchecked generator would repeat held-out ones
    # (rotated, reflected or with S and G swapped) in training.
    task = generated("maze:7?train=150&test=60", seed=1)
    held = set().union(*(variants(p.input) for p in task.test))
    assert not any(variants(p.input) & held for p in task.train)


def test_a_request_beyond_the_pool_fails_with_the_count_made() -> None:
    with pytest.raises(ArcDataError, match="made only 3 of 10 distinct training mazes"):
        generated("maze:5?train=10&test=1", seed=0)


@pytest.mark.parametrize("side", [5, 9])
def test_augmentations_keep_mazes_valid_keep_colours_and_invert_exactly(side: int) -> None:
    task = generated(f"maze:{side}?train=3&test=1", seed=4)
    augs = sample_augmentations(task, 40, np.random.default_rng(5))
    # Dihedral transforms only, each at most once: the identity and the 7 others.
    assert augs[0].is_identity
    assert sorted(aug.transform for aug in augs) == list(range(8))
    for aug in augs:
        assert aug.colours == tuple(range(10))
        assert not aug.row_order and not aug.col_order
        for pair in (*task.train, *task.test):
            assert pair.output is not None
            question, answer = aug.apply(pair.input), aug.apply(pair.output)
            assert is_perfect(question)
            check_answer(question, answer)
            np.testing.assert_array_equal(aug.invert(question), pair.input)
            np.testing.assert_array_equal(aug.invert(answer), pair.output)
    contents = {b"".join(aug.apply(g).tobytes() for g in task.grids()) for aug in augs}
    assert len(contents) == 8
    assert len(sample_augmentations(task, 3, np.random.default_rng(5))) == 4


def test_maze_augmentation_is_deterministic_per_generator_and_skips_symmetric_versions() -> None:
    task = generated("maze:9?train=2&test=1", seed=0)
    first = sample_augmentations(task, 7, np.random.default_rng(1))
    assert first == sample_augmentations(task, 7, np.random.default_rng(1))
    assert first != sample_augmentations(task, 7, np.random.default_rng(2))
    # A maze symmetric about its diagonal, S and G on it: transposing changes nothing,
    # so the 8 transforms give 4 distinct versions.
    square = grid_of(["#####", "#S  #", "# # #", "#  G#", "#####"])
    np.testing.assert_array_equal(square.T, square)
    mirrored = Task("m", "m", train=(Pair(square, square),), test=(), fixed_colours=True)
    assert len(sample_augmentations(mirrored, 7, np.random.default_rng(0))) == 4
