"""Loss splits and a fast Jacobian-descent step for any PyTorch model.

A `Split` maps per-element losses (`LossTerms`) to the objectives of a training step (an
`ObjectiveSet`); a `JacobianDescent` aggregates their Jacobian with a torchjd aggregator
into `.grad`.

Every public name is loaded on first use (PEP 562), so that code needing only the split
names or the engine names (a configuration, an evaluation command) does not import
torchjd and its solvers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._aggregator_params import AGGREGATOR_PARAMETERS, AggregatorParameter
    from ._aggregators import AGGREGATOR_NAMES, make_aggregator, parse_aggregator_params
    from ._descent import JacobianDescent
    from ._diagnostics import Diagnostics
    from ._engine_names import ENGINE_NAMES, JACOBIAN_COVERS, EngineName, JacobianCovers
    from ._loss_terms import LossTerms
    from ._memory import MemoryPlan, MemorySizes
    from ._objective_set import ObjectiveBlock, ObjectiveSet
    from ._presets import SPLIT_NAMES, canonical_split_name, get_split
    from ._projector import BatchedDualConeProjector
    from ._split import HaltMode, Refinements, Split

__all__ = [
    "AGGREGATOR_NAMES",
    "AGGREGATOR_PARAMETERS",
    "ENGINE_NAMES",
    "JACOBIAN_COVERS",
    "SPLIT_NAMES",
    "AggregatorParameter",
    "BatchedDualConeProjector",
    "Diagnostics",
    "EngineName",
    "HaltMode",
    "JacobianCovers",
    "JacobianDescent",
    "LossTerms",
    "MemoryPlan",
    "MemorySizes",
    "ObjectiveBlock",
    "ObjectiveSet",
    "Refinements",
    "Split",
    "canonical_split_name",
    "get_split",
    "make_aggregator",
    "parse_aggregator_params",
]

# The module of each public name, for `__getattr__` (the imports above are for readers
# and type checkers only).
_HOMES: dict[str, tuple[str, ...]] = {
    "._aggregator_params": ("AGGREGATOR_PARAMETERS", "AggregatorParameter"),
    "._aggregators": ("AGGREGATOR_NAMES", "make_aggregator", "parse_aggregator_params"),
    "._descent": ("JacobianDescent",),
    "._diagnostics": ("Diagnostics",),
    "._engine_names": ("ENGINE_NAMES", "JACOBIAN_COVERS", "EngineName", "JacobianCovers"),
    "._loss_terms": ("LossTerms",),
    "._memory": ("MemoryPlan", "MemorySizes"),
    "._objective_set": ("ObjectiveBlock", "ObjectiveSet"),
    "._presets": ("SPLIT_NAMES", "canonical_split_name", "get_split"),
    "._projector": ("BatchedDualConeProjector",),
    "._split": ("HaltMode", "Refinements", "Split"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
