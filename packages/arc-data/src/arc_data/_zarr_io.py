"""Writing the store's zarr arrays: compressed token arrays filled shard by shard in the
background, and small index arrays."""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr

from arc_data._layout import CHUNKS_PER_SHARD, chunk_rows
from arc_data._zarr_files import COMPRESSOR, encode_chunk, shard_folder, write_shard


class ShardWriter:
    """Appends rows to a preallocated array (from its start, up to as many rows as it
    has), a whole shard at a time: the rows of a shard are compressed and written in the
    background while the next one fills.

    Appended rows are kept as they come (views, such as the crops of wider canvases) and
    copied together on `executor`'s threads, chunk by chunk as they are compressed
    (blosc releases the GIL); for an array of another layout than `token_array` makes,
    zarr writes each shard from one copy of its rows. At most two shards' rows are held.
    """

    def __init__(self, array: zarr.Array[Any], executor: ThreadPoolExecutor) -> None:
        self._array = array
        self._executor = executor
        self._shard_rows = array.shards[0] if array.shards else array.chunks[0]
        self._width = int(np.prod(array.shape[1:]))
        self._folder = shard_folder(array)
        self._parts: list[npt.NDArray[np.uint8]] = []
        self._filled = 0
        self._written = 0
        self._pending: Callable[[], None] | None = None

    def append(self, rows: npt.NDArray[np.uint8]) -> None:
        """Append `rows` `[n, ...]`, each holding one row of the array in C order. They
        must not change until written (`close`)."""
        start = 0
        while start < len(rows):
            take = min(len(rows) - start, self._shard_rows - self._filled)
            self._parts.append(rows[start : start + take])
            self._filled += take
            start += take
            if self._filled == self._shard_rows:
                self._flush()

    @property
    def array(self) -> zarr.Array[Any]:
        return self._array

    @property
    def written(self) -> int:
        """Rows appended, all written once `close` returns."""
        return self._written

    def close(self) -> None:
        self._flush()
        self._wait()

    def _flush(self) -> None:
        if not self._filled:
            return
        self._wait()  # at most one shard in the background
        parts, self._parts = self._parts, []
        end = self._written + self._filled
        if self._folder is None:
            rows = np.concatenate([p.reshape(len(p), self._width) for p in parts])
            written = self._executor.submit(
                self._array.__setitem__, slice(self._written, end), rows
            )
            self._pending = written.result
        else:
            # Every flush but the last fills a whole shard, so it starts one.
            shard = self._written // self._shard_rows
            path = self._folder / self._array.metadata.encode_chunk_key((shard, 0))
            chunk = self._array.chunks[0]
            encoded = [
                self._executor.submit(encode_chunk, chunk_parts, chunk, self._width)
                for chunk_parts in _split(parts, chunk)
            ]
            self._pending = functools.partial(write_shard, path, encoded)
        self._written = end
        self._filled = 0

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending()


def _split(parts: list[npt.NDArray[np.uint8]], size: int) -> list[list[npt.NDArray[np.uint8]]]:
    """The rows of `parts` in consecutive groups of `size` rows (the last maybe fewer),
    each group as slices of the parts."""
    groups: list[list[npt.NDArray[np.uint8]]] = [[]]
    room = size
    for part in parts:
        start = 0
        while start < len(part):
            if room == 0:
                groups.append([])
                room = size
            take = min(room, len(part) - start)
            groups[-1].append(part[start : start + take])
            room -= take
            start += take
    return groups if groups[0] else []


def token_array(root: zarr.Group, name: str, rows: int, seq_len: int) -> zarr.Array[Any]:
    chunk = chunk_rows(seq_len)
    return root.create_array(
        name,
        shape=(rows, seq_len),
        dtype=np.uint8,
        chunks=(chunk, seq_len),
        shards=(chunk * CHUNKS_PER_SHARD, seq_len),
        compressors=COMPRESSOR,
        fill_value=0,
    )


def small_array(root: zarr.Group, name: str, values: npt.NDArray[Any]) -> None:
    array = root.create_array(
        name,
        shape=values.shape,
        dtype=values.dtype,
        chunks=(max(1, min(len(values), 1 << 20)), *values.shape[1:]),
        compressors=COMPRESSOR,
        fill_value=0,
    )
    if values.size:
        array[...] = values
