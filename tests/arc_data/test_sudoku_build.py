"""Stores of Sudoku: `arc-data build --source sudoku:4 ...`, the counts, and every example
mapped back exactly to its puzzle through the stored augmentation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from arc_data import (
    BuildConfig,
    Task,
    TrainSampler,
    build_store,
    canvas_grid,
    decode_grid,
    open_store,
    parse_source,
)
from arc_data._cli import main

SPEC = "sudoku:4?train=30&test=6&givens=6"


def source_task(spec: str, seed: int) -> Task:
    source = parse_source(spec, seed=seed)
    (subset,) = source.subsets()
    (task,) = source.read(subset)
    return task


def test_cli_build_counts_and_exact_inverses(tmp_path: Path) -> None:
    output = tmp_path / "sudoku4.zarr"
    args = ["build", "--source", SPEC, "--subsets", "sudoku4", "--test-set", "sudoku4"]
    args += ["--num-aug", "4", "--max-grid", "4", "--seed", "7", "--output", str(output)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    # One task in 1 + 4 versions: 30 training and 6 held-out puzzles in each.
    assert "1 tasks, 5 puzzles, 150 train and 30 test examples" in result.stderr
    info = json.loads(CliRunner().invoke(main, ["info", str(output)]).stdout)
    assert info["counts"] == {
        "train": {"examples": 150, "puzzles": 5, "groups": 1},
        "test": {"examples": 30, "puzzles": 5, "groups": 1},
    }
    assert info["num_puzzle_identifiers"] == 6 and info["seq_len"] == 16 and info["tasks"] == 1

    store = open_store(output)
    assert store.metadata.tasks == (("sudoku4", "sudoku4"),)
    row_orders = store.identifier_row_orders
    assert row_orders is not None and row_orders.shape == (6, 4)
    np.testing.assert_array_equal(row_orders[:2], [[0, 1, 2, 3], [0, 1, 2, 3]])
    task = source_task(SPEC, seed=7)
    for split, pairs in ((store.train, task.train), (store.test, task.test)):
        inputs, labels = split.read(np.arange(split.num_examples))
        for k, identifier in enumerate(split.puzzle_identifiers.tolist()):
            aug = store.augmentation(identifier)
            first = int(split.puzzle_offsets[k])
            for e, pair in enumerate(pairs):
                assert pair.output is not None
                grid_in, grid_out = (
                    decode_grid(inputs[first + e], 4),
                    decode_grid(labels[first + e], 4),
                )
                np.testing.assert_array_equal(grid_in, aug.apply(pair.input))
                np.testing.assert_array_equal(aug.invert(grid_in), pair.input)
                np.testing.assert_array_equal(aug.invert(grid_out), pair.output)
    held_out = store.test_tasks["sudoku4"].test
    assert len(held_out) == 6
    for got, want in zip(held_out, task.test, strict=True):
        np.testing.assert_array_equal(got.input, want.input)

    png = tmp_path / "p.png"
    shown = CliRunner().invoke(
        main, ["show", str(output), "--puzzle", "3", "--out", str(png), "--frame", "original"]
    )
    assert shown.exit_code == 0, shown.output
    assert "sudoku4/sudoku4" in shown.stderr and "36 examples" in shown.stderr


def test_translated_canvases_invert_and_builds_are_byte_identical(tmp_path: Path) -> None:
    config = BuildConfig(
        sources=("sudoku:6?train=12&test=3",),
        subsets=("sudoku6",),
        test_set="sudoku6",
        num_aug=3,
        seed=5,
        max_grid=9,
    )
    digests = []
    for name in ("a.zarr", "b.zarr"):
        build_store(config, tmp_path / name)
        digests.append(
            [
                hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted((tmp_path / name).rglob("*"))
                if p.is_file()
            ]
        )
    assert digests[0] == digests[1]
    store = open_store(tmp_path / "a.zarr")
    task = source_task("sudoku:6?train=12&test=3", seed=5)
    inputs, labels = store.train.read(np.arange(store.train.num_examples))
    moved = 0
    for k, identifier in enumerate(store.train.puzzle_identifiers.tolist()):
        aug = store.augmentation(identifier)
        assert aug.transform in (0, 2, 4, 5)  # 2 x 3 boxes: no transform swaps rows and columns
        for e, pair in enumerate(task.train):
            example = int(store.train.puzzle_offsets[k]) + e
            grid_in = canvas_grid(inputs[example], 9)
            grid_out = canvas_grid(labels[example], 9)
            assert grid_in is not None and grid_out is not None and pair.output is not None
            np.testing.assert_array_equal(aug.invert(grid_in), pair.input)
            np.testing.assert_array_equal(aug.invert(grid_out), pair.output)
            moved += int(inputs[example].reshape(9, 9)[0, 0] < 2)
    assert moved > 0  # 6 x 6 grids on a 9 x 9 canvas are translated in the train split


def test_mixed_with_arc_tasks(tmp_path: Path, hand_made_prefix: Path) -> None:
    config = BuildConfig(
        sources=(f"kaggle:{hand_made_prefix}", "sudoku:4?train=5&test=2"),
        subsets=("train", "sudoku4"),
        test_set="sudoku4",
        num_aug=2,
        seed=1,
        max_grid=10,
    )
    report = build_store(config, tmp_path / "mixed.zarr")
    store = open_store(tmp_path / "mixed.zarr")
    assert report.tasks == 2 and store.metadata.tasks == (("train", "a"), ("sudoku4", "sudoku4"))
    # ARC puzzles keep every line in place; the Sudoku ones carry their orders.
    assert store.augmentation(2).row_order == () and store.augmentation(2).col_order == ()
    orders = store.identifier_row_orders
    assert orders is not None and orders.shape == (7, 10)
    np.testing.assert_array_equal(orders[1:4], np.tile(np.arange(10), (3, 1)))
    assert (orders[4:, 4:] == np.arange(4, 10)).all()
    sampler = TrainSampler(store.train, 8, seed=0, examples_per_draw=1)
    assert set(next(sampler).puzzle_identifiers.tolist()) <= set(range(1, 7))
