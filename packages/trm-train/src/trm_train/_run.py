"""Reading a finished (or running) training run back: its config and trained model."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import trm_model

from ._checkpoint import load_checkpoint
from ._config import TrainConfig


def read_run_config(run_dir: Path) -> TrainConfig:
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a training run (no config.json)")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a valid run configuration ({error})") from error


def load_trained_model(
    run_dir: Path,
    *,
    step: int | None = None,
    ema: bool = True,
    device: torch.device | None = None,
) -> tuple[trm_model.TRM, TrainConfig, int]:
    """The model of a run's checkpoint (the latest, or `step`), with the EMA weights when
    the run kept them and `ema` is on, in eval mode. Returns (model, config, step)."""
    device = device or torch.device("cpu")
    step, state = load_checkpoint(run_dir, step)
    config = TrainConfig.from_dict(state["config"])
    model = trm_model.TRM(config.model, generator=torch.Generator(device).manual_seed(0))
    model.load_state_dict(state["model"])
    if ema and state.get("ema") is not None:
        named = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in state["ema"].items():
                named[name].copy_(value)
    return model.eval(), config, step
