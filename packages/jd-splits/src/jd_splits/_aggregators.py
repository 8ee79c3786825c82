"""Every torchjd aggregator by a lower-case name, with UPGrad on the batched projector."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torchjd.aggregation import (
    IMTLG,
    MGDA,
    PCD,
    AlignedMTL,
    CAGrad,
    ConFIG,
    Constant,
    ConstantWeighting,
    CRMOGMWeighting,
    DualProj,
    ExcessMTL,
    FairGrad,
    GradDrop,
    GradVac,
    GramianWeightedAggregator,
    Krum,
    Mean,
    MeanWeighting,
    NashMTL,
    PCGrad,
    Random,
    RandomWeighting,
    Sum,
    SumWeighting,
    TrimmedMean,
    UPGrad,
    UPGradWeighting,
    WeightedAggregator,
    Weighting,
)
from torchjd.aggregation import Aggregator as Aggregator

from ._aggregator_params import accepted, check_params, parse_params
from ._projector import BatchedDualConeProjector


def _upgrad(**params: Any) -> Aggregator:
    params.setdefault("projector", BatchedDualConeProjector())
    return UPGrad(**params)


def _dualproj(**params: Any) -> Aggregator:
    params.setdefault("projector", BatchedDualConeProjector())
    return DualProj(**params)


def _cagrad(**params: Any) -> Aggregator:
    params.setdefault("c", 0.5)
    return CAGrad(**params)


def _cr_mogm(**params: Any) -> Aggregator:
    """UPGrad whose weights are smoothed across steps by an exponential moving average."""
    projector = params.pop("projector", BatchedDualConeProjector())
    return GramianWeightedAggregator(
        CRMOGMWeighting(UPGradWeighting(projector=projector), **params)
    )


_FACTORIES: dict[str, Callable[..., Aggregator]] = {
    "upgrad": _upgrad,
    "mean": Mean,
    "sum": Sum,
    "mgda": MGDA,
    "dualproj": _dualproj,
    "pcgrad": PCGrad,
    "cagrad": _cagrad,
    "nashmtl": NashMTL,
    "imtlg": IMTLG,
    "aligned_mtl": AlignedMTL,
    "graddrop": GradDrop,
    "krum": Krum,
    "trimmed_mean": TrimmedMean,
    "random": Random,
    "config": ConFIG,
    "constant": Constant,
    "fairgrad": FairGrad,
    "gradvac": GradVac,
    "pcd": PCD,
    "excess_mtl": ExcessMTL,
    "cr_mogm": _cr_mogm,
}

AGGREGATOR_NAMES: tuple[str, ...] = tuple(_FACTORIES)
"""The aggregator names `make_aggregator` accepts (case, `-` and `_` are ignored). torchjd's
`MoDoWeighting` and `SDMGradWeighting` are left out: they take the cross-Gramian of two
independent mini-batches, which a one-batch JD step does not have."""

_BY_KEY = {name.replace("_", ""): name for name in AGGREGATOR_NAMES}


def canonical_aggregator_name(name: str) -> str:
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key not in _BY_KEY:
        raise ValueError(f"unknown aggregator {name!r}; valid names: {', '.join(AGGREGATOR_NAMES)}")
    return _BY_KEY[key]


def make_aggregator(name: str, **params: Any) -> Aggregator:
    """The torchjd aggregator called `name`, built with `params`: its constructor's keyword
    arguments as documented in `AGGREGATOR_PARAMETERS` (e.g. `make_aggregator("cagrad",
    c=0.4)`, `make_aggregator("krum", n_byzantine=1)`; vectors as tensors or lists of
    numbers). `upgrad`, `dualproj` and `cr_mogm` (an EMA of UPGrad's weights) use
    `BatchedDualConeProjector` unless a `projector` is given; `cagrad` defaults to `c=0.5`.
    Raises ValueError for an unknown name or parameter, a missing required one or a value
    of the wrong kind, naming the parameters the aggregator accepts."""
    canonical = canonical_aggregator_name(name)
    arguments = check_params(canonical, params)
    try:
        return _FACTORIES[canonical](**arguments)
    except TypeError as error:
        raise ValueError(f"{error}; {accepted(canonical)}") from error


def parse_aggregator_params(name: str, pairs: Iterable[str]) -> dict[str, Any]:
    """`make_aggregator`'s `params` from `KEY=VALUE` texts (e.g. command-line options:
    `n_tasks=4`, `pref_vector=1,2`, `scale_mode=median`), read by each parameter's kind:
    plain JSON-able values (int, float, str, list of floats), so that a run's configuration
    can record them. Raises ValueError for a text that is not `KEY=VALUE`, an unknown or
    repeated key, a missing required parameter or a value of the wrong kind, naming the
    parameters the aggregator accepts."""
    return parse_params(canonical_aggregator_name(name), pairs)


def gramian_weighting(aggregator: Aggregator) -> Weighting[Any] | None:
    """The weighting that gives the aggregator's weights from the Gramian `J J^T` alone, or
    None when it needs the Jacobian itself (or is not a weighted aggregator)."""
    if isinstance(aggregator, GramianWeightedAggregator):
        return aggregator.gramian_weighting
    if isinstance(aggregator, WeightedAggregator) and isinstance(
        aggregator.weighting, MeanWeighting | SumWeighting | ConstantWeighting | RandomWeighting
    ):
        # These read only the number of rows of their input.
        return aggregator.weighting
    return None


def _fixed_weighting(aggregator: Aggregator) -> Weighting[Any] | None:
    if isinstance(aggregator, WeightedAggregator) and not isinstance(
        aggregator, GramianWeightedAggregator
    ):
        weighting = aggregator.weighting
        if isinstance(
            weighting, MeanWeighting | SumWeighting | ConstantWeighting | RandomWeighting
        ):
            return weighting
    return None


def has_fixed_weights(aggregator: Aggregator) -> bool:
    """Whether the weights depend on nothing but the number of objectives (`mean`, `sum`,
    `constant`, `random`), so that the update is one backward of the weighted sum."""
    return _fixed_weighting(aggregator) is not None


def fixed_weights(aggregator: Aggregator, count: int, like: Tensor) -> Tensor | None:
    """Those weights for `count` objectives (None for other aggregators)."""
    weighting = _fixed_weighting(aggregator)
    if weighting is None:
        return None
    with torch.no_grad():
        return weighting(like.new_zeros(count, 1)).to(like)
