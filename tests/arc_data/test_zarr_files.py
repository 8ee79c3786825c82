"""The files `_zarr_files` writes in zarr's place are byte for byte those zarr writes."""

from __future__ import annotations

import hashlib
import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.storage import MemoryStore

from arc_data._zarr_files import create_group, dumps_indented, shard_folder
from arc_data._zarr_io import ShardWriter, token_array


def tree_digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def canvases(rows: int, size: int, seed: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Rows of mostly PAD, some all PAD: whole chunks of PAD are not stored."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 12, size=(rows, size * size), dtype=np.uint8)
    values[rng.random(rows) < 0.7] = 0
    values[100:400] = 0  # chunks 1 and 2 (of 128 rows at size 5) hold only PAD
    return values


@pytest.mark.parametrize("rows", [0, 5, 127, 128, 8192 * 2, 8192 * 2 + 300])
def test_shards_are_the_bytes_zarr_writes(tmp_path: Path, rows: int) -> None:
    """Whole and partial shards and chunks, chunks of PAD alone, rows appended as crops
    of wider canvases and in pieces that straddle chunks and shards."""
    size = 5
    values = canvases(rows, size, seed=rows)
    theirs = zarr.open_group(tmp_path / "theirs.zarr", mode="w")
    array = token_array(theirs, "train/inputs", rows, size * size)
    if rows:
        array[...] = values
    ours = zarr.open_group(tmp_path / "ours.zarr", mode="w")
    # Rows bounded above, cut to size once written, as a build does.
    ours_array = token_array(ours, "train/inputs", rows + 1000, size * size)
    assert shard_folder(ours_array) is not None
    wide = np.zeros((rows, size + 1, size + 1), dtype=np.uint8)
    wide[:, :size, :size] = values.reshape(rows, size, size)
    with ThreadPoolExecutor(max_workers=3) as executor:
        writer = ShardWriter(ours_array, executor)
        for start in range(0, rows, 1000):
            writer.append(wide[start : start + 1000, :size, :size])
        writer.close()
    assert writer.written == rows
    ours_array.resize((rows, size * size))
    assert tree_digest(tmp_path / "ours.zarr") == tree_digest(tmp_path / "theirs.zarr")
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "ours.zarr/train/inputs"), values)


def test_arrays_of_other_stores_are_written_by_zarr() -> None:
    values = canvases(9000, 5, seed=1)
    root = zarr.open_group(MemoryStore(), mode="w")
    array = token_array(root, "x", len(values), 25)
    assert shard_folder(array) is None
    with ThreadPoolExecutor(max_workers=2) as executor:
        writer = ShardWriter(array, executor)
        writer.append(values[:5000])
        writer.append(values[5000:])
        writer.close()
    np.testing.assert_array_equal(array[...], values)


ATTRIBUTES: list[Any] = [
    {},
    [],
    {"tasks": {"a": {"train": [{"input": [[1, 2], [3, 4]], "output": [[0]]}], "test": []}}},
    [[[]], [[1]], [1, [2, []], {}], (3, 4)],
    {"é": 'ü\n"q"', "none": None, "flags": [True, False, 1, 0], "x": [1.5, -0.0, 1e300]},
    {"special": [math.nan, math.inf, -math.inf], "big": 2**70, "neg": [-1, -20]},
    {1: "int key", "s": {2.5: [1], None: [2], True: 3}},
    [{"nested": [[{"deep": [[[7]]]}]]}],
]


@pytest.mark.parametrize("value", ATTRIBUTES)
def test_indented_json_is_json_dumps(value: Any) -> None:
    assert dumps_indented(value) == json.dumps(value, indent=2, allow_nan=True)


def test_group_attributes_are_the_bytes_zarr_writes(tmp_path: Path) -> None:
    attributes = {"tasks": {"t1": {"train": [{"input": [[1, 2]], "output": [[3], [4]]}]}}}
    theirs = zarr.open_group(tmp_path / "theirs.zarr", mode="w")
    theirs.create_group("originals", attributes=attributes)
    ours = zarr.open_group(tmp_path / "ours.zarr", mode="w")
    create_group(ours, "originals", attributes)
    assert tree_digest(tmp_path / "ours.zarr") == tree_digest(tmp_path / "theirs.zarr")
    reopened = zarr.open_group(tmp_path / "ours.zarr", mode="r")["originals"]
    assert dict(reopened.attrs) == attributes
