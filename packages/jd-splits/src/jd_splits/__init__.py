"""Loss splits and a fast Jacobian-descent step for any PyTorch model.

A `Split` maps per-element losses (`LossTerms`) to a vector of objectives; a
`JacobianDescent` aggregates their Jacobian with a torchjd aggregator into `.grad`.
"""

from ._aggregators import AGGREGATOR_NAMES, make_aggregator
from ._descent import ENGINE_NAMES, JACOBIAN_COVERS, EngineName, JacobianCovers, JacobianDescent
from ._diagnostics import Diagnostics
from ._loss_terms import LossTerms, Objective
from ._memory import MemoryPlan, MemorySizes
from ._objective_set import ObjectiveBlock, ObjectiveSet
from ._presets import SPLIT_NAMES, get_split
from ._projector import BatchedDualConeProjector
from ._split import HaltMode, Refinements, Split

__all__ = [
    "AGGREGATOR_NAMES",
    "ENGINE_NAMES",
    "JACOBIAN_COVERS",
    "SPLIT_NAMES",
    "BatchedDualConeProjector",
    "Diagnostics",
    "EngineName",
    "HaltMode",
    "JacobianCovers",
    "JacobianDescent",
    "LossTerms",
    "MemoryPlan",
    "MemorySizes",
    "Objective",
    "ObjectiveBlock",
    "ObjectiveSet",
    "Refinements",
    "Split",
    "get_split",
    "make_aggregator",
]
