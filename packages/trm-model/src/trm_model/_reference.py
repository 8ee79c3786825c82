"""State dicts in the key layout of the reference TRM code."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ._config import TRMConfig
from ._model import TRM

# Keys of the reference: ACTLossHead.model (ACT wrapper) .inner (the network); a compiled
# model prefixes everything with `_orig_mod.`.
_PREFIX = "model.inner."
_COMPILED_PREFIX = "_orig_mod."
_PUZZLE_KEY = _PREFIX + "puzzle_emb.weights"
_RENAMED = {
    "embed_tokens.weight": "embed_tokens.embedding_weight",
    "embed_pos.weight": "embed_pos.embedding_weight",
    "puzzle_emb": "puzzle_emb.weights",
}


def _reference_key(key: str) -> str:
    key = _RENAMED.get(key, key)
    if key.startswith("net."):
        key = "L_level." + key.removeprefix("net.")
    return _PREFIX + key


def to_reference_state_dict(model: TRM) -> dict[str, Tensor]:
    """``model``'s state dict under the reference TRM code's key names."""
    return {_reference_key(key): value for key, value in model.state_dict().items()}


def load_reference_state_dict(state_dict: Mapping[str, Tensor], config: TRMConfig) -> TRM:
    """Build a :class:`TRM` for ``config`` from a checkpoint of the reference TRM code.

    Accepts the state dict of the reference ``ACTLossHead`` (keys ``model.inner.*``),
    compiled (``_orig_mod.`` prefix) or not; values are cast to our float32 storage.
    Raises ``ValueError`` naming every missing, unexpected or mis-shaped key.
    """
    given = {key.removeprefix(_COMPILED_PREFIX): value for key, value in state_dict.items()}
    model = TRM(config, generator=torch.Generator().manual_seed(0))
    ours = {_reference_key(key): (key, value) for key, value in model.state_dict().items()}

    problems: list[str] = []
    if _PUZZLE_KEY in given and _PUZZLE_KEY in ours:
        found, wanted = given[_PUZZLE_KEY].shape[0], config.num_puzzle_identifiers
        if found != wanted:
            problems.append(
                f"the checkpoint has {found} puzzle identifiers ({_PUZZLE_KEY}) but "
                f"config.num_puzzle_identifiers is {wanted}"
            )
    problems += [f"missing key {key}" for key in sorted(ours.keys() - given.keys())]
    problems += [f"unexpected key {key}" for key in sorted(given.keys() - ours.keys())]
    for key in sorted(ours.keys() & given.keys()):
        expected, found_shape = ours[key][1].shape, given[key].shape
        if found_shape != expected and key != _PUZZLE_KEY:
            problems.append(
                f"{key} has shape {list(found_shape)}, the config expects {list(expected)}"
            )
    if problems:
        raise ValueError(
            "the state dict does not match the reference TRM layout for this config:\n  "
            + "\n  ".join(problems)
        )
    model.load_state_dict({our_key: given[key] for key, (our_key, _) in ours.items()})
    return model
