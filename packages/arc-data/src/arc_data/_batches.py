"""Model-ready batches: `make_batch` reads examples of a split, `iter_test_batches` walks
a whole split in order (evaluation), sliced per rank and padded."""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import numpy as np
import numpy.typing as npt

from arc_data._encoding import IGNORE_LABEL, PAD
from arc_data._store import Split, TokenArray


@attrs.frozen
class Batch:
    """Model-ready arrays. Padding rows (test split) have identifier 0, PAD inputs,
    ignored labels and example index -1."""

    inputs: npt.NDArray[np.int32]  # [b, seq_len] tokens
    labels: npt.NDArray[np.int32]  # [b, seq_len] tokens, IGNORE_LABEL where ignored
    puzzle_identifiers: npt.NDArray[np.int32]  # [b]
    example_indices: npt.NDArray[np.int64]  # [b] index into the split, -1 for padding

    def __len__(self) -> int:
        return len(self.puzzle_identifiers)


def make_batch(
    split: Split, examples: npt.NDArray[np.int64], *, pad_to: int | None = None
) -> Batch:
    """Read `examples` of `split` into a `Batch`, padded with blank rows up to `pad_to`."""
    inputs, labels = split.read(examples)
    identifiers = split.identifiers_of(examples).astype(np.int32)
    indices = np.asarray(examples, dtype=np.int64)
    missing = 0 if pad_to is None else pad_to - len(indices)
    if missing > 0:
        seq_len = inputs.shape[1]
        inputs = np.concatenate([inputs, np.full((missing, seq_len), PAD, np.uint8)])
        labels = np.concatenate([labels, np.full((missing, seq_len), PAD, np.uint8)])
        identifiers = np.concatenate([identifiers, np.zeros(missing, np.int32)])
        indices = np.concatenate([indices, np.full(missing, -1, np.int64)])
    return Batch(
        inputs=inputs.astype(np.int32),
        labels=_labels(labels),
        puzzle_identifiers=identifiers,
        example_indices=indices,
    )


def _labels(tokens: TokenArray) -> npt.NDArray[np.int32]:
    return np.where(tokens == PAD, IGNORE_LABEL, tokens.astype(np.int32)).astype(np.int32)


def iter_test_batches(
    split: Split, global_batch_size: int, *, rank: int = 0, world_size: int = 1
) -> Iterator[Batch]:
    """The whole split in order, in global batches sliced per rank; the last is padded.

    Every rank yields the same number of batches (possibly all padding), so ranks can
    run collectives in step.
    """
    if global_batch_size % world_size:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by {world_size} ranks"
        )
    local = global_batch_size // world_size
    for start in range(0, split.num_examples, global_batch_size):
        first = min(start + rank * local, split.num_examples)
        last = min(start + (rank + 1) * local, split.num_examples)
        yield make_batch(split, np.arange(first, last, dtype=np.int64), pad_to=local)
