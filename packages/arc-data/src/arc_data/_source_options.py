"""What the generated and CSV sources (Sudoku, maze) share: their `?name=N&...` parameters,
their one subset, and the seeded subsampling and held-out split of CSV rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from arc_data._errors import ArcDataError


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
