"""What a resume puts back on a GPU run, checked on the CPU: optimizer step counts and
aggregator buffers on the parameters' device, the CUDA generator, and `--deterministic`
reaching PyTorch. No GPU here: devices are faked with the meta device or monkeypatched."""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
from click.testing import CliRunner
from torchjd.aggregation import ExcessMTLWeighting

import arc_data
from trm_train import (
    Distributed,
    LoggingConfig,
    TrainConfig,
    read_run_config,
    tiny,
    train,
)
from trm_train.training._adam_atan2 import make_adam_atan2
from trm_train.training._build import build_trainer
from trm_train.training._cli import main
from trm_train.training._loop import _resume, _save
from trm_train.training._step import train_step

CPU = Distributed()
CUDA = Distributed(device=torch.device("cuda", 0))
META = torch.device("meta")


@pytest.fixture(scope="module")
def store_path(transform_store: Callable[..., Path]) -> Path:
    return transform_store(
        tasks=12, shape=(3, 3), transform="mirror", seed=0, num_aug=1, held_out=True
    )


def _config(
    store: Path, split: str = "sum", aggregator: str = "upgrad", **loop: Any
) -> TrainConfig:
    meta = arc_data.open_store(store).metadata
    config = tiny(meta.num_puzzle_identifiers, meta.seq_len, store, split)
    return attrs.evolve(
        config,
        model=attrs.evolve(config.model, hidden_size=32, halt_max_steps=2),
        objective=attrs.evolve(config.objective, aggregator=aggregator),
        data=attrs.evolve(config.data, global_batch_size=4),
        loop=attrs.evolve(config.loop, **{"steps": 1, "checkpoint_every": 100, **loop}),
        logging=LoggingConfig(wandb="disabled"),
    )


class _FakeFusedAdamATan2(torch.optim.Optimizer):
    """Stands in for `adam_atan2.AdamATan2` (the CUDA kernel), which does not install here."""

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        betas: tuple[float, float],
        weight_decay: float,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})


@pytest.mark.parametrize("fused", [False, True])
def test_loading_adam_atan2_state_puts_each_step_on_its_parameter_device(
    fused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if fused:
        module = types.ModuleType("adam_atan2")
        module.AdamATan2 = _FakeFusedAdamATan2  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "adam_atan2", module)
    # What a checkpoint read with map_location="cpu" holds (a float64 count, as older
    # optimizers wrote, is made float32 too).
    saved = {
        "state": {
            0: {
                "step": torch.tensor(3.0, dtype=torch.float64),
                "exp_avg": torch.ones(2, 3),
                "exp_avg_sq": torch.ones(2, 3),
            }
        },
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.95), "weight_decay": 0.1, "params": [0]}],
    }
    param = torch.nn.Parameter(torch.empty(2, 3, device=META))
    device = torch.device("cuda") if fused else torch.device("cpu")
    optimizer = make_adam_atan2(
        [param], lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, device=device
    )
    assert isinstance(optimizer, _FakeFusedAdamATan2) == fused
    optimizer.load_state_dict(saved)
    state = optimizer.state[param]
    assert state["step"].device == META and state["step"].dtype == torch.float32
    assert state["exp_avg"].device == META


# Loading the weights into meta parameters is a no-op, which is all this test needs.
@pytest.mark.filterwarnings("ignore:for .* copying from a non-meta parameter")
def test_aggregator_state_goes_back_to_the_parameters_device(
    store_path: Path, tmp_path: Path
) -> None:
    # cr_mogm and excess_mtl keep their state beside the Jacobian; gradvac on the CPU.
    expected = {
        "cr_mogm": {"weighting.weighting._lambda": META},
        "excess_mtl": {"weighting._sq_grad_sum": META, "weighting._weights": META},
        "gradvac": {"weighting.weighting._phi_t": torch.device("cpu")},
    }
    for aggregator, devices in expected.items():
        config = _config(store_path, "iwrm_q_halt_in", aggregator)
        train(config, tmp_path / aggregator, CPU, progress=False)
        trainer = build_trainer(config, CPU, resume=True)
        trainer.model.to(META)  # the run's parameters on another device than the file's
        _resume(trainer, tmp_path / aggregator)
        buffers = dict(trainer.jd.aggregator.named_buffers())
        for name, device in devices.items():
            assert buffers[name].device == device, (aggregator, name)
        if aggregator == "excess_mtl":
            weighting = trainer.jd.aggregator.get_submodule("weighting")
            # The key that tells ExcessMTL its state fits names the new device, so the
            # next step keeps the state; its warm-up count comes back too.
            assert isinstance(weighting, ExcessMTLWeighting)
            assert weighting._state_key is not None and weighting._state_key[-1] == META
            assert weighting._n_steps == 1


def test_the_cuda_generator_is_saved_and_restored_on_cuda_runs_only(
    store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(store_path)
    trainer = build_trainer(config, CPU)
    assert "cuda_rng" not in trainer.state_dict()
    _save(trainer, tmp_path / "cpu")

    cuda_state = torch.arange(16, dtype=torch.uint8)
    asked: list[torch.device] = []
    restored: list[tuple[torch.Tensor, torch.device]] = []

    def get_rng_state(device: torch.device) -> torch.Tensor:
        asked.append(device)
        return cuda_state.clone()

    def set_rng_state(state: torch.Tensor, device: torch.device) -> None:
        restored.append((state, device))

    monkeypatch.setattr(torch.cuda, "get_rng_state", get_rng_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    # The trainer as a CUDA run sees it (its tensors stay on the CPU, which is all the
    # state handling needs).
    trainer.runtime = CUDA
    _save(trainer, tmp_path / "cuda")
    assert asked == [CUDA.device]

    resumed = build_trainer(config, CPU)
    resumed.runtime = CUDA
    _resume(resumed, tmp_path / "cuda")
    assert len(restored) == 1
    assert torch.equal(restored[0][0], cuda_state) and restored[0][1] == CUDA.device

    # A CUDA run resumed from a checkpoint without the CUDA generator says so.
    restored.clear()
    with pytest.warns(UserWarning, match="no CUDA random state"):
        _resume(resumed, tmp_path / "cpu")
    assert restored == []


def test_deterministic_algorithms_are_on_during_the_run_only(
    store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[bool, str | None]] = []

    def recording_step(trainer: Any) -> dict[str, Any]:
        seen.append(
            (
                torch.are_deterministic_algorithms_enabled(),
                os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
            )
        )
        return train_step(trainer)

    monkeypatch.setattr("trm_train.training._loop.train_step", recording_step)
    # Absent before the run, and removed again after the test.
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")

    train(_config(store_path), tmp_path / "plain", CPU, progress=False)
    assert seen == [(False, None)]
    seen.clear()
    train(_config(store_path, deterministic=True), tmp_path / "exact", CPU, progress=False)
    assert seen == [(True, ":4096:8")]
    assert not torch.are_deterministic_algorithms_enabled()

    # The command line's flag, recorded with the run.
    seen.clear()
    result = CliRunner().invoke(
        main,
        [
            "--data",
            str(store_path),
            "--steps",
            "1",
            "--batch-size",
            "4",
            "--deterministic",
            "--out",
            str(tmp_path / "cli"),
            "--wandb",
            "disabled",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert seen == [(True, ":4096:8")]
    assert read_run_config(tmp_path / "cli").loop.deterministic
    assert not torch.are_deterministic_algorithms_enabled()
