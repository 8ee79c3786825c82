"""Initial weights for fine-tuning: a run's model loaded from an earlier checkpoint."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

import trm_model

from .._checkpoint import checkpoint_dir, list_checkpoints, load_checkpoint

# Key prefixes of the reference TRM code's checkpoints (see trm_model's reference layout):
# ACTLossHead.model.inner is the network, and a compiled model adds `_orig_mod.`.
_REFERENCE_PREFIX = "model.inner."
_COMPILED_PREFIX = "_orig_mod."
_PUZZLE_EMB = "puzzle_emb"
_LOGITS_INIT = "output_logits_init"


def load_initial_weights(model: trm_model.TRM, path: Path) -> list[str]:
    """Load the weights and buffers of a checkpoint into ``model`` (built from the run's
    config) and return warnings to show the user. No optimizer state is read.

    ``path``: a checkpoint of the reference TRM code (keys ``model.inner.*``, compiled or
    not), one of our checkpoint files (``RUN/checkpoints/step-N.pt``) or a run directory
    (its latest checkpoint). Differences a fine-tuning run expects are resolved with a
    warning: a puzzle-embedding table with another number of rows (every row becomes the
    checkpoint's mean row, as the seed does), a Q head or ``output_logits_init`` the
    model lacks (dropped), an ``output_logits_init`` the checkpoint lacks (the model's own
    is kept). Any other difference, a Q head the checkpoint lacks included, raises
    ``ValueError`` naming the file and every offending key, and leaves ``model`` unchanged.
    """
    file, given, reference = _read(path)
    given = {key.removeprefix(_COMPILED_PREFIX): value for key, value in given.items()}
    own = model.state_dict()
    if reference:
        # The reference name of each of our keys, from the model's own reference export.
        names = dict(zip(own, trm_model.to_reference_state_dict(model), strict=True))
        prefix = _REFERENCE_PREFIX
    else:
        names, prefix = {key: key for key in own}, ""
    state, warnings, problems = _match(model, given, names, prefix)
    if problems:
        raise ValueError(
            f"{file}: the checkpoint does not match the model:\n  " + "\n  ".join(problems)
        )
    model.load_state_dict(state)
    return warnings


def _read(path: Path) -> tuple[Path, Mapping[str, object], bool]:
    """(the file read, its state dict, whether that is in the reference layout)."""
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise ValueError(
                f"{path}: neither a checkpoint file nor a run directory with checkpoints "
                f"(nothing in {checkpoint_dir(path)})"
            )
        step, file = found[-1]
        return file, _run_weights(path, step, file), False
    run_dir = path.parent.parent
    if path.parent == checkpoint_dir(run_dir):
        listed = next((s for s, p in list_checkpoints(run_dir) if p.name == path.name), None)
        if listed is not None:
            return path, _run_weights(run_dir, listed, path), False
    try:
        # Plain tensors only: a downloaded checkpoint must not run code when unpickled.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(
            f"{path}: not a readable checkpoint of plain tensors ({error}); a trm-train "
            "checkpoint is read from its run's checkpoints folder, or give the run directory"
        ) from error
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: holds a {type(loaded).__name__}, not a state dict")
    # One of our checkpoints copied out of its run, when it holds plain tensors only.
    if isinstance(loaded.get("model"), dict):
        return path, loaded["model"], False
    return path, loaded, True


def _run_weights(run_dir: Path, step: int, file: Path) -> Mapping[str, object]:
    try:
        _, state = load_checkpoint(run_dir, step)
    except FileNotFoundError as error:  # deleted since listed: a running run keeps the last K
        raise ValueError(f"{file}: not readable ({error})") from error
    weights = state.get("model")
    if not isinstance(weights, dict):
        raise ValueError(f"{file}: a checkpoint without model weights (no 'model' entry)")
    return weights


def _match(
    model: trm_model.TRM, given: Mapping[str, object], names: Mapping[str, str], prefix: str
) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """The state dict to load (our keys), the warnings and the problems.

    ``given`` and every message use the file's key names; ``names`` maps each of the
    model's keys to its name in the file, whose keys start with ``prefix``.
    """
    own = model.state_dict()
    expected = {names[key]: key for key in own}
    q_head, logits_init = prefix + "q_head.", prefix + _LOGITS_INIT
    state: dict[str, Tensor] = {}
    warnings: list[str] = []
    problems: list[str] = []

    unexpected = sorted(given.keys() - expected.keys())
    dropped = [key for key in unexpected if key.startswith(q_head) and model.q_head is None]
    if dropped:
        warnings.append(
            f"the checkpoint's Q head ({', '.join(dropped)}) is dropped: the model has none "
            "(act_mode 'none')"
        )
    if logits_init in unexpected and model.output_logits_init is None:
        dropped.append(logits_init)
        warnings.append(
            f"the checkpoint's {logits_init} is dropped: the model (act_mode "
            f"'{model.config.act_mode}') has none"
        )
    problems += [f"unexpected key {key}" for key in unexpected if key not in dropped]

    missing = sorted(key for key in expected if key not in given)
    if model.q_head is not None and not any(key.startswith(q_head) for key in given):
        absent = [key for key in missing if key.startswith(q_head)]
        problems.append(
            f"the checkpoint has no Q head ({', '.join(absent)}) but the model (act_mode "
            f"'{model.config.act_mode}') has one, which would start untrained: fine-tune "
            "with act_mode 'none' or from a checkpoint with a Q head"
        )
        missing = [key for key in missing if key not in absent]
    for key in missing:
        if key == logits_init:
            # A checkpoint with a Q head never learned one: keep the fresh initialisation,
            # as the seed does.
            state[expected[key]] = own[expected[key]]
            warnings.append(
                f"the checkpoint has no {logits_init}: the model keeps its freshly initialised one"
            )
        else:
            problems.append(f"missing key {key}")

    for key, our_key in expected.items():
        if key not in given:
            continue
        value, wanted = given[key], own[our_key]
        if not isinstance(value, Tensor):
            problems.append(f"{key} is a {type(value).__name__}, not a tensor")
        elif (
            our_key == _PUZZLE_EMB
            and value.ndim == wanted.ndim
            and value.shape[1:] == wanted.shape[1:]
            and value.shape[0] != wanted.shape[0]
        ):
            # The identifiers name other puzzles now, so no row carries over: all start
            # from the mean (the seed's rule).
            state[our_key] = value.float().mean(0, keepdim=True).expand_as(wanted)
            warnings.append(
                f"the checkpoint's puzzle-embedding table ({key}) has {value.shape[0]} rows, "
                f"the model's {wanted.shape[0]}: every row starts as the checkpoint's mean row"
            )
        elif value.shape != wanted.shape:
            problems.append(
                f"{key} has shape {list(value.shape)}, the model expects {list(wanted.shape)}"
            )
        else:
            state[our_key] = value
    return state, warnings, problems
