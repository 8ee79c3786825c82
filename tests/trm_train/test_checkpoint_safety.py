"""Checkpoints are read with `weights_only=True`: a run folder from someone else cannot
run code when it is resumed, evaluated or fine-tuned from, and what a run writes holds
tensors and plain values only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import torch

import arc_data
import trm_model
from trm_train import (
    Distributed,
    LoggingConfig,
    TrainConfig,
    list_checkpoints,
    load_checkpoint,
    load_initial_weights,
    load_trained_model,
    tiny,
    train,
)
from trm_train._checkpoint import save_checkpoint

CPU = Distributed()


class _WritesAMarker:
    """Unpickling it creates `marker`: what a malicious checkpoint could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str, str]]:
        return open, (str(self.marker), "w")


@pytest.fixture(scope="module")
def store_path(transform_store: Callable[..., Path]) -> Path:
    return transform_store(
        tasks=12, shape=(3, 3), transform="mirror", seed=0, num_aug=1, held_out=True
    )


def _config(store: Path, **loop: Any) -> TrainConfig:
    meta = arc_data.open_store(store).metadata
    config = tiny(meta.num_puzzle_identifiers, meta.seq_len, store, "sum")
    return attrs.evolve(
        config,
        model=attrs.evolve(config.model, hidden_size=32, halt_max_steps=2),
        # Failure weights and the weighted sampler hold NumPy arrays.
        data=attrs.evolve(config.data, global_batch_size=4, failure_weighted_sampling=True),
        loop=attrs.evolve(config.loop, **{"checkpoint_every": 100, **loop}),
        logging=LoggingConfig(wandb="disabled"),
    )


def _plant(run_dir: Path, step: int, state: dict[str, Any], marker: Path) -> Path:
    """Write `state` with a code-running object in it as the run's checkpoint of `step`."""
    path = run_dir / "checkpoints" / f"step-{step:08d}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**state, "sampler": {"payload": _WritesAMarker(marker)}}, path)
    return path


def test_a_checkpoint_that_would_run_code_is_refused_everywhere(
    store_path: Path, tmp_path: Path
) -> None:
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    config = _config(store_path, steps=1)
    train(config, run_dir, CPU, progress=False)
    [(step, good)] = list_checkpoints(run_dir)
    state = torch.load(good, weights_only=True)
    path = _plant(run_dir, step, state, marker)

    model = trm_model.TRM(config.model, generator=torch.Generator().manual_seed(0))
    readers: list[Callable[[], object]] = [
        lambda: load_checkpoint(run_dir),
        lambda: load_trained_model(run_dir),  # trm-eval, trm-report
        lambda: load_initial_weights(model, run_dir),  # --init-from RUN
        lambda: load_initial_weights(model, path),  # --init-from RUN/checkpoints/step-N.pt
        lambda: train(
            attrs.evolve(config, loop=attrs.evolve(config.loop, steps=2)),
            run_dir,
            CPU,
            resume=True,
            progress=False,
        ),
    ]
    for read in readers:
        with pytest.raises(ValueError, match="refused") as raised:
            read()
        message = str(raised.value)
        assert message.startswith(f"{path}: ") and "io.open" in message, message
        # torch's advice to load with weights_only=False is not passed on.
        assert "weights_only" not in message
        assert not marker.exists()


def test_a_run_writes_only_tensors_and_plain_values(store_path: Path, tmp_path: Path) -> None:
    train(_config(store_path, steps=2), tmp_path / "run", CPU, progress=False)
    [(_, path)] = list_checkpoints(tmp_path / "run")
    # Nothing that weights_only loading would need allow-listed (NumPy arrays included).
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    state = torch.load(path, weights_only=True)
    assert state["sampler"]["plan_weights"].dtype == torch.float64
    assert state["failure_weights"]["total"].dtype == torch.int64


def test_numeric_arrays_of_older_checkpoints_load_but_no_other_numpy_object(
    tmp_path: Path,
) -> None:
    older = {"step": 3, "sampler": {"plan_weights": np.ones(3), "ids": np.arange(4)}}
    (tmp_path / "old" / "checkpoints").mkdir(parents=True)
    torch.save(older, tmp_path / "old" / "checkpoints" / "step-00000003.pt")
    _, state = load_checkpoint(tmp_path / "old")
    np.testing.assert_array_equal(state["sampler"]["plan_weights"], np.ones(3), strict=True)
    np.testing.assert_array_equal(state["sampler"]["ids"], np.arange(4), strict=True)

    for value in (np.array([1, None], dtype=object), np.float64(0.5)):
        folder = tmp_path / type(value).__name__
        path = folder / "checkpoints" / "step-00000001.pt"
        path.parent.mkdir(parents=True)
        torch.save({"step": 1, "value": value}, path)
        with pytest.raises(ValueError, match=f"^{path}: refused"):
            load_checkpoint(folder)


def test_saving_refuses_what_loading_would_refuse(tmp_path: Path) -> None:
    state = {"step": 1, "sampler": {"rng": np.random.default_rng(0)}}
    with pytest.raises(TypeError, match=r"state\['sampler'\]\['rng'\] is a numpy.random"):
        save_checkpoint(tmp_path / "run", 1, state, keep=1)
    assert list_checkpoints(tmp_path / "run") == []
    with pytest.raises(TypeError, match=r"state\['weight'\] is a numpy.float64"):
        save_checkpoint(tmp_path / "run", 1, {"weight": np.float64(0.2)}, keep=1)
