"""Loss splits and a fast Jacobian-descent step for any PyTorch model.

A `Split` maps per-element losses (`LossTerms`) to the objectives of a training step (an
`ObjectiveSet`); a `JacobianDescent` aggregates their Jacobian with a torchjd aggregator
into `.grad`.
"""

from ._aggregator_params import AGGREGATOR_PARAMETERS, AggregatorParameter
from ._aggregators import AGGREGATOR_NAMES, make_aggregator, parse_aggregator_params
from ._descent import ENGINE_NAMES, JACOBIAN_COVERS, EngineName, JacobianCovers, JacobianDescent
from ._diagnostics import Diagnostics
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
