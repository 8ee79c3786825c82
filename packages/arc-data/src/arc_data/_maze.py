"""Maze rules: generation, shortest paths, the check of a path answer, and the key that
tells mazes apart up to symmetry.

A maze is a square grid of walls and open cells with one start S and one goal G; its
answer is the same grid with the cells of a shortest S-G path drawn (S and G stay). The
characters are Maze-Hard's (`# SGo`), each with a fixed ARC colour:

    '#' wall  -> 5 (grey)      ' ' open -> 0 (black)     'S' start -> 3 (green)
    'G' goal  -> 2 (red)       'o' path -> 4 (yellow)

The colours mean what they are, so a maze task is augmented by the dihedral transforms
only (`Task.fixed_colours`): a rotated or reflected maze is a maze with the rotated path.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

from arc_data._task import Grid

CHARSET = "# SGo"
WALL, OPEN, START, GOAL, PATH = 5, 0, 3, 2, 4
# COLOUR_OF_CHAR[i] is the colour of CHARSET[i].
COLOUR_OF_CHAR = (WALL, OPEN, START, GOAL, PATH)
# Generated sides: odd, so that a wall border and walls between the lattice cells fit;
# 5 is the smallest with two cells a side (S and G apart), 29 the largest within 30.
MIN_SIDE, MAX_SIDE = 5, 29
# The generator gives up once its failed attempts exceed this plus 10 per maze made (as
# the Sudoku generator does): small sides have few distinct mazes.
GIVE_UP_AFTER = 100
GIVE_UP_PER_MAZE = 10
# Lattice steps (row, column), indexed by the direction numbers that are shuffled.
STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def random_maze(side: int, rng: np.random.Generator) -> Grid:
    """Walls and open cells of a perfect maze (one path between any two open cells).

    Recursive backtracker on the k x k lattice of cells at odd coordinates (k = side // 2):
    from a random cell, go to an unvisited neighbour and open the wall between, back up
    at dead ends. Each cell tries its neighbours in its own random order, drawn at once.
    """
    k = side // 2
    grid = np.full((side, side), WALL, dtype=np.uint8)
    orders: list[list[int]] = rng.permuted(np.tile(np.arange(4), (k * k, 1)), axis=1).tolist()
    tried = [0] * (k * k)
    visited = [False] * (k * k)
    first = int(rng.integers(k * k))
    visited[first] = True
    grid[1 + 2 * (first // k), 1 + 2 * (first % k)] = OPEN
    stack = [first]
    while stack:
        cell = stack[-1]
        row, col = divmod(cell, k)
        while tried[cell] < 4:
            d_row, d_col = STEPS[orders[cell][tried[cell]]]
            tried[cell] += 1
            r, c = row + d_row, col + d_col
            if 0 <= r < k and 0 <= c < k and not visited[r * k + c]:
                visited[r * k + c] = True
                grid[1 + 2 * row + d_row, 1 + 2 * col + d_col] = OPEN
                grid[1 + 2 * r, 1 + 2 * c] = OPEN
                stack.append(r * k + c)
                break
        else:
            stack.pop()
    return grid


def place_ends(maze: Grid, rng: np.random.Generator) -> tuple[Grid, Grid]:
    """(question, answer): S on a random lattice cell, G on a random lattice cell at least
    half as far from S as the farthest one, and the path between them drawn. In a perfect
    maze that path is the only one, so the answer is unambiguous."""
    side = maze.shape[0]
    lattice = np.asarray(
        [r * side + c for r in range(1, side, 2) for c in range(1, side, 2)], dtype=np.intp
    )
    start = int(lattice[rng.integers(len(lattice))])
    steps = distances(maze != WALL, start)
    reach = steps.reshape(-1)[lattice]
    far = lattice[(reach > 0) & (2 * reach >= reach.max())]
    goal = int(far[rng.integers(len(far))])
    question = maze.copy()
    answer = maze.copy()
    # Walk back from G, each time to the neighbour one step nearer S (the maze's walls
    # border it, so neighbours stay inside).
    row, col = divmod(goal, side)
    while steps[row, col] > 1:
        row, col = next(
            (row + dr, col + dc)
            for dr, dc in STEPS
            if steps[row + dr, col + dc] == steps[row, col] - 1
        )
        answer[row, col] = PATH
    for grid in (question, answer):
        grid.flat[start], grid.flat[goal] = START, GOAL
    return question, answer


def generate(
    side: int, count: int, rng: np.random.Generator, excluded: frozenset[bytes] = frozenset()
) -> list[tuple[Grid, Grid]]:
    """Up to `count` (question, answer) mazes of `side`, distinct up to symmetry and none
    with an excluded `maze_key`. Fewer when attempts fail too often (see GIVE_UP_AFTER):
    the caller reports the shortfall."""
    made: list[tuple[Grid, Grid]] = []
    seen = set(excluded)
    failures = 0
    while len(made) < count and failures <= GIVE_UP_AFTER + GIVE_UP_PER_MAZE * len(made):
        question, answer = place_ends(random_maze(side, rng), rng)
        key = maze_key(question)
        if key in seen:
            failures += 1
            continue
        seen.add(key)
        made.append((question, answer))
    return made


def maze_key(question: Grid) -> bytes:
    """The maze up to the 8 symmetries of the square and the direction of travel: with S
    and G merged, the least of its 8 transforms' bytes. Augmentation turns a maze into
    each of its transforms, so mazes that share a key must not straddle train and test."""
    merged = np.where(question == GOAL, START, question)
    return min(np.rot90(g, k).tobytes() for g in (merged, merged.T) for k in range(4))


def distances(passable: npt.NDArray[np.bool_], start: int) -> npt.NDArray[np.int64]:
    """Steps from flat cell `start` to every cell through 4-neighbouring passable cells
    (breadth-first search), -1 where unreachable."""
    rows, cols = passable.shape
    # A blocked border around the grid keeps every neighbour index in range.
    width = cols + 2
    padded = np.zeros((rows + 2, width), dtype=np.bool_)
    padded[1:-1, 1:-1] = passable
    free: list[bool] = padded.reshape(-1).tolist()
    steps = [-1] * len(free)
    origin = (start // cols + 1) * width + start % cols + 1
    steps[origin] = 0
    queue = deque([origin])
    while queue:
        cell = queue.popleft()
        for move in (-width, width, -1, 1):
            near = cell + move
            if free[near] and steps[near] < 0:
                steps[near] = steps[cell] + 1
                queue.append(near)
    grid = np.asarray(steps, dtype=np.int64).reshape(rows + 2, width)[1:-1, 1:-1]
    return np.ascontiguousarray(grid)


def answer_problem(question: Grid, answer: Grid) -> str | None:
    """What is wrong with a (question, answer) maze in words, or None: the question (walls,
    open cells, S, G) holds one S and one G, the answer is the question with open cells
    turned into path cells, and those form a shortest S-G path."""
    for colour, name in ((START, "S"), (GOAL, "G")):
        found = int((question == colour).sum())
        if found != 1:
            return f"question has {found} {name!r} cells; expected exactly one"
    changed = answer != question
    if (changed & ((question != OPEN) | (answer != PATH))).any():
        r, c = (int(x[0]) for x in np.nonzero(changed & ((question != OPEN) | (answer != PATH))))
        return (
            f"answer has {_char(answer[r, c])!r} at row {r + 1}, column {c + 1} where the "
            f"question has {_char(question[r, c])!r} (only ' ' may become 'o')"
        )
    start = int(np.flatnonzero(question == START)[0])
    goal = int(np.flatnonzero(question == GOAL)[0])
    shortest = int(distances(question != WALL, start).flat[goal])
    if shortest < 0:
        return "G cannot be reached from S"
    marked = int(changed.sum())
    if marked != shortest - 1:
        return f"answer marks {marked} path cells; a shortest path from S to G has {shortest - 1}"
    on_path = changed | (question == START) | (question == GOAL)
    if distances(on_path, start).flat[goal] < 0:
        return "the path cells do not connect S to G"
    return None


def _char(colour: int) -> str:
    return CHARSET[COLOUR_OF_CHAR.index(int(colour))] if colour in COLOUR_OF_CHAR else "?"
