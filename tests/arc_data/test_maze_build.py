"""Stores of mazes: `arc-data build --source maze:7 ...`, the counts, the stored
augmentations (dihedral only, colours unchanged) and every example mapped back exactly."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from arc_data import BuildConfig, Task, build_store, decode_grid, open_store, parse_source
from arc_data._cli import main

SPEC = "maze:7?train=10&test=3"


def source_task(spec: str, seed: int) -> Task:
    source = parse_source(spec, seed=seed)
    (subset,) = source.subsets()
    (task,) = source.read(subset)
    return task


def test_cli_build_counts_and_exact_inverses(tmp_path: Path) -> None:
    output = tmp_path / "maze7.zarr"
    args = ["build", "--source", SPEC, "--subsets", "maze7", "--test-set", "maze7"]
    args += ["--num-aug", "20", "--max-grid", "7", "--seed", "7", "--output", str(output)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    # One task in 8 versions however many are asked for: the 8 dihedral transforms.
    assert "1 tasks, 8 puzzles, 80 train and 24 test examples" in result.stderr
    info = json.loads(CliRunner().invoke(main, ["info", str(output)]).stdout)
    assert info["counts"] == {
        "train": {"examples": 80, "puzzles": 8, "groups": 1},
        "test": {"examples": 24, "puzzles": 8, "groups": 1},
    }
    assert info["num_puzzle_identifiers"] == 9 and info["seq_len"] == 49

    store = open_store(output)
    assert store.metadata.tasks == (("maze7", "maze7"),)
    # What the scorer reads per identifier: a transform, colours that stay, no line orders.
    assert sorted(store.identifier_transform[1:].tolist()) == list(range(8))
    assert store.identifier_transform[1] == 0
    assert (store.identifier_colours == np.arange(10)).all()
    assert store.identifier_row_orders is None and store.identifier_col_orders is None
    task = source_task(SPEC, seed=7)
    for split, pairs in ((store.train, task.train), (store.test, task.test)):
        inputs, labels = split.read(np.arange(split.num_examples))
        for k, identifier in enumerate(split.puzzle_identifiers.tolist()):
            aug = store.augmentation(identifier)
            first = int(split.puzzle_offsets[k])
            for e, pair in enumerate(pairs):
                assert pair.output is not None
                grid_in = decode_grid(inputs[first + e], 7)
                grid_out = decode_grid(labels[first + e], 7)
                np.testing.assert_array_equal(grid_in, aug.apply(pair.input))
                np.testing.assert_array_equal(grid_out, aug.apply(pair.output))
                np.testing.assert_array_equal(aug.invert(grid_in), pair.input)
                np.testing.assert_array_equal(aug.invert(grid_out), pair.output)
    held_out = store.test_tasks["maze7"].test
    assert len(held_out) == 3
    for got, want in zip(held_out, task.test, strict=True):
        np.testing.assert_array_equal(got.input, want.input)


def test_mixed_with_sudoku_and_byte_identical(tmp_path: Path) -> None:
    config = BuildConfig(
        sources=("sudoku:4?train=5&test=2", "maze:5?train=3&test=1"),
        subsets=("sudoku4", "maze5"),
        test_set="maze5",
        num_aug=3,
        seed=1,
        max_grid=5,
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
    assert store.metadata.tasks == (("sudoku4", "sudoku4"), ("maze5", "maze5"))
    # Identifiers 1-4 are the Sudoku's (digits relabelled, lines reordered), 5-8 the
    # maze's: its colours stay and its line orders are the identity.
    colours, orders = store.identifier_colours, store.identifier_row_orders
    assert orders is not None and store.identifier_col_orders is not None
    assert (colours[2:5] != np.arange(10)).any() and (orders[2:5] != np.arange(5)).any()
    assert (colours[5:] == np.arange(10)).all()
    assert (orders[5:] == np.arange(5)).all()
    assert (store.identifier_col_orders[5:] == np.arange(5)).all()
    assert store.identifier_transform[5] == 0 and len(set(store.identifier_transform[5:])) == 4
