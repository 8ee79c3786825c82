"""Writing the store's zarr arrays: compressed token arrays filled shard by shard in the
background, and small index arrays."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from arc_data._layout import CHUNKS_PER_SHARD, chunk_rows

# Canvases are mostly PAD with a 12-token alphabet: zstd compresses them about 20x
# (better without byte or bit shuffling, measured) and decodes fast.
_COMPRESSOR = BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.noshuffle)


class ShardWriter:
    """Appends rows to a preallocated array, writing whole shards from two alternating
    buffers: one fills while the other is compressed and written in the background."""

    def __init__(self, array: zarr.Array[Any], executor: ThreadPoolExecutor) -> None:
        self._array = array
        self._executor = executor
        shard_rows = array.shards[0] if array.shards else array.chunks[0]
        shape = (min(shard_rows, array.shape[0]), *array.shape[1:])
        self._buffer = np.empty(shape, array.dtype)
        self._spare = np.empty(shape, array.dtype)
        self._pending: Future[None] | None = None
        self._filled = 0
        self._written = 0

    def append(self, rows: npt.NDArray[np.uint8]) -> None:
        start = 0
        while start < len(rows):
            take = min(len(rows) - start, len(self._buffer) - self._filled)
            self._buffer[self._filled : self._filled + take] = rows[start : start + take]
            self._filled += take
            start += take
            if self._filled == len(self._buffer):
                self._flush()

    def close(self) -> None:
        self._flush()
        self._wait()
        if self._written != self._array.shape[0]:
            raise RuntimeError(f"wrote {self._written} rows into {self._array.shape[0]}")

    def _flush(self) -> None:
        if not self._filled:
            return
        self._wait()  # the spare buffer is free once its write is done
        end = self._written + self._filled
        self._pending = self._executor.submit(
            self._array.__setitem__, slice(self._written, end), self._buffer[: self._filled]
        )
        self._written = end
        self._filled = 0
        self._buffer, self._spare = self._spare, self._buffer

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None


def token_array(root: zarr.Group, name: str, rows: int, seq_len: int) -> zarr.Array[Any]:
    chunk = chunk_rows(seq_len)
    return root.create_array(
        name,
        shape=(rows, seq_len),
        dtype=np.uint8,
        chunks=(chunk, seq_len),
        shards=(chunk * CHUNKS_PER_SHARD, seq_len),
        compressors=_COMPRESSOR,
        fill_value=0,
    )


def small_array(root: zarr.Group, name: str, values: npt.NDArray[Any]) -> None:
    array = root.create_array(
        name,
        shape=values.shape,
        dtype=values.dtype,
        chunks=(max(1, min(len(values), 1 << 20)), *values.shape[1:]),
        compressors=_COMPRESSOR,
        fill_value=0,
    )
    if values.size:
        array[...] = values
