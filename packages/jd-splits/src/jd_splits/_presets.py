"""The named splits of the research write-up, as presets of `Split`."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from ._split import HaltMode, Refinements, Split

_OUT = HaltMode.OUT
_PRESETS: dict[str, Callable[[], Split]] = {
    "sum": lambda: Split(),
    "lm_loss_vs_q_halt_loss": lambda: Split(halt=_OUT, halt_instances=False),
    "iwrm_q_halt_in": lambda: Split(instances=True),
    "iwrm_q_halt_out": lambda: Split(instances=True, halt=_OUT),
    "pixelwise_q_halt_in": lambda: Split(pixels=True),
    "pixelwise_q_halt_out": lambda: Split(pixels=True, halt=_OUT),
    "iwrm_pixelwise_q_halt_in": lambda: Split(instances=True, pixels=True),
    "iwrm_pixelwise_q_halt_out": lambda: Split(instances=True, pixels=True, halt=_OUT),
    "stack_internal_losses": lambda: Split(refinements=Refinements.STACK),
    "stack_internal_losses_only": lambda: Split(refinements=Refinements.STACK_ONLY),
    "stack_internal_and_sum": lambda: Split(refinements=Refinements.SUM),
    "stack_supervisions": lambda: Split(supervisions=True, mean_over_steps=True),
    "stack_supervisions_and_sum": lambda: Split(mean_over_steps=True),
    "stack_supervisions_and_iwrm": lambda: Split(
        supervisions=True, mean_over_steps=True, instances=True
    ),
    "stack_supervisions_and_pixelwise": lambda: Split(
        supervisions=True, mean_over_steps=True, pixels=True
    ),
    "stack_supervisions_and_iwrm_pixelwise": lambda: Split(
        supervisions=True, mean_over_steps=True, instances=True, pixels=True
    ),
}

SPLIT_NAMES: tuple[str, ...] = tuple(_PRESETS)
"""The canonical split names (the write-up's, without `_with_`)."""


def canonical_split_name(name: str) -> str:
    """The canonical form of a split name: lower case, and the write-up's code spelling
    `<axis>_with_q_halt_<in|out>` accepted for `<axis>_q_halt_<in|out>`."""
    normalised = name.strip().lower().replace("-", "_").replace("_with_q_halt", "_q_halt")
    if normalised not in _PRESETS:
        raise ValueError(f"unknown split {name!r}; valid names: {', '.join(SPLIT_NAMES)}")
    return normalised


def get_split(
    name: str,
    *,
    groups: int | None = None,
    intermediate_weight: float = 1e-4,
    seed: int = 0,
) -> Split:
    """The split called `name` (see `SPLIT_NAMES`), with optional random grouping of its
    objectives into `groups` buckets (drawn from `seed` and the training step) and the
    weight `w` of the internal refinement losses (1e-4, the write-up's default, suits
    its differential refinement losses, which are summed over tokens, not normalised)."""
    preset = _PRESETS[canonical_split_name(name)]()
    return attrs.evolve(preset, groups=groups, intermediate_weight=intermediate_weight, seed=seed)
