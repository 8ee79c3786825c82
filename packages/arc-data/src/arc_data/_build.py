"""Build an augmented ARC store, streaming task by task into a temporary path.

Every task is read and validated first, which bounds every array size (1 + `num_aug`
versions of each task). Then task after task, its augmentations are drawn (a few bytes
per puzzle) and its versions encoded (see `_streaming`) and appended to the token arrays,
written as whole shards; the arrays are cut to their size at the end. Peak memory is
one task's canvases (a slice of its versions at a time for a task of thousands of pairs,
such as Sudoku's) plus two shards per array, whatever `num_aug` is. The store only
appears at its final path, complete, by an atomic rename.
"""

from __future__ import annotations

import gc
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

from arc_data._augment import DIHEDRAL_NAMES
from arc_data._encoding import COLOUR_OFFSET, EOS, IGNORE_LABEL, PAD, VOCAB_SIZE
from arc_data._errors import ArcDataError, make_parent_folder
from arc_data._layout import (
    FORMAT_NAME,
    FORMAT_VERSION,
    SPLITS,
    TOKEN_ARRAYS,
)
from arc_data._sources import parse_source, read_subsets
from arc_data._streaming import SelectedTask, TaskPlan, encode_tasks
from arc_data._task import MAX_GRID_SIZE, Task, task_to_json
from arc_data._zarr_files import create_group
from arc_data._zarr_io import ShardWriter, small_array, token_array

# Most threads encoding and compressing the token arrays (one per core up to this).
THREADS = 8

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
    with _gc_paused():
        return _build(config, output, overwrite, progress)


def _build(
    config: BuildConfig, output: Path, overwrite: bool, progress: ProgressFactory | None
) -> BuildReport:
    if output.exists():
        if not overwrite:
            raise ArcDataError(f"{output}: already exists (pass --overwrite to replace it)")
        _check_replaceable(output)
    sources = [parse_source(spec, seed=config.seed) for spec in config.sources]
    tasks_by_subset = read_subsets(sources, config.subsets)
    selected, skipped, unlabelled = _select(config, tasks_by_subset)
    if not selected:
        raise ArcDataError(
            f"no task fits a {config.max_grid}x{config.max_grid} grid ({len(skipped)} skipped)"
        )

    make_parent_folder(output)
    partial = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        plans, counts = _write(config, selected, partial, progress)
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


def _select(
    config: BuildConfig, tasks_by_subset: dict[str, list[Task]]
) -> tuple[list[SelectedTask], list[str], int]:
    """The tasks that fit the grid, in order; the names of the others; and how many test
    pairs without an output were left out of training."""
    selected: list[SelectedTask] = []
    skipped: list[str] = []
    unlabelled = 0
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
            selected.append(SelectedTask(subset, task, held_out, train_pairs))
    return selected, skipped, unlabelled


def _write(
    config: BuildConfig,
    selected: Sequence[SelectedTask],
    path: Path,
    progress: ProgressFactory | None,
) -> tuple[list[TaskPlan], dict[str, dict[str, int]]]:
    size = config.max_grid
    seq_len = size * size
    # At most 1 + num_aug versions per task, of a task of fixed colours at most its 8
    # dihedral transforms: bounds of the token arrays, cut to size once written.
    most = 1 + config.num_aug
    versions = [min(most, len(DIHEDRAL_NAMES)) if s.task.fixed_colours else most for s in selected]
    bounds = {
        "train": sum(v * len(s.train_pairs) for v, s in zip(versions, selected, strict=True)),
        "test": sum(
            v * len(s.task.test) for v, s in zip(versions, selected, strict=True) if s.held_out
        ),
    }
    root = zarr.open_group(path, mode="w", attributes={"format": FORMAT_NAME})
    # Encoding and compressing on one thread per core (compression takes as long as
    # encoding: zarr too compresses on several threads).
    workers = min(THREADS, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="arc-data") as executor:
        writers = {
            (split, name): ShardWriter(
                token_array(root, f"{split}/{name}", bounds[split], seq_len), executor
            )
            for split in SPLITS
            for name in TOKEN_ARRAYS
        }
        with _progress_context(progress, len(selected)) as advance:
            plans, index = encode_tasks(
                selected, config.seed, config.num_aug, size, writers, executor, advance
            )
        for writer in writers.values():
            writer.close()
    examples = {split: index[split]["puzzle_offsets"][-1] for split in SPLITS}
    for (split, _), writer in writers.items():
        if writer.written != examples[split]:
            raise RuntimeError(f"wrote {writer.written} {split} rows of {examples[split]}")
        # Versions rejected as duplicates leave the arrays shorter than their bound.
        if examples[split] != bounds[split]:
            writer.array.resize((examples[split], seq_len))
    for split in SPLITS:
        for name, values in index[split].items():
            dtype = np.int32 if name == "puzzle_identifiers" else np.int64
            small_array(root, f"{split}/{name}", np.asarray(values, dtype=dtype))
    _write_identifiers(root, plans, size)
    originals = {p.task.task_id: task_to_json(p.task) for p in plans if p.held_out}
    create_group(root, "originals", {"tasks": originals})
    counts = {
        split: {
            "examples": examples[split],
            "puzzles": len(index[split]["puzzle_identifiers"]),
            "groups": len(index[split]["group_offsets"]) - 1,
        }
        for split in SPLITS
    }
    return plans, counts


def _write_identifiers(root: zarr.Group, plans: Sequence[TaskPlan], size: int) -> None:
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
    plans: Sequence[TaskPlan],
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


def _check_replaceable(output: Path) -> None:
    """`--overwrite` replaces a store (complete or not) or an empty folder, never other
    files: a mistyped `--output` must not delete someone's folder."""
    if output.is_dir() and not any(output.iterdir()):
        return
    try:
        format_name = zarr.open_group(output, mode="r").attrs.get("format")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, NotADirectoryError):
        format_name = None
    if format_name != FORMAT_NAME:
        raise ArcDataError(
            f"{output}: exists and is not an arc-data store; --overwrite replaces stores "
            "only (remove it yourself if it should go)"
        )


def _replace(partial: Path, output: Path) -> None:
    if output.exists():
        old = output.parent / f".{output.name}.old-{os.getpid()}"
        os.replace(output, old)
        os.replace(partial, output)
        shutil.rmtree(old)
    else:
        os.replace(partial, output)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """A build makes millions of lists and ints (reading JSON) and of small arrays, none
    in a reference cycle: passes of the cyclic garbage collector over them are wasted (a
    fifth of reading, measured)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def _progress_context(progress: ProgressFactory | None, total: int) -> Iterator[Progress]:
    if progress is None:
        yield lambda _: None
    else:
        with progress(total) as advance:
            yield advance
