"""A run folder, as every command sees it: its config, its store (found from the folder,
and checked against the model), its trained model; and the one-line error of the
commands that use runs. Training, evaluation and reporting all read runs through here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import attrs
import click
import torch

import arc_data
import trm_model

from ._checkpoint import load_checkpoint
from ._config import DataConfig, TrainConfig


class CommandError(click.ClickException):
    """A run, store or output the command cannot use: one line "Error: ...", exit status
    2 as for click's usage errors (the user can fix it), without the usage text."""

    exit_code = 2

    @classmethod
    def from_os_error(cls, error: OSError) -> CommandError:
        """The error's path and reason ("out/run: Not a directory"), not errno's repr."""
        if error.filename is None or error.strerror is None:
            return cls(str(error))
        names = [error.filename, *([error.filename2] if error.filename2 is not None else [])]
        return cls(f"{', '.join(os.fsdecode(name) for name in names)}: {error.strerror}")


def read_run_config(run_dir: Path) -> TrainConfig:
    """The run's configuration, its store located from here when it can be
    (`locate_store`); otherwise the recorded path stays, for the caller to report."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a training run (no config.json)")
    try:
        config = TrainConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a valid run configuration ({error})") from error
    try:
        store = locate_store(config.data, run_dir)
    except FileNotFoundError:
        return config
    return attrs.evolve(config, data=attrs.evolve(config.data, store=store))


def locate_store(data: DataConfig, run_dir: Path) -> Path:
    """The store of the run in `run_dir`: its recorded path while that exists, else the
    path taken from the run folder (`store_from_run`; for runs that recorded the path as
    typed, that path relative to the run folder). Raises FileNotFoundError naming both."""
    if data.store.exists():
        return data.store
    if data.store_from_run is not None:
        from_run = run_dir / data.store_from_run
    elif not data.store.is_absolute():
        from_run = run_dir / data.store
    else:
        raise FileNotFoundError(f"{data.store}: no such store (the store of {run_dir})")
    if from_run.exists():
        return from_run
    raise FileNotFoundError(
        f"{run_dir}: the run's store is neither at {data.store} nor at {from_run} "
        "(relative to the run folder); give its new place with --data"
    )


def check_store_matches(config: trm_model.TRMConfig, store: arc_data.ArcStore) -> None:
    """Refuse a store whose shape differs from the model's, naming both values."""
    meta = store.metadata
    if meta.num_puzzle_identifiers != config.num_puzzle_identifiers:
        raise ValueError(
            f"{store.path}: the store has {meta.num_puzzle_identifiers} puzzle identifiers, "
            f"the model was built for {config.num_puzzle_identifiers}"
        )
    if meta.seq_len != config.seq_len:
        raise ValueError(
            f"{store.path}: the store's sequence length is {meta.seq_len}, "
            f"the model's is {config.seq_len}"
        )


def record_store(config: TrainConfig, run_dir: Path) -> TrainConfig:
    """`config` as a run in `run_dir` records it: the store's absolute path, so that the
    run works from any directory, and its path from the run folder (`store_from_run`)."""
    # abspath, not resolve: a store reached through a symlink stays reached through it.
    store = Path(os.path.abspath(config.data.store))
    try:
        from_run: Path | None = Path(os.path.relpath(store, os.path.abspath(run_dir)))
    except ValueError:  # another drive (Windows): no relative path
        from_run = None
    return attrs.evolve(
        config, data=attrs.evolve(config.data, store=store, store_from_run=from_run)
    )


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
