"""Checkpoints: the full training state in one file, written atomically, last K kept."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

_NAME = re.compile(r"^step-(\d{8})\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint of a run, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], *, keep: int) -> Path:
    """Write `state` for `step` (temporary file, fsync, rename), then drop all but the
    last `keep` checkpoints."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:08d}.pt"
    partial = folder / f".{path.name}.partial-{os.getpid()}"
    with open(partial, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
    for _, old in list_checkpoints(run_dir)[:-keep]:
        old.unlink()
    return path


def load_checkpoint(run_dir: Path, step: int | None = None) -> tuple[int, dict[str, Any]]:
    """The checkpoint of `step`, or the latest one. Raises FileNotFoundError naming the run."""
    found = list_checkpoints(run_dir)
    if not found:
        raise FileNotFoundError(f"{run_dir}: no checkpoint in {checkpoint_dir(run_dir)}")
    if step is None:
        step, path = found[-1]
    else:
        matches = [p for s, p in found if s == step]
        if not matches:
            raise FileNotFoundError(
                f"{run_dir}: no checkpoint of step {step} (have {', '.join(str(s) for s, _ in found)})"
            )
        path = matches[0]
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(f"{path}: not a readable checkpoint ({error})") from error
    return step, state
