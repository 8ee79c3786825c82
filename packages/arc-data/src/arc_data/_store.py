"""Opening a built store: metadata, the two splits, and the identifier -> task map."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
import zarr
import zarr.errors

from arc_data._augment import Augmentation
from arc_data._errors import ArcDataError
from arc_data._layout import FORMAT_NAME, FORMAT_VERSION
from arc_data._task import Task, parse_task

TokenArray = npt.NDArray[np.uint8]


@attrs.frozen
class StoreMetadata:
    """The root attributes of a store (see `arc_data._layout` for the layout)."""

    grid_size: int
    seq_len: int
    vocab_size: int
    num_puzzle_identifiers: int
    num_aug: int
    seed: int
    sources: tuple[str, ...]
    subsets: tuple[str, ...]
    test_set: str | None
    has_test_labels: bool
    tasks: tuple[tuple[str, str], ...]
    attributes: dict[str, Any] = attrs.field(eq=False, repr=False)

    @classmethod
    def from_attributes(cls, attributes: dict[str, Any]) -> StoreMetadata:
        return cls(
            grid_size=attributes["grid_size"],
            seq_len=attributes["seq_len"],
            vocab_size=attributes["vocab_size"],
            num_puzzle_identifiers=attributes["num_puzzle_identifiers"],
            num_aug=attributes["num_aug"],
            seed=attributes["seed"],
            sources=tuple(attributes["sources"]),
            subsets=tuple(attributes["subsets"]),
            test_set=attributes["test_set"],
            has_test_labels=attributes["has_test_labels"],
            tasks=tuple((subset, task_id) for subset, task_id in attributes["tasks"]),
            attributes=attributes,
        )


class Split:
    """One split (`train` or `test`): token arrays on disk (or in memory) and its indexes."""

    def __init__(self, name: str, group: zarr.Group, *, in_memory: bool) -> None:
        self.name = name
        inputs = group["inputs"]
        labels = group["labels"]
        assert isinstance(inputs, zarr.Array) and isinstance(labels, zarr.Array)
        self._inputs: zarr.Array[Any] | TokenArray = np.asarray(inputs) if in_memory else inputs
        self._labels: zarr.Array[Any] | TokenArray = np.asarray(labels) if in_memory else labels
        self.puzzle_offsets: npt.NDArray[np.int64] = _read(group, "puzzle_offsets")
        self.puzzle_identifiers: npt.NDArray[np.int32] = _read(group, "puzzle_identifiers")
        self.group_offsets: npt.NDArray[np.int64] = _read(group, "group_offsets")

    @property
    def num_examples(self) -> int:
        return int(self.puzzle_offsets[-1])

    @property
    def num_puzzles(self) -> int:
        return len(self.puzzle_identifiers)

    @property
    def num_groups(self) -> int:
        return len(self.group_offsets) - 1

    def read(self, examples: npt.NDArray[np.int64]) -> tuple[TokenArray, TokenArray]:
        """Input and label token canvases `[n, seq_len]` of the given examples, in order."""
        examples = np.asarray(examples, dtype=np.int64)
        if examples.size and (examples.min() < 0 or examples.max() >= self.num_examples):
            raise IndexError(
                f"{self.name} split: example index out of range 0..{self.num_examples - 1}"
            )
        # Reading sorted unique rows lets zarr decode each touched chunk once.
        unique, inverse = np.unique(examples, return_inverse=True)
        if isinstance(self._inputs, np.ndarray) and isinstance(self._labels, np.ndarray):
            return self._inputs[examples], self._labels[examples]
        assert isinstance(self._inputs, zarr.Array) and isinstance(self._labels, zarr.Array)
        inputs = np.asarray(self._inputs.oindex[unique, :], dtype=np.uint8)
        labels = np.asarray(self._labels.oindex[unique, :], dtype=np.uint8)
        return inputs[inverse], labels[inverse]

    def puzzle_of(self, examples: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Index (into this split's puzzles) of the puzzle each example belongs to."""
        return np.searchsorted(self.puzzle_offsets, examples, side="right") - 1

    def identifiers_of(self, examples: npt.NDArray[np.int64]) -> npt.NDArray[np.int32]:
        return self.puzzle_identifiers[self.puzzle_of(examples)]


