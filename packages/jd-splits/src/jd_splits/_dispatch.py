"""Which engine computes a JD step's update, and running it: the hooks are planned once per
model, the engine (and its memory) once per step."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor, nn
from torchjd.autogram import Engine

from . import _engines
from ._aggregate import Aggregation, aggregate_jacobian, weights_from_gramian
from ._aggregators import Aggregator, fixed_weights, gramian_weighting, has_fixed_weights
from ._diagnostics import empty_statistics, gramian_statistics
from ._hooked import requested_calls
from ._memory import MemoryPlan, largest_saved, measure, plan
from ._objective_set import ObjectiveSet
from ._per_sample import per_sample_jacobians
from ._recording import Call, CallRecorder, per_sample_problems
from ._split import Split
from ._streamed import per_sample_streamed

_LOGGER = logging.getLogger("jd_splits")


def plan_hooks(
    module: nn.Module, aggregator: Aggregator, engine: str, split: Split | None
) -> frozenset[str]:
    """The hooks `record()` must install for `engine` (`per_sample`, `autogram` or none),
    refusing an engine that cannot handle the model or the aggregator."""
    gramian_based = gramian_weighting(aggregator) is not None
    problems = per_sample_problems(module)
    if engine == "per_sample":
        if problems:
            raise ValueError(
                "the per_sample engine cannot handle this model: " + "; ".join(problems)
            )
        return frozenset({"per_sample"})
    if engine == "autogram":
        if not gramian_based:
            raise ValueError(
                f"the autogram engine needs a Gramian-based aggregator, not {aggregator}"
            )
        return frozenset({"autogram"})
    if engine != "auto":
        return frozenset()
    # One objective, or weights known without the Jacobian: one plain backward, no hooks.
    if (split is not None and split.single_objective) or has_fixed_weights(aggregator):
        return frozenset()
    if not problems:
        return frozenset({"per_sample"})
    return frozenset({"autogram"}) if gramian_based else frozenset()


class Dispatch:
    """The engines of one model: the hooks of `record()` and, per step, the engine that
    runs (see `JacobianDescent`) with its memory plan."""

    def __init__(
        self,
        module: nn.Module,
        params: list[Tensor],
        aggregator: Aggregator,
        engine: str,
        split: Split | None,
        *,
        max_jacobian_bytes: int | None,
        autojac_chunk_size: int | None,
        covers_extras: bool,
    ) -> None:
        self._module = module
        self._params = params
        self._aggregator = aggregator
        self._engine = engine
        self._max_jacobian_bytes = max_jacobian_bytes
        self._chunk_size = autojac_chunk_size
        self._covers_extras = covers_extras
        self.hooks = plan_hooks(module, aggregator, engine, split)
        self._recorder = CallRecorder(module) if "per_sample" in self.hooks else None
        self._gramian_engine: Engine | None = None
        self.memory_plan: MemoryPlan | None = None
        self._plan_reported = False
        self._verified = False
        # The largest activation the forward saved, read from the autograd graph (a walk of
        # every node: about 1% of a tiny TRM's step), and the shapes it was read for.
        self._saved: tuple[tuple[object, ...], int] | None = None

    def attach(self) -> None:
        if "autogram" in self.hooks:
            # A fresh Engine per step: a forward it saw without a Gramian would break the
            # next one, and dropping it removes its hooks.
            self._gramian_engine = Engine(self._module, batch_dim=0)
        if self._recorder is not None:
            self._recorder.attach()

    def detach(self) -> None:
        if self._recorder is not None:
            self._recorder.detach()
        self._gramian_engine = None

    def aggregate(self, objectives: ObjectiveSet, extras: list[Tensor]) -> tuple[str, Aggregation]:
        """The engine that ran and the updates of the parameters and extra inputs."""
        m = objectives.count
        params = self._params
        if m == 0:
            return "none", Aggregation(
                [None] * len(params), [None] * len(extras), empty_statistics()
            )
        if m == 1:
            return "plain", _engines.plain(objectives, params, extras)
        engine = self._engine
        requested: list[int] | None = None
        if engine == "auto":
            weights = fixed_weights(self._aggregator, m, objectives.values)
            if weights is not None:
                return "weighted", _engines.weighted(objectives, weights, params, extras)
            engine, requested = self._choose(objectives, extras)
        elif engine == "per_sample":
            chosen, requested = self._plan(objectives, extras, allow_autojac=False)
            engine = chosen.engine
        if engine in ("per_sample", "per_sample_streamed"):
            whole = engine == "per_sample"
            return engine, self._per_sample(objectives, extras, requested, whole=whole)
        if engine == "autogram":
            if self._gramian_engine is None:
                raise RuntimeError("the autogram engine was not planned for this JacobianDescent")
            return engine, _engines.autogram(
                self._gramian_engine,
                objectives,
                self._aggregator,
                params,
                extras,
                covers_extras=self._covers_extras,
            )
        inputs = [*params, *extras]
        if engine == "autojac":
            jacobians = _engines.autojac_jacobians(objectives, inputs, self._chunk_size)
        else:
            jacobians = _engines.sequential_jacobians(objectives, inputs)
        n = len(params)
        return engine, aggregate_jacobian(
            self._aggregator, jacobians[:n], jacobians[n:], covers_extras=self._covers_extras
        )

    def _per_sample(
        self,
        objectives: ObjectiveSet,
        extras: list[Tensor],
        requested: list[int] | None,
        *,
        whole: bool,
    ) -> Aggregation:
        if self._recorder is None:
            raise RuntimeError("the per_sample engine was not planned for this JacobianDescent")
        params, calls, verify = self._params, self._recorder.calls, not self._verified
        if whole:
            jac_params, jac_extras = per_sample_jacobians(
                objectives, calls, params, extras, verify=verify, requested=requested
            )
            self._verified = True
            return aggregate_jacobian(
                self._aggregator, jac_params, jac_extras, covers_extras=self._covers_extras
            )
        gramian, weights, updates, extra_updates = per_sample_streamed(
            objectives,
            calls,
            params,
            extras,
            partial(weights_from_gramian, self._aggregator),
            verify=verify,
            covers_extras=self._covers_extras,
        )
        self._verified = True
        return Aggregation(updates, extra_updates, gramian_statistics(gramian, weights))

    def _choose(
        self, objectives: ObjectiveSet, extras: list[Tensor]
    ) -> tuple[str, list[int] | None]:
        """The engine `auto` runs, with the requested calls of the per_sample engine."""
        if objectives.structured and self._recorder is not None:
            chosen, requested = self._plan(objectives, extras, allow_autojac=True)
            return chosen.engine, requested
        if objectives.structured and self._gramian_engine is not None:
            return "autogram", None
        return "autojac", None

    def _largest_saved(self, objectives: ObjectiveSet, calls: Sequence[Call]) -> int:
        """`largest_saved` of this step's graph, read again only when the shapes of the
        recorded calls or of the atoms differ from those it was last read for: the same
        shapes come from the same forward, whose graph saves the same activations."""
        shapes = (
            *((tuple(c.output.shape), c.output.dtype) for c in calls),
            *((tuple(b.atoms.shape), b.atoms.dtype) for b in objectives.blocks),
        )
        if self._saved is None or self._saved[0] != shapes:
            self._saved = (shapes, largest_saved([b.atoms for b in objectives.blocks]))
        return self._saved[1]

    def _plan(
        self, objectives: ObjectiveSet, extras: list[Tensor], *, allow_autojac: bool
    ) -> tuple[MemoryPlan, list[int]]:
        """This step's memory plan (see `JacobianDescent`), reported the first time, and the
        calls whose output gradient the per_sample engine's hooked passes ask for."""
        if self._recorder is None:
            raise RuntimeError("the per_sample engine was not planned for this JacobianDescent")
        gramian_based = gramian_weighting(self._aggregator) is not None
        calls = self._recorder.calls
        requested = requested_calls([b.atoms for b in objectives.blocks], calls, extras)
        sizes = measure(
            objectives,
            calls,
            self._params,
            extras,
            verify=not self._verified,
            gramian_based=gramian_based,
            saved=self._largest_saved(objectives, calls),
            requested=requested,
        )
        chosen = plan(
            sizes,
            gramian_based=gramian_based,
            allow_autojac=allow_autojac,
            max_bytes=self._max_jacobian_bytes,
            device=self._params[0].device if self._params else torch.device("cpu"),
            chunk_size=self._chunk_size or objectives.base_count,
        )
        self.memory_plan = chosen
        if not self._plan_reported:
            self._plan_reported = True
            warn = chosen.fallback or not chosen.fits
            _LOGGER.log(logging.WARNING if warn else logging.INFO, "%s", chosen)
        if len(chosen.estimates) == 1 and not chosen.fits:
            raise MemoryError(
                f"the per_sample engine's estimated peak exceeds its budget and "
                f"{self._aggregator} needs the Jacobian whole: {chosen}"
            )
        return chosen, requested
