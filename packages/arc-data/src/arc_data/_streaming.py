"""Drawing each task's augmentations and encoding its versions, task after task, into the
token arrays' writers: the drawing here, the encoding on worker threads (numpy releases
the GIL for most of it), so that both go on at once.

Every task draws from generators of its own, seeded by the build seed and its name, so
the order in which tasks are drawn and encoded does not change what they draw.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import attrs
import numpy as np

from arc_data._augment import Versions
from arc_data._canvases import (
    CHUNK_CANVASES,
    Tokens,
    canvas_offsets,
    encode_versions,
    version_chunks,
)
from arc_data._layout import SPLITS
from arc_data._task import Pair, Task
from arc_data._versions import sample_versions
from arc_data._zarr_io import ShardWriter

# Canvases being encoded at once (more when one slice has more): enough to keep the
# threads busy, few enough that peak memory stays as when encoding was sequential.
IN_FLIGHT_CANVASES = CHUNK_CANVASES // 2
# Per split, the lists of the split's index arrays (puzzle_offsets, ...).
Index = dict[str, dict[str, list[int]]]


@attrs.frozen
class SelectedTask:
    """A task of `subset` that fits the grid, with the pairs it trains on."""

    subset: str
    task: Task
    held_out: bool
    train_pairs: tuple[Pair, ...]


@attrs.frozen
class TaskPlan:
    task: Task
    held_out: bool
    train_pairs: tuple[Pair, ...]
    versions: Versions
    translation_rng: np.random.Generator
    first_identifier: int

    @property
    def num_versions(self) -> int:
        return len(self.versions)


def plan_task(selected: SelectedTask, seed: int, num_aug: int, first_identifier: int) -> TaskPlan:
    """Draw a task's versions; its canvas offsets come later from `translation_rng`."""
    task = selected.task
    augment_seed, translate_seed = np.random.SeedSequence(
        [seed, _stable_key(selected.subset, task.task_id)]
    ).spawn(2)
    return TaskPlan(
        task=task,
        held_out=selected.held_out,
        train_pairs=selected.train_pairs,
        versions=sample_versions(task, num_aug, np.random.default_rng(augment_seed)),
        translation_rng=np.random.default_rng(translate_seed),
        first_identifier=first_identifier,
    )


def encode_tasks(
    selected: Sequence[SelectedTask],
    seed: int,
    num_aug: int,
    size: int,
    writers: dict[tuple[str, str], ShardWriter],
    executor: ThreadPoolExecutor,
    advance: Callable[[int], None],
) -> tuple[list[TaskPlan], Index]:
    """Draw and encode every task, in order, into the writers; `advance(1)` once each is
    written. Returns the plans and the split index lists.

    Slices of versions are encoded on `executor` and appended in order, with at most
    IN_FLIGHT_CANVASES canvases in flight (or one slice).
    """
    plans: list[TaskPlan] = []
    index: Index = {
        split: {"puzzle_offsets": [0], "puzzle_identifiers": [], "group_offsets": [0]}
        for split in SPLITS
    }
    # (split, canvases, their encoding, whether the slice ends its task)
    pending: deque[tuple[str, int, Future[tuple[Tokens, Tokens]], bool]] = deque()

    def append_oldest() -> int:
        split, canvases, encoded, last = pending.popleft()
        inputs, labels = encoded.result()
        writers[(split, "inputs")].append(inputs)
        writers[(split, "labels")].append(labels)
        if last:
            advance(1)
        return canvases

    in_flight = 0
    next_identifier = 1  # 0 is the blank puzzle
    for chosen in selected:
        plan = plan_task(chosen, seed, num_aug, next_identifier)
        plans.append(plan)
        next_identifier += plan.num_versions
        split_pairs = [("train", plan.train_pairs, True)]
        if plan.held_out:
            split_pairs.append(("test", plan.task.test, False))
        slices = []
        for split, pairs, translate in split_pairs:
            rng = plan.translation_rng if translate else None
            rows, cols = canvas_offsets(pairs, plan.versions.transforms, size, rng)
            for chunk in version_chunks(plan.num_versions, pairs):
                slices.append((split, pairs, chunk, rows[chunk], cols[chunk]))
            _extend_index(index[split], plan, len(pairs))
        for k, (split, pairs, chunk, rows, cols) in enumerate(slices):
            canvases = len(rows) * len(pairs)
            while pending and in_flight + canvases > IN_FLIGHT_CANVASES:
                in_flight -= append_oldest()
            versions = plan.versions[chunk]
            encoded = executor.submit(encode_versions, pairs, versions, rows, cols, size)
            pending.append((split, canvases, encoded, k == len(slices) - 1))
            in_flight += canvases
    while pending:
        append_oldest()
    return plans, index


def _extend_index(split_index: dict[str, list[int]], plan: TaskPlan, pairs: int) -> None:
    """Index the task's versions, `pairs` examples each, at the end of a split."""
    offset = split_index["puzzle_offsets"][-1]
    split_index["puzzle_offsets"] += [offset + pairs * (v + 1) for v in range(plan.num_versions)]
    split_index["puzzle_identifiers"] += range(
        plan.first_identifier, plan.first_identifier + plan.num_versions
    )
    split_index["group_offsets"].append(len(split_index["puzzle_identifiers"]))


def _stable_key(subset: str, task_id: str) -> int:
    digest = hashlib.blake2b(f"{subset}/{task_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")
