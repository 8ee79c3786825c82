"""Build an augmented ARC store, streaming task by task into a temporary path.

Two passes: the first reads and validates every task and draws its augmentations (a few
bytes per puzzle), which fixes every array size; the second encodes each task's versions
and appends them to shard-sized buffers that are written as whole shards. Peak memory is
one task's canvases plus one shard per array, whatever `num_aug` is. The store only
appears at its final path, complete, by an atomic rename.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
import zarr

from arc_data._augment import dihedral, sample_augmentation_arrays
from arc_data._encoding import COLOUR_OFFSET, EOS, IGNORE_LABEL, PAD, VOCAB_SIZE
from arc_data._errors import ArcDataError
from arc_data._layout import (
    FORMAT_NAME,
    FORMAT_VERSION,
    SPLITS,
    TOKEN_ARRAYS,
)
from arc_data._sources import parse_source, read_subsets
from arc_data._task import MAX_GRID_SIZE, Pair, Task, task_to_json
from arc_data._zarr_io import ShardWriter, small_array, token_array

Progress = Callable[[int], None]
# Given the total number of tasks, a context yielding a callback told how many more are done.
ProgressFactory = Callable[[int], AbstractContextManager[Progress]]


@attrs.frozen
class BuildConfig:
    """What to build: sources, subsets, the held-out test subset and the augmentation."""

    sources: tuple[str, ...]
    subsets: tuple[str, ...]
    test_set: str | None = None
    num_aug: int = 1000
    seed: int = 42
    max_grid: int = MAX_GRID_SIZE

    def __attrs_post_init__(self) -> None:
        if not self.sources:
            raise ArcDataError("at least one source is needed")
        if not self.subsets:
            raise ArcDataError("at least one subset is needed")
        if len(set(self.subsets)) != len(self.subsets):
            raise ArcDataError(f"subsets listed twice: {', '.join(self.subsets)}")
        if self.test_set is not None and self.test_set not in self.subsets:
            raise ArcDataError(
                f"test set {self.test_set!r} is not among the subsets ({', '.join(self.subsets)})"
            )
        if self.num_aug < 0:
            raise ArcDataError(f"num_aug must be >= 0, got {self.num_aug}")
        if not 1 <= self.max_grid <= MAX_GRID_SIZE:
            raise ArcDataError(f"max_grid must be in 1..{MAX_GRID_SIZE}, got {self.max_grid}")


@attrs.frozen
class BuildReport:
    output: Path
    tasks: int
    skipped_tasks: tuple[str, ...]
    unlabelled_test_pairs: int
    num_puzzle_identifiers: int
    train_examples: int
    test_examples: int


@attrs.frozen
class _TaskPlan:
    task: Task
    held_out: bool
    train_pairs: tuple[Pair, ...]
    transforms: npt.NDArray[np.uint8]
    colours: npt.NDArray[np.uint8]
    translation_rng: np.random.Generator
    first_identifier: int

    @property
    def versions(self) -> int:
        return len(self.transforms)


def build_store(
    config: BuildConfig,
    output: Path,
    *,
    overwrite: bool = False,
    progress: ProgressFactory | None = None,
) -> BuildReport:
    """Build the store at `output` (a directory). Raises `ArcDataError` on bad input.

    `progress`, if given, shows the encoding of the tasks (see `ProgressFactory`).
    """
    if output.exists() and not overwrite:
        raise ArcDataError(f"{output}: already exists (pass --overwrite to replace it)")
    sources = [parse_source(spec) for spec in config.sources]
    tasks_by_subset = read_subsets(sources, config.subsets)
    plans, skipped, unlabelled = _plan(config, tasks_by_subset)
    if not plans:
        raise ArcDataError(
            f"no task fits a {config.max_grid}x{config.max_grid} grid ({len(skipped)} skipped)"
        )

    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        counts = _write(config, plans, partial, progress)
        metadata = _metadata(config, plans, skipped, unlabelled, counts)
        zarr.open_group(partial, mode="r+").attrs.update(metadata)
        _replace(partial, output)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return BuildReport(
        output=output,
        tasks=len(plans),
        skipped_tasks=tuple(skipped),
        unlabelled_test_pairs=unlabelled,
        num_puzzle_identifiers=metadata["num_puzzle_identifiers"],
        train_examples=counts["train"]["examples"],
        test_examples=counts["test"]["examples"],
    )


def _plan(
    config: BuildConfig, tasks_by_subset: dict[str, list[Task]]
) -> tuple[list[_TaskPlan], list[str], int]:
    plans: list[_TaskPlan] = []
    skipped: list[str] = []
    unlabelled = 0
    next_identifier = 1  # 0 is the blank puzzle
    for subset in config.subsets:
        for task in tasks_by_subset[subset]:
            if task.max_side() > config.max_grid:
                skipped.append(f"{subset}/{task.task_id}")
                continue
            held_out = subset == config.test_set
            train_pairs = task.train
            if not held_out:
                labelled = tuple(p for p in task.test if p.output is not None)
                unlabelled += len(task.test) - len(labelled)
                train_pairs += labelled
            augment_seed, translate_seed = np.random.SeedSequence(
                [config.seed, _stable_key(subset, task.task_id)]
            ).spawn(2)
            transforms, colours = sample_augmentation_arrays(
                task, config.num_aug, np.random.default_rng(augment_seed)
            )
            plans.append(
                _TaskPlan(
                    task=task,
                    held_out=held_out,
                    train_pairs=train_pairs,
                    transforms=transforms,
                    colours=colours,
                    translation_rng=np.random.default_rng(translate_seed),
                    first_identifier=next_identifier,
                )
            )
            next_identifier += len(transforms)
    return plans, skipped, unlabelled


def _write(
    config: BuildConfig,
    plans: Sequence[_TaskPlan],
    path: Path,
    progress: ProgressFactory | None,
) -> dict[str, dict[str, int]]:
    size = config.max_grid
    seq_len = size * size
    examples = {
        "train": sum(p.versions * len(p.train_pairs) for p in plans),
        "test": sum(p.versions * len(p.task.test) for p in plans if p.held_out),
    }
    root = zarr.open_group(path, mode="w", attributes={"format": FORMAT_NAME})
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="arc-data-write") as executor:
        writers = {
            (split, name): ShardWriter(
                token_array(root, f"{split}/{name}", examples[split], seq_len), executor
            )
            for split in SPLITS
            for name in TOKEN_ARRAYS
        }
        index = _encode_all(plans, size, writers, progress)
        for writer in writers.values():
            writer.close()
    for split in SPLITS:
        for name, values in index[split].items():
            dtype = np.int32 if name == "puzzle_identifiers" else np.int64
            small_array(root, f"{split}/{name}", np.asarray(values, dtype=dtype))
    _write_identifiers(root, plans)
    originals = {p.task.task_id: task_to_json(p.task) for p in plans if p.held_out}
    root.create_group("originals", attributes={"tasks": originals})
    return {
        split: {
            "examples": examples[split],
            "puzzles": len(index[split]["puzzle_identifiers"]),
            "groups": len(index[split]["group_offsets"]) - 1,
        }
        for split in SPLITS
    }


def _encode_all(
    plans: Sequence[_TaskPlan],
    size: int,
    writers: dict[tuple[str, str], ShardWriter],
    progress: ProgressFactory | None,
) -> dict[str, dict[str, list[int]]]:
    """Encode every task's versions into the writers; returns the split index lists."""
    index: dict[str, dict[str, list[int]]] = {
        split: {"puzzle_offsets": [0], "puzzle_identifiers": [], "group_offsets": [0]}
        for split in SPLITS
    }
    with _progress_context(progress, len(plans)) as advance:
        for plan in plans:
            split_pairs = [("train", plan.train_pairs, True)]
            if plan.held_out:
                split_pairs.append(("test", plan.task.test, False))
            for split, pairs, translate in split_pairs:
                inputs, labels = _encode_versions(plan, pairs, size, translate=translate)
                writers[(split, "inputs")].append(inputs)
                writers[(split, "labels")].append(labels)
                split_index = index[split]
                offset = split_index["puzzle_offsets"][-1]
                split_index["puzzle_offsets"] += [
                    offset + len(pairs) * (v + 1) for v in range(plan.versions)
                ]
                split_index["puzzle_identifiers"] += range(
                    plan.first_identifier, plan.first_identifier + plan.versions
                )
                split_index["group_offsets"].append(len(split_index["puzzle_identifiers"]))
            advance(1)
    return index


