"""What the generated and CSV sources (Sudoku, maze) share: their `?name=N&...` parameters,
their one subset, reading `source,question,answer,rating` CSV files, and the seeded
subsampling and held-out split of CSV rows."""

from __future__ import annotations

import csv
from array import array
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from arc_data._errors import ArcDataError

CSV_HEADER = ["source", "question", "answer", "rating"]


def parameters(spec: str, query: str, allowed: Sequence[str]) -> dict[str, int]:
    """The positive integers of `name=N&...`, each named in `allowed` at most once."""
    values: dict[str, int] = {}
    for item in query.split("&") if query else []:
        name, _, text = item.partition("=")
        if name not in allowed:
            raise ArcDataError(
                f"source {spec!r}: unknown parameter {name!r}; choose from {', '.join(allowed)}"
            )
        if name in values:
            raise ArcDataError(f"source {spec!r}: parameter {name!r} given twice")
        if not (text.isascii() and text.isdigit()) or int(text) < 1:
            raise ArcDataError(f"source {spec!r}: {name}={text!r} is not a positive integer")
        values[name] = int(text)
    return values


def check_subset(spec: str, subset: str, offered: list[str]) -> None:
    if subset not in offered:
        raise ArcDataError(f"{spec}: unknown subset {subset!r} (available: {offered[0]})")


def subsample(
    available: int, wanted: int | None, rng: np.random.Generator, where: str
) -> npt.NDArray[np.int64]:
    """`wanted` rows of `available` drawn without replacement, in file order (all if None)."""
    if wanted is None:
        return np.arange(available)
    if wanted > available:
        raise ArcDataError(f"{where}: {wanted} puzzles asked for, {available} available")
    return np.sort(rng.choice(available, size=wanted, replace=False))


def split_by_group(
    group: npt.NDArray[np.intp], test: int, rng: np.random.Generator
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Rows held out and rows left, given each row's group `0..g-1`: whole groups, in
    random order, are held out until they hold at least `test` rows (the caller reports
    an empty rest)."""
    sizes = np.bincount(group)
    order = rng.permutation(len(sizes))
    enough = int(np.searchsorted(np.cumsum(sizes[order]), test))
    held = np.isin(group, order[: enough + 1])
    return np.flatnonzero(held), np.flatnonzero(~held)


def read_csv_grids(
    path: Path, side_of_length: Mapping[int, int], lengths: str, items: str
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], array[int]]:
    """The raw characters of a CSV file's questions and answers as writable `[k, n, n]`
    byte arrays, and each row's line number. Every row must have the four fields of
    `CSV_HEADER` and a question and answer of one length `n * n` in `side_of_length`
    (`lengths` says which, for the error); `items` names the rows (e.g. "puzzles")."""
    # Characters go straight into byte buffers (non-ASCII ones as '?', one byte each, so
    # cell positions hold): a few hundred MB for Sudoku-Extreme's 3.8 M rows, not GBs of
    # Python strings.
    questions, answers, lines = bytearray(), bytearray(), array("q")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise ArcDataError(f"{path}: empty, expected the header {','.join(CSV_HEADER)}")
            if header != CSV_HEADER:
                raise ArcDataError(
                    f"{path}: header is {','.join(header)!r}, expected {','.join(CSV_HEADER)}"
                )
            length = 0
            for row in reader:
                if len(row) != len(CSV_HEADER):
                    raise ArcDataError(
                        f"{path}: line {reader.line_num}: {len(row)} fields, expected 4"
                    )
                question, answer = row[1], row[2]
                length = length or len(question)
                if length not in side_of_length or len(question) != length or len(answer) != length:
                    raise ArcDataError(
                        f"{path}: line {reader.line_num}: question of {len(question)} and "
                        f"answer of {len(answer)} characters; expected "
                        + (f"{length} as on line {lines[0]}" if lines else lengths)
                    )
                questions += question.encode("ascii", errors="replace")
                answers += answer.encode("ascii", errors="replace")
                lines.append(reader.line_num)
    except OSError as error:
        raise ArcDataError(f"{path}: cannot read ({error.strerror})") from error
    except UnicodeDecodeError as error:
        raise ArcDataError(f"{path}: not UTF-8 text ({error.reason})") from error
    except csv.Error as error:
        raise ArcDataError(f"{path}: not a valid CSV file ({error})") from error
    if not lines:
        raise ArcDataError(f"{path}: no {items}")
    side = side_of_length[length]
    shape = (len(lines), side, side)
    return (
        np.frombuffer(questions, dtype=np.uint8).reshape(shape),
        np.frombuffer(answers, dtype=np.uint8).reshape(shape),
        lines,
    )