class ArcStore:
    """A built store. Open it with `open_store`."""

    def __init__(
        self, path: Path, root: zarr.Group, metadata: StoreMetadata, *, in_memory: bool
    ) -> None:
        self.path = path
        self.metadata = metadata
        self._root = root
        self.train = Split("train", _group(root, "train"), in_memory=in_memory)
        self.test = Split("test", _group(root, "test"), in_memory=in_memory)
        identifiers = _group(root, "identifiers")
        self._task_index: npt.NDArray[np.int32] = _read(identifiers, "task_index")
        self._version: npt.NDArray[np.int32] = _read(identifiers, "version")
        self._transform: npt.NDArray[np.uint8] = _read(identifiers, "transform")
        self._colours: npt.NDArray[np.uint8] = _read(identifiers, "colours")
        # Only stores whose augmentations reorder lines (Sudoku) hold line orders.
        self._row_order: npt.NDArray[np.uint8] | None = None
        self._col_order: npt.NDArray[np.uint8] | None = None
        if "row_order" in identifiers:
            self._row_order = _read(identifiers, "row_order")
            self._col_order = _read(identifiers, "col_order")

    def split(self, name: str) -> Split:
        if name == "train":
            return self.train
        if name == "test":
            return self.test
        raise ValueError(f"unknown split {name!r}; choose train or test")

    def _check_identifier(self, identifier: int) -> None:
        if not 1 <= identifier < self.metadata.num_puzzle_identifiers:
            raise ArcDataError(
                f"{self.path}: puzzle identifier {identifier} is not in "
                f"1..{self.metadata.num_puzzle_identifiers - 1}"
            )

    def augmentation(self, identifier: int) -> Augmentation:
        """The augmentation that turned the original task into this puzzle."""
        self._check_identifier(identifier)
        return Augmentation(
            int(self._transform[identifier]),
            tuple(int(c) for c in self._colours[identifier]),
            () if self._row_order is None else self._row_order[identifier].tolist(),
            () if self._col_order is None else self._col_order[identifier].tolist(),
        )

    def task_of(self, identifier: int) -> tuple[str, str]:
        """(subset, task id) of the original task of a puzzle identifier."""
        self._check_identifier(identifier)
        return self.metadata.tasks[int(self._task_index[identifier])]

    def version_of(self, identifier: int) -> int:
        """0 for the original task, k for its k-th augmented version."""
        self._check_identifier(identifier)
        return int(self._version[identifier])

    @property
    def identifier_task_index(self) -> npt.NDArray[np.int32]:
        """Per identifier, the index of its task in `metadata.tasks` (-1 for blank)."""
        return self._task_index

    @property
    def identifier_transform(self) -> npt.NDArray[np.uint8]:
        return self._transform

    @property
    def identifier_colours(self) -> npt.NDArray[np.uint8]:
        return self._colours

    @property
    def identifier_row_orders(self) -> npt.NDArray[np.uint8] | None:
        """Per identifier, the row order `[grid_size]` applied before the dihedral
        transform (see `Augmentation`), or None when no puzzle of the store reorders
        lines: only Sudoku stores do, and their predictions need it to be mapped back."""
        return self._row_order

    @property
    def identifier_col_orders(self) -> npt.NDArray[np.uint8] | None:
        """Per identifier, the column order (see `identifier_row_orders`)."""
        return self._col_order

    @cached_property
    def test_tasks(self) -> dict[str, Task]:
        """The held-out tasks in their original frame (test outputs None when unknown)."""
        originals = _group(self._root, "originals").attrs["tasks"]
        assert isinstance(originals, dict)
        return {
            task_id: parse_task(
                value, task_id=task_id, subset=self.metadata.test_set or "", source=str(self.path)
            )
            for task_id, value in originals.items()
        }


def open_store(path: str | Path, *, in_memory: bool = False) -> ArcStore:
    """Open a store built by `arc-data build`, checking that it is complete and its format.

    `in_memory` loads the token arrays into RAM (fast sampling for small stores).
    """
    path = Path(path)
    if not path.exists():
        raise ArcDataError(f"{path}: no such store")
    try:
        root = zarr.open_group(path, mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError) as error:
        raise ArcDataError(f"{path}: not a zarr store ({error})") from error
    attributes = dict(root.attrs)
    if attributes.get("format") != FORMAT_NAME:
        raise ArcDataError(f"{path}: not an arc-data store")
    if "format_version" not in attributes:
        raise ArcDataError(f"{path}: incomplete store (its build did not finish)")
    if attributes["format_version"] != FORMAT_VERSION:
        raise ArcDataError(
            f"{path}: store format version {attributes['format_version']}, this arc-data reads "
            f"version {FORMAT_VERSION}; rebuild it with `arc-data build`"
        )
    return ArcStore(path, root, StoreMetadata.from_attributes(attributes), in_memory=in_memory)


def _group(root: zarr.Group, name: str) -> zarr.Group:
    group = root[name]
    assert isinstance(group, zarr.Group)
    return group


def _read(group: zarr.Group, name: str) -> Any:
    array = group[name]
    assert isinstance(array, zarr.Array)
    return array[...]
