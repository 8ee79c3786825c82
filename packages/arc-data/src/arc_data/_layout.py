"""Names and constants of the on-disk store layout, shared by the writer and the reader.

A store is a zarr v3 group:

- root attributes: the metadata (`format`, `format_version`, sizes, counts, seed, sources,
  the task table, ...), written last, so a store without them is incomplete;
- `train/` and `test/`: `inputs` and `labels` `[examples, seq_len]` uint8 token canvases
  (labels hold PAD where the loss ignores the token), `puzzle_offsets` `[puzzles + 1]`
  (the examples of the k-th puzzle of the split are `offsets[k]:offsets[k+1]`, contiguous),
  `puzzle_identifiers` `[puzzles]` and `group_offsets` `[groups + 1]` (the puzzles of group
  g, i.e. all versions of one original task, are `group_offsets[g]:group_offsets[g+1]`);
  in the test split the examples of a puzzle are its task's test inputs, in order;
- `identifiers/`: per puzzle identifier (0 is the blank puzzle) the task index (-1 for
  blank), the version index (0 = the original), the dihedral transform and the colour
  permutation that produced it; stores of Sudoku tasks also hold `row_order` and
  `col_order` `[identifiers, grid_size]` (uint8), the reordering of rows and columns
  applied before the dihedral transform (row i of the reordered grid is original row
  `row_order[i]`); other stores lack them, which means no reordering;
- `originals/`: attribute `tasks` holds the held-out test tasks in ARC JSON, for scoring.
"""

FORMAT_NAME = "arc-data-store"
FORMAT_VERSION = 1

SPLITS = ("train", "test")
TOKEN_ARRAYS = ("inputs", "labels")

# About 128 KiB of tokens per chunk, so reading one puzzle's few examples touches one or
# two chunks; 64 chunks per shard keep the file count low at 1000 augmentations.
CHUNK_BYTES = 1 << 17
CHUNKS_PER_SHARD = 64
MIN_CHUNK_ROWS = 16
MAX_CHUNK_ROWS = 4096


def chunk_rows(seq_len: int) -> int:
    rows = MIN_CHUNK_ROWS
    while rows * 2 * seq_len <= CHUNK_BYTES and rows * 2 <= MAX_CHUNK_ROWS:
        rows *= 2
    return rows
