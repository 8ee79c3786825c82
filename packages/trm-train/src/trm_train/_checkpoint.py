"""Checkpoints: the full training state in one file, written atomically, last K kept.

A checkpoint holds tensors and plain values only (dicts, lists, tuples, strings, numbers,
booleans, None) and is read with `torch.load(..., weights_only=True)`: a run folder from
someone else must not run code when it is resumed, evaluated or fine-tuned from. The
numeric NumPy arrays of checkpoints written before this rule are read too (an
allow-list of NumPy's array constructor and dtypes). Writing refuses anything else
(`save_checkpoint`), so that a run never writes a checkpoint it could not read back.
"""

from __future__ import annotations

import os
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

_NAME = re.compile(r"^step-(\d{8})\.pt$")

# What a checkpoint may hold besides tensors, by exact type: a subclass (np.float64 is a
# float, an IntEnum an int, a namedtuple a tuple) pickles as a reference to its class,
# which weights_only loading refuses.
_PLAIN = frozenset({str, bytes, int, float, bool, type(None), torch.dtype, torch.device})
_MAPPINGS = frozenset({dict, OrderedDict})
_SEQUENCES = frozenset({list, tuple, torch.Size})


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
    last `keep` checkpoints. Raises TypeError naming the entry when `state` holds
    something `load_checkpoint` would refuse (anything but tensors, plain values and
    numeric NumPy arrays, which the trainer's own state converts to tensors)."""
    problem = _not_plain(state, "state")
    if problem is not None:
        raise TypeError(
            f"{problem}: a checkpoint holds tensors and plain values only "
            "(it is loaded with weights_only=True)"
        )
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
    """The checkpoint of `step`, or the latest one. Raises FileNotFoundError naming the
    run, and ValueError naming the file when it is unreadable or holds anything but
    tensors and plain values (loading that could run code: it is never unpickled)."""
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
    return step, read_checkpoint_file(path)


def read_checkpoint_file(path: Path) -> dict[str, Any]:
    """One checkpoint file, loaded with `weights_only=True` (plus the NumPy arrays that
    checkpoints written before this rule hold). Raises ValueError naming the file."""
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = _unpickler_reason(error)
        if _REFUSED.match(reason):
            raise ValueError(
                f"{path}: refused: the checkpoint holds a pickled object that is not a tensor "
                f"or plain value ({reason}), and unpickling it could run arbitrary code"
            ) from error
        raise ValueError(f"{path}: not a readable checkpoint ({reason})") from error
    except (OSError, RuntimeError, EOFError) as error:
        raise ValueError(f"{path}: not a readable checkpoint ({error})") from error
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a checkpoint")
    return state


# How torch's weights-only unpickler words a global or a type it will not load, as
# opposed to a damaged file ("Unsupported operand ...").
_REFUSED = re.compile(r"^(Unsupported global|Can only build|Unsupported class)")


def _unpickler_reason(error: pickle.UnpicklingError) -> str:
    """The line of torch's message that says what failed (the refused global or type),
    without its advice to load with weights_only=False."""
    message = str(error)
    marker = "WeightsUnpickler error:"
    if marker not in message:
        return message.splitlines()[0] if message else type(error).__name__
    detail = message.split(marker, 1)[1].strip()
    first = detail.splitlines()[0] if detail else ""
    return first.split(" was not an allowed global")[0].strip() or "an unreadable pickle"


_NUMERIC: tuple[type[np.generic], ...] = (
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
)


def _legacy_numpy_globals() -> list[Callable[..., Any] | tuple[Callable[..., Any], str]]:
    """What the NumPy arrays of older checkpoints (sampler and failure weights) need:
    the array, its numeric dtypes and NumPy's array constructor, under both NumPy 1's
    and NumPy 2's module name. None of them runs code given by the file."""
    # The array's own pickling function: numpy._core or numpy.core by NumPy version.
    reconstruct = cast(Callable[..., Any], np.ndarray((0,)).__reduce__()[0])
    return [
        np.ndarray,
        np.dtype,
        reconstruct,
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        (reconstruct, "numpy._core.multiarray._reconstruct"),
        *(type(np.dtype(kind)) for kind in _NUMERIC),
    ]


def _not_plain(value: object, where: str) -> str | None:
    """Where in `value` (a path such as state['sampler']['weights']) something other
    than a tensor, a plain value, a numeric NumPy array or a container of them sits, and
    its type; else None."""
    if isinstance(value, torch.Tensor) or type(value) in _PLAIN:
        return None
    if type(value) is np.ndarray and value.dtype.type in _NUMERIC:
        return None  # read back through the allow-list of older checkpoints
    if type(value) in _MAPPINGS:
        assert isinstance(value, dict)
        for key, item in value.items():
            if type(key) not in _PLAIN:
                return f"{where}: a key of type {type(key).__name__}"
            found = _not_plain(item, f"{where}[{key!r}]")
            if found is not None:
                return found
        return None
    if type(value) in _SEQUENCES:
        assert isinstance(value, list | tuple)
        for index, item in enumerate(value):
            found = _not_plain(item, f"{where}[{index}]")
            if found is not None:
                return found
        return None
    return f"{where} is a {type(value).__module__}.{type(value).__qualname__}"
