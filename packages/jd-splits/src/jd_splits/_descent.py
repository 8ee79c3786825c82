"""`JacobianDescent`: the JD step of a training loop, engine choice, hooks and DDP."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial
from typing import Any, Literal, get_args

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchjd.autogram import Engine

from . import _engines
from ._aggregate import Aggregation, aggregate_jacobian, weights_from_gramian
from ._aggregators import (
    Aggregator,
    fixed_weights,
    gramian_weighting,
    has_fixed_weights,
    make_aggregator,
)
from ._diagnostics import Diagnostics, empty_statistics, gramian_statistics
from ._memory import MemoryPlan, measure, plan
from ._objective_set import ObjectiveSet
from ._per_sample import per_sample_jacobians, per_sample_streamed
from ._recording import CallRecorder, per_sample_problems
from ._split import Split

EngineName = Literal["auto", "per_sample", "autogram", "autojac", "sequential"]
ENGINE_NAMES: tuple[str, ...] = get_args(EngineName)
JacobianCovers = Literal["all", "parameters"]
"""Which inputs' Jacobian the aggregator sees: the parameters and the extra inputs, or the
parameters only."""
JACOBIAN_COVERS: tuple[JacobianCovers, ...] = get_args(JacobianCovers)

_LOGGER = logging.getLogger("jd_splits")


class JacobianDescent:
    """Owns the machinery of Jacobian descent for one model: create it once, then per
    training step run the forward(s) inside `record()` and call `backward` there.

    ```
    jd = JacobianDescent(model, aggregator="upgrad", split=split)
    for step, batch in enumerate(loader):
        with jd.record():
            terms = model(batch)                          # one LossTerms per supervision step
            diagnostics = jd.backward(split.objectives([terms], step=step))
        optimizer.step()
        optimizer.zero_grad()
    ```

    `backward` fills `.grad` of the model's trainable parameters (and of `extra_inputs`)
    with `J^T w`, accumulating like `Tensor.backward`. Extra inputs are leaf tensors fed to
    the forward besides the parameters (e.g. per-sample embedding rows gathered from a
    table). `jacobian_covers` says which Jacobian the aggregator sees:

    - `"all"` (the default; the reference differentiated every leaf requiring grad): the
      united Jacobian `J = [J_params | J_extras]`, so `G = J_p J_p^T + J_e J_e^T` (for IWRM
      each sample's own row adds `||df_b / d row_b||^2` to its diagonal entry) and the
      weights and diagnostics come from that `G`.
    - `"parameters"`: the weights come from `J_params` alone; extra inputs receive
      `J_extras^T w` with the same weights.

    The `per_sample` and `autogram` engines take a batch-first extra input to be
    per-sample (row `b` feeds sample `b` only, which follows when the model treats samples
    independently, as the split's atoms already require); `autojac` and `sequential`
    assume nothing. A single objective is one plain backward, and weights that need no
    Jacobian (`mean`, ...) one weighted backward, whatever `jacobian_covers`. Forwards
    outside `record()` (gradient descent, evaluation) are untouched.

    Engines (`engine`):

    - `per_sample`: module hooks capture each `nn.Linear` / `nn.Embedding` call; ordinary
      backward passes (one per objective a sample feeds: one for IWRM) give per-sample
      weight gradients and so the Jacobian rows, with no second backward. Needs every
      trainable parameter in such a leaf and batch-first inputs. Checked against autograd on
      its first step. Its memory is planned each step (see below); past the budget it
      streams the Jacobian module by module (Gramian-based aggregators; reported as
      `per_sample_streamed`).
    - `autogram`: Gramian by torchjd's `autogram.Engine` (`batch_dim=0`), weights from the
      aggregator's weighting, one weighted backward. Gramian-based aggregators only. The
      Engine covers module parameters only; with extra inputs and `"all"`, one more
      backward per colour (one for IWRM) gives their part of the Gramian.
    - `autojac`: Jacobian by torchjd's `autojac.jac` (`autojac_chunk_size` rows at a time;
      1, the default, is fastest on CPU), any aggregator.
    - `sequential`: one backward per objective (per base objective, see `ObjectiveSet`), as
      the reference implementation did.
    - `auto`: one plain backward for a single objective or for weights that need no
      Jacobian (`mean`, `sum`, `constant`, `random`); else, when the model allows, the
      first of `per_sample`, `per_sample_streamed` (Gramian-based aggregators) and
      `autojac` whose estimated peak fits the budget; else `autogram` for Gramian-based
      aggregators, else `autojac`.

    Memory plan (`per_sample` and `auto`): each step estimates the candidates' peak bytes
    from the recorded shapes (`MemoryPlan`) against `max_jacobian_bytes` (default: 80% of
    the GPU memory free after the forward, 4 GiB on CPU), logs the first plan on the
    `jd_splits` logger (WARNING if it falls back or does not fit) and keeps the latest in
    `memory_plan`. `per_sample` with an aggregator needing the whole Jacobian raises
    MemoryError past the budget.

    Under `DistributedDataParallel` (pass the wrapped model): each rank aggregates its own
    objectives (JD per rank, not over the global objective set; cross-rank conflicts are
    not seen), then the ranks' parameter updates are AVERAGED by one all-reduce per
    `backward` call, entered by every rank whatever its objectives. The forwards in
    `record()` run under `no_sync()`, so DDP's own reducer stays out of it. Extra inputs
    are not reduced (each rank's rows belong to its own samples). To match gradient
    descent on the global batch with averaging, scale by `1 / local batch size`.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        aggregator: str | Aggregator = "upgrad",
        aggregator_params: Mapping[str, Any] | None = None,
        engine: EngineName = "auto",
        split: Split | None = None,
        max_jacobian_bytes: int | None = None,
        autojac_chunk_size: int | None = 1,
        jacobian_covers: JacobianCovers = "all",
    ) -> None:
        if engine not in ENGINE_NAMES:
            raise ValueError(f"unknown engine {engine!r}; valid engines: {', '.join(ENGINE_NAMES)}")
        if jacobian_covers not in JACOBIAN_COVERS:
            raise ValueError(
                f"unknown jacobian_covers {jacobian_covers!r}; valid values: "
                f"{', '.join(JACOBIAN_COVERS)}"
            )
        if isinstance(aggregator, str):
            aggregator = make_aggregator(aggregator, **(aggregator_params or {}))
        elif aggregator_params:
            raise ValueError("aggregator_params go with an aggregator name, not an instance")
        self.model = model
        self.aggregator = aggregator
        self.engine = engine
        self.autojac_chunk_size = autojac_chunk_size
        self.jacobian_covers = jacobian_covers
        self._covers_extras = jacobian_covers == "all"
        self._ddp = model if isinstance(model, nn.parallel.DistributedDataParallel) else None
        self._module: nn.Module = self._ddp.module if self._ddp is not None else model
        self._params: list[Tensor] = [p for p in self._module.parameters() if p.requires_grad]
        self._max_jacobian_bytes = max_jacobian_bytes
        self._memory_plan: MemoryPlan | None = None
        self._plan_reported = False
        self._verified = False
        self._recording = False
        self._gramian_engine: Engine | None = None
        self._hooks = self._plan_hooks(split)
        self._recorder = CallRecorder(self._module) if "per_sample" in self._hooks else None

    def _plan_hooks(self, split: Split | None) -> frozenset[str]:
        gramian_based = gramian_weighting(self.aggregator) is not None
        problems = per_sample_problems(self._module)
        if self.engine == "per_sample":
            if problems:
                raise ValueError(
                    "the per_sample engine cannot handle this model: " + "; ".join(problems)
                )
            return frozenset({"per_sample"})
        if self.engine == "autogram":
            if not gramian_based:
                raise ValueError(
                    f"the autogram engine needs a Gramian-based aggregator, not {self.aggregator}"
                )
            return frozenset({"autogram"})
        if self.engine != "auto":
            return frozenset()
        if (split is not None and split.single_objective) or has_fixed_weights(self.aggregator):
            return frozenset()
        if not problems:
            return frozenset({"per_sample"})
        return frozenset({"autogram"}) if gramian_based else frozenset()

    @property
    def parameters(self) -> list[Tensor]:
        """The trainable parameters whose `.grad` the step fills."""
        return list(self._params)

    @property
    def memory_plan(self) -> MemoryPlan | None:
        """The memory plan of the latest step that planned one (None before)."""
        return self._memory_plan

    @property
    def needs_record(self) -> bool:
        """Whether `backward` of structured objectives (an `ObjectiveSet` with per-sample
        blocks) must be called inside `record()`, because the engine uses hooks. A plain
        vector of objectives never needs it."""
        return bool(self._hooks)

    @contextmanager
    def record(self) -> Iterator[None]:
        """Run the forward(s) of one JD step and its `backward` inside this context. The
        hooks the engine needs exist only here; under DDP the forwards run in `no_sync()`."""
        if self._recording:
            raise RuntimeError("JacobianDescent.record() is already active")
        self._recording = True
        with ExitStack() as stack:
            stack.callback(self._stop_recording)
            if self._ddp is not None:
                stack.enter_context(self._ddp.no_sync())
            if "autogram" in self._hooks:
                # A fresh Engine per step: a forward it saw without a Gramian would break the
                # next one, and dropping it removes its hooks.
                self._gramian_engine = Engine(self._module, batch_dim=0)
            if self._recorder is not None:
                self._recorder.attach()
            yield

    def _stop_recording(self) -> None:
        if self._recorder is not None:
            self._recorder.detach()
        self._gramian_engine = None
        self._recording = False

    def backward(
        self,
        objectives: ObjectiveSet | Tensor,
        *,
        extra_inputs: Sequence[Tensor] = (),
        scale: float = 1.0,
    ) -> Diagnostics:
        """Fill `.grad` with the aggregated update of the objectives (multiplied by `scale`)
        and return the step's diagnostics."""
        start = time.perf_counter()
        if isinstance(objectives, Tensor):
            objectives = ObjectiveSet.from_vector(objectives)
        if self._hooks and objectives.structured and not self._recording:
            raise RuntimeError(
                "this JacobianDescent records the forward with hooks: run the forward and "
                "call backward inside `with jd.record():`"
            )
        if self._ddp is not None and not self._recording:
            raise RuntimeError(
                "under DistributedDataParallel, run the forward and call backward inside "
                "`with jd.record():` (the forward must run under no_sync())"
            )
        for extra in extra_inputs:
            if not (extra.is_leaf and extra.requires_grad):
                raise ValueError("extra_inputs must be leaf tensors that require grad")
        objectives = objectives.scaled(scale)
        extras = list(extra_inputs)
        engine, aggregation = self._aggregate(objectives, extras)
        self._apply(aggregation, extras)
        return Diagnostics(
            engine=engine,
            num_objectives=objectives.count,
            dropped=objectives.dropped,
            seconds=time.perf_counter() - start,
            **aggregation.statistics,
        )

    def _aggregate(self, objectives: ObjectiveSet, extras: list[Tensor]) -> tuple[str, Aggregation]:
        m = objectives.count
        params = self._params
        if m == 0:
            return "none", Aggregation(
                [None] * len(params), [None] * len(extras), empty_statistics()
            )
        if m == 1:
            return "plain", _engines.plain(objectives, params, extras)
        engine: str = self.engine
        if engine == "auto":
            weights = fixed_weights(self.aggregator, m, objectives.values)
            if weights is not None:
                return "weighted", _engines.weighted(objectives, weights, params, extras)
            engine = self._choose(objectives, extras)
        elif engine == "per_sample":
            engine = self._plan(objectives, extras, allow_autojac=False).engine
        if engine in ("per_sample", "per_sample_streamed"):
            return engine, self._per_sample(objectives, extras, whole=engine == "per_sample")
        if engine == "autogram":
            if self._gramian_engine is None:
                raise RuntimeError("the autogram engine was not planned for this JacobianDescent")
            return engine, _engines.autogram(
                self._gramian_engine,
                objectives,
                self.aggregator,
                params,
                extras,
                covers_extras=self._covers_extras,
            )
        inputs = [*params, *extras]
        if engine == "autojac":
            jacobians = _engines.autojac_jacobians(objectives, inputs, self.autojac_chunk_size)
        else:
            jacobians = _engines.sequential_jacobians(objectives, inputs)
        n = len(params)
        return engine, aggregate_jacobian(
            self.aggregator, jacobians[:n], jacobians[n:], covers_extras=self._covers_extras
        )

    def _per_sample(
        self, objectives: ObjectiveSet, extras: list[Tensor], *, whole: bool
    ) -> Aggregation:
        if self._recorder is None:
            raise RuntimeError("the per_sample engine was not planned for this JacobianDescent")
        params, calls, verify = self._params, self._recorder.calls, not self._verified
        if whole:
            jac_params, jac_extras = per_sample_jacobians(
                objectives, calls, params, extras, verify=verify
            )
            self._verified = True
            return aggregate_jacobian(
                self.aggregator, jac_params, jac_extras, covers_extras=self._covers_extras
            )
        gramian, weights, updates, extra_updates = per_sample_streamed(
            objectives,
            calls,
            params,
            extras,
            partial(weights_from_gramian, self.aggregator),
            verify=verify,
            covers_extras=self._covers_extras,
        )
        self._verified = True
        return Aggregation(updates, extra_updates, gramian_statistics(gramian, weights))

    def _choose(self, objectives: ObjectiveSet, extras: list[Tensor]) -> str:
        if objectives.structured and self._recorder is not None:
            return self._plan(objectives, extras, allow_autojac=True).engine
        if objectives.structured and self._gramian_engine is not None:
            return "autogram"
        return "autojac"

    def _plan(
        self, objectives: ObjectiveSet, extras: list[Tensor], *, allow_autojac: bool
    ) -> MemoryPlan:
        """This step's memory plan (see the class docstring), reported the first time."""
        if self._recorder is None:
            raise RuntimeError("the per_sample engine was not planned for this JacobianDescent")
        gramian_based = gramian_weighting(self.aggregator) is not None
        sizes = measure(
            objectives,
            self._recorder.calls,
            self._params,
            extras,
            verify=not self._verified,
            gramian_based=gramian_based,
        )
        chosen = plan(
            sizes,
            gramian_based=gramian_based,
            allow_autojac=allow_autojac,
            max_bytes=self._max_jacobian_bytes,
            device=self._params[0].device if self._params else torch.device("cpu"),
            chunk_size=self.autojac_chunk_size or objectives.base_count,
        )
        self._memory_plan = chosen
        if not self._plan_reported:
            self._plan_reported = True
            warn = chosen.fallback or not chosen.fits
            _LOGGER.log(logging.WARNING if warn else logging.INFO, "%s", chosen)
        if len(chosen.estimates) == 1 and not chosen.fits:
            raise MemoryError(
                f"the per_sample engine's estimated peak exceeds its budget and "
                f"{self.aggregator} needs the Jacobian whole: {chosen}"
            )
        return chosen

    def _apply(self, aggregation: Aggregation, extras: list[Tensor]) -> None:
        updates = aggregation.params
        if self._ddp is not None:
            updates = _all_reduce_mean(self._params, updates, self._ddp.process_group)
        for tensor, update in zip(
            [*self._params, *extras], [*updates, *aggregation.extras], strict=True
        ):
            if update is None:
                continue
            update = update.to(tensor.dtype).view_as(tensor)
            if tensor.grad is None:
                tensor.grad = update
            else:
                tensor.grad += update


def _all_reduce_mean(
    params: Sequence[Tensor], updates: Sequence[Tensor | None], group: Any
) -> list[Tensor | None]:
    """One all-reduce of every parameter's update (zeros where a rank has none), divided by
    the world size. Every rank calls it once per step whatever its objectives."""
    flat = torch.cat(
        [
            (torch.zeros_like(p) if u is None else u.to(p.dtype)).reshape(-1)
            for p, u in zip(params, updates, strict=True)
        ]
    )
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    flat /= dist.get_world_size(group)
    return [
        chunk.view_as(p)
        for chunk, p in zip(torch.split(flat, [p.numel() for p in params]), params, strict=True)
    ]