def _encode_versions(
    plan: _TaskPlan, pairs: Sequence[Pair], size: int, *, translate: bool
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Token canvases `[versions * len(pairs), size * size]` of inputs and labels."""
    versions, count = plan.versions, len(pairs)
    rows, cols = _offsets(plan, pairs, size, translate=translate)
    # Colour permutation of each version as a token lookup table (PAD and EOS fixed).
    lookup = np.empty((versions, VOCAB_SIZE), dtype=np.uint8)
    lookup[:, PAD] = PAD
    lookup[:, EOS] = EOS
    lookup[:, COLOUR_OFFSET:] = plan.colours + COLOUR_OFFSET
    inputs = np.zeros((versions, count, size, size), dtype=np.uint8)
    labels = np.zeros((versions, count, size, size), dtype=np.uint8)
    # All versions sharing a dihedral transform are written at once per pair: their
    # permuted grid patches scattered to their offsets, cells beyond the canvas dropped.
    for transform in np.unique(plan.transforms).tolist():
        group = np.flatnonzero(plan.transforms == transform)
        for e, pair in enumerate(pairs):
            for grid, canvases in ((pair.input, inputs), (pair.output, labels)):
                if grid is None:
                    continue
                patch = _with_eos(dihedral(grid, transform))
                patch_rows, patch_cols = _cell_coordinates(*patch.shape)
                target_rows = rows[group, e][:, None] + patch_rows
                target_cols = cols[group, e][:, None] + patch_cols
                inside = (target_rows < size) & (target_cols < size)
                target = ((group[:, None] * count + e) * size + target_rows) * size + target_cols
                values = lookup[group][:, patch.reshape(-1)]
                canvases.reshape(-1)[target[inside]] = values[inside]
    shape = (versions * count, size * size)
    return inputs.reshape(shape), labels.reshape(shape)


@functools.cache
def _cell_coordinates(height: int, width: int) -> npt.NDArray[np.int64]:
    """Row and column of every cell of a height x width patch, `[2, 1, cells]`."""
    return np.indices((height, width)).reshape(2, 1, -1)


def _with_eos(grid: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Grid tokens with the EOS row below and EOS column right (the corner stays PAD)."""
    height, width = grid.shape
    patch = np.full((height + 1, width + 1), EOS, dtype=np.uint8)
    patch[:height, :width] = grid + COLOUR_OFFSET
    patch[height, width] = PAD
    return patch


def _offsets(
    plan: _TaskPlan, pairs: Sequence[Pair], size: int, *, translate: bool
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Canvas offsets `[versions, pairs]`: random in the train split, the first pair of
    each version and the whole test split at (0, 0)."""
    shape = (plan.versions, len(pairs))
    if not translate:
        return np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    heights = np.asarray([max(p.input.shape[0], _rows(p.output)) for p in pairs])
    widths = np.asarray([max(p.input.shape[1], _cols(p.output)) for p in pairs])
    swapped = np.isin(plan.transforms, (1, 3, 6, 7))[:, None]  # these exchange rows and columns
    room_rows = size - np.where(swapped, widths, heights)
    room_cols = size - np.where(swapped, heights, widths)
    rows = plan.translation_rng.integers(0, room_rows + 1, size=shape)
    cols = plan.translation_rng.integers(0, room_cols + 1, size=shape)
    rows[:, 0] = 0
    cols[:, 0] = 0
    return rows, cols


def _rows(grid: npt.NDArray[np.uint8] | None) -> int:
    return 0 if grid is None else int(grid.shape[0])


def _cols(grid: npt.NDArray[np.uint8] | None) -> int:
    return 0 if grid is None else int(grid.shape[1])


def _write_identifiers(root: zarr.Group, plans: Sequence[_TaskPlan]) -> None:
    total = 1 + sum(p.versions for p in plans)
    task_index = np.full(total, -1, dtype=np.int32)
    version = np.zeros(total, dtype=np.int32)
    transform = np.zeros(total, dtype=np.uint8)
    colours = np.tile(np.arange(10, dtype=np.uint8), (total, 1))
    for k, plan in enumerate(plans):
        ids = slice(plan.first_identifier, plan.first_identifier + plan.versions)
        task_index[ids] = k
        version[ids] = np.arange(plan.versions)
        transform[ids] = plan.transforms
        colours[ids] = plan.colours
    small_array(root, "identifiers/task_index", task_index)
    small_array(root, "identifiers/version", version)
    small_array(root, "identifiers/transform", transform)
    small_array(root, "identifiers/colours", colours)


def _metadata(
    config: BuildConfig,
    plans: Sequence[_TaskPlan],
    skipped: Sequence[str],
    unlabelled: int,
    counts: dict[str, dict[str, int]],
) -> dict[str, Any]:
    held_out = [p for p in plans if p.held_out]
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "grid_size": config.max_grid,
        "seq_len": config.max_grid * config.max_grid,
        "vocab_size": VOCAB_SIZE,
        "pad_id": PAD,
        "eos_id": EOS,
        "colour_offset": COLOUR_OFFSET,
        "ignore_label": IGNORE_LABEL,
        "num_puzzle_identifiers": 1 + sum(p.versions for p in plans),
        "num_aug": config.num_aug,
        "seed": config.seed,
        "sources": list(config.sources),
        "subsets": list(config.subsets),
        "test_set": config.test_set,
        "has_test_labels": bool(held_out) and all(p.task.has_test_outputs for p in held_out),
        "counts": counts,
        "tasks": [[p.task.subset, p.task.task_id] for p in plans],
        "skipped_tasks": list(skipped),
        "unlabelled_test_pairs_skipped": unlabelled,
    }


def _replace(partial: Path, output: Path) -> None:
    if output.exists():
        old = output.parent / f".{output.name}.old-{os.getpid()}"
        os.replace(output, old)
        os.replace(partial, output)
        shutil.rmtree(old)
    else:
        os.replace(partial, output)


def _stable_key(subset: str, task_id: str) -> int:
    digest = hashlib.blake2b(f"{subset}/{task_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@contextmanager
def _progress_context(progress: ProgressFactory | None, total: int) -> Iterator[Progress]:
    if progress is None:
        yield lambda _: None
    else:
        with progress(total) as advance:
            yield advance
