"""Files of the store written byte for byte as zarr writes them, without zarr's
machinery, where that machinery took longer than the work itself (measured);
tests/arc_data/test_zarr_files.py compares the files with zarr's own.

- Shards of the token arrays: zarr spent more time on its per-chunk machinery than on
  compressing. Only arrays of the layout `token_array` makes, in a local store, are
  written so (`shard_folder` returns None for others, which zarr writes).
- Group attributes of megabytes (the held-out tasks): zarr deep-copies them and writes
  them with the pure-Python JSON encoder (indented), a cell of a grid at a time.
"""

from __future__ import annotations

import json
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import google_crc32c
import numcodecs  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt
import zarr
from zarr.codecs import BloscCodec, BloscShuffle
from zarr.storage import LocalStore

from arc_data._layout import CHUNKS_PER_SHARD

# Canvases are mostly PAD with a 12-token alphabet: zstd compresses them about 20x
# (better without byte or bit shuffling, measured) and decodes fast.
COMPRESSOR = BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.noshuffle)
# COMPRESSOR as zarr runs it, through numcodecs (typesize 1: uint8 tokens).
_BLOSC = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.NOSHUFFLE, blocksize=0)
_BLOSC_CONFIG = {
    "typesize": 1,
    "cname": "zstd",
    "clevel": 3,
    "shuffle": "noshuffle",
    "blocksize": 0,
}
# The index entry (offset, length) of a chunk a shard does not store.
_MISSING = 2**64 - 1


def shard_folder(array: zarr.Array[Any]) -> Path | None:
    """The folder of `array` when it is a token array in a local store, so that
    `write_shard` writes the bytes zarr would; None otherwise."""
    chunk = array.chunks[0]
    metadata = json.loads(json.dumps(array.metadata.to_dict()))
    layout = (
        metadata.get("codecs") == _token_codecs(chunk, array.shape[1])
        and metadata.get("chunk_key_encoding")
        == {"name": "default", "configuration": {"separator": "/"}}
        and metadata.get("fill_value") == 0
        and not array.config.write_empty_chunks
        and array.shards == (chunk * CHUNKS_PER_SHARD, array.shape[1])
    )
    if not layout or not isinstance(array.store, LocalStore):
        return None
    return Path(array.store.root) / array.path


def encode_chunk(parts: list[npt.NDArray[np.uint8]], chunk: int, width: int) -> bytes | None:
    """A chunk as a shard stores it: its rows (`parts` `[k, ...]` in order, each row of
    `width` tokens in C order) padded with the fill value 0 to `chunk` rows, compressed;
    None (not stored) when all 0. Copying the rows together here, on a writer thread,
    spares the encoding thread that copy."""
    rows = np.empty((chunk, width), dtype=np.uint8)
    filled = 0
    for part in parts:
        rows[filled : filled + len(part)].reshape(part.shape)[...] = part
        filled += len(part)
    rows[filled:] = 0
    if not rows[:filled].any():
        return None
    return bytes(_BLOSC.encode(rows))


def write_shard(path: Path, encoded: list[Future[bytes | None]]) -> None:
    """One shard: its stored chunks in order, then the index (offset and length of each
    of the CHUNKS_PER_SHARD chunks as little-endian uint64, 2**64 - 1 for a chunk not
    stored) and the index's CRC-32C; no file when no chunk is stored (as zarr)."""
    index = np.full((CHUNKS_PER_SHARD, 2), _MISSING, dtype="<u8")
    stored: list[bytes] = []
    offset = 0
    for k, future in enumerate(encoded):
        chunk = future.result()
        if chunk is not None:
            index[k] = (offset, len(chunk))
            stored.append(chunk)
            offset += len(chunk)
    if not stored:
        return
    stored.append(index.tobytes())
    stored.append(google_crc32c.value(stored[-1]).to_bytes(4, "little"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(stored))


def create_group(root: zarr.Group, name: str, attributes: dict[str, Any]) -> None:
    """`root.create_group(name, attributes=attributes)`, its zarr.json written here."""
    group = root.create_group(name)
    indent = zarr.config.get("json_indent")
    if not isinstance(group.store, LocalStore) or indent != 2:
        group.attrs.update(attributes)
        return
    document = group.metadata.to_dict()
    document["attributes"] = attributes
    path = Path(group.store.root) / group.path / "zarr.json"
    path.write_bytes(dumps_indented(document).encode())


def dumps_indented(value: Any) -> str:
    """`json.dumps(value, indent=2, allow_nan=True)`, faster on lists of ints: each is
    joined in one call rather than a number at a time."""
    parts: list[str] = []
    _encode(value, "\n", parts)
    return "".join(parts)


def _encode(value: Any, newline: str, parts: list[str]) -> None:
    """Append the JSON of `value`, which starts at an indentation `newline` ends with."""
    inner = newline + "  "
    if isinstance(value, dict) and value and all(type(key) is str for key in value):
        parts.append("{")
        separator = inner
        for key, item in value.items():
            parts.append(separator + json.dumps(key) + ": ")
            _encode(item, inner, parts)
            separator = "," + inner
        parts.append(newline + "}")
    elif isinstance(value, list | tuple) and value:
        if all(type(item) is int for item in value):
            # int.__repr__ is how json writes an int (bool, an int, is left out above).
            parts.append("[" + inner + ("," + inner).join(map(repr, value)) + newline + "]")
            return
        parts.append("[")
        separator = inner
        for item in value:
            parts.append(separator)
            _encode(item, inner, parts)
            separator = "," + inner
        parts.append(newline + "]")
    else:
        # Scalars, empty containers, and dicts of non-string keys, which json converts.
        parts.append(json.dumps(value, indent=2, allow_nan=True).replace("\n", newline))


def _token_codecs(chunk: int, width: int) -> list[dict[str, Any]]:
    """The codecs of a token array, as its zarr.json lists them."""
    return [
        {
            "name": "sharding_indexed",
            "configuration": {
                "chunk_shape": [chunk, width],
                "codecs": [{"name": "bytes"}, {"name": "blosc", "configuration": _BLOSC_CONFIG}],
                "index_codecs": [
                    {"name": "bytes", "configuration": {"endian": "little"}},
                    {"name": "crc32c"},
                ],
                "index_location": "end",
            },
        }
    ]
