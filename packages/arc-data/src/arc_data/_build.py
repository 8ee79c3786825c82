"""Build an augmented ARC store, streaming task by task into a temporary path.

Two passes: the first reads and validates every task and draws its augmentations (a few
bytes per puzzle), which fixes every array size; the second encodes each task's versions
and appends them to shard-sized buffers that are written as whole shards. Peak memory is
one task's canvases (a slice of its versions at a time for a task of thousands of pairs,
such as Sudoku's) plus one shard per array, whatever `num_aug` is. The store only
appears at its final path, complete, by an atomic rename.
"""

from __future__ import annotations

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
import zarr

from arc_data._augment import Versions, sample_versions
from arc_data._canvases import canvas_offsets, encode_versions, version_chunks
from arc_data._encoding import COLOUR_OFFSET, EOS, IGNORE_LABEL, PAD, VOCAB_SIZE
from arc_data._errors import ArcDataError, make_parent_folder
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
    versions: Versions
    translation_rng: np.random.Generator
    first_identifier: int

    @property
    def num_versions(self) -> int:
        return len(self.versions)


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
    sources = [parse_source(spec, seed=config.seed) for spec in config.sources]
    tasks_by_subset = read_subsets(sources, config.subsets)
    plans, skipped, unlabelled = _plan(config, tasks_by_subset)
    if not plans:
        raise ArcDataError(
            f"no task fits a {config.max_grid}x{config.max_grid} grid ({len(skipped)} skipped)"
        )

    make_parent_folder(output)
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
            versions = sample_versions(task, config.num_aug, np.random.default_rng(augment_seed))
            plans.append(
                _TaskPlan(
                    task=task,
                    held_out=held_out,
                    train_pairs=train_pairs,
                    versions=versions,
                    translation_rng=np.random.default_rng(translate_seed),
                    first_identifier=next_identifier,
                )
            )
            next_identifier += len(versions)
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
        "train": sum(p.num_versions * len(p.train_pairs) for p in plans),
        "test": sum(p.num_versions * len(p.task.test) for p in plans if p.held_out),
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
    _write_identifiers(root, plans, size)
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
                rng = plan.translation_rng if translate else None
                rows, cols = canvas_offsets(pairs, plan.versions.transforms, size, rng)
                for chunk in version_chunks(plan.num_versions, len(pairs)):
                    inputs, labels = encode_versions(
                        pairs, plan.versions[chunk], rows[chunk], cols[chunk], size
                    )
                    writers[(split, "inputs")].append(inputs)
                    writers[(split, "labels")].append(labels)
                split_index = index[split]
                offset = split_index["puzzle_offsets"][-1]
                split_index["puzzle_offsets"] += [
                    offset + len(pairs) * (v + 1) for v in range(plan.num_versions)
                ]
                split_index["puzzle_identifiers"] += range(
                    plan.first_identifier, plan.first_identifier + plan.num_versions
                )
                split_index["group_offsets"].append(len(split_index["puzzle_identifiers"]))
            advance(1)
    return index


def _write_identifiers(root: zarr.Group, plans: Sequence[_TaskPlan], size: int) -> None:
    total = 1 + sum(p.num_versions for p in plans)
    task_index = np.full(total, -1, dtype=np.int32)
    version = np.zeros(total, dtype=np.int32)
    transform = np.zeros(total, dtype=np.uint8)
    colours = np.tile(np.arange(10, dtype=np.uint8), (total, 1))
    # Line orders only when some version reorders lines (Sudoku), so ARC stores stay as
    # they were; orders of n < size lines are padded with the lines that stay in place.
    reorders = any(p.versions.row_orders is not None for p in plans)
    orders = np.tile(np.arange(size, dtype=np.uint8), (2, total, 1)) if reorders else None
    for k, plan in enumerate(plans):
        ids = slice(plan.first_identifier, plan.first_identifier + plan.num_versions)
        task_index[ids] = k
        version[ids] = np.arange(plan.num_versions)
        transform[ids] = plan.versions.transforms
        colours[ids] = plan.versions.colours
        row_orders, col_orders = plan.versions.row_orders, plan.versions.col_orders
        if orders is not None and row_orders is not None and col_orders is not None:
            orders[0, ids, : row_orders.shape[1]] = row_orders
            orders[1, ids, : col_orders.shape[1]] = col_orders
    small_array(root, "identifiers/task_index", task_index)
    small_array(root, "identifiers/version", version)
    small_array(root, "identifiers/transform", transform)
    small_array(root, "identifiers/colours", colours)
    if orders is not None:
        small_array(root, "identifiers/row_order", orders[0])
        small_array(root, "identifiers/col_order", orders[1])


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
        "num_puzzle_identifiers": 1 + sum(p.num_versions for p in plans),
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
