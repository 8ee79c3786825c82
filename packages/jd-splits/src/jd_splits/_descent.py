"""`JacobianDescent`: the JD step of a training loop, its `record()` rule and DDP."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ._aggregate import Aggregation
from ._aggregators import Aggregator, make_aggregator
from ._diagnostics import Diagnostics
from ._dispatch import Dispatch
from ._engine_names import ENGINE_NAMES, JACOBIAN_COVERS, EngineName, JacobianCovers
from ._memory import MemoryPlan
from ._objective_set import ObjectiveSet
from ._split import Split


class JacobianDescent:
    """Owns the machinery of Jacobian descent for one model: create it once, then per
    training step run the forward(s) and call `backward` inside `record()`, always.

    ```
    jd = JacobianDescent(model, aggregator="upgrad", split=split)
    for step, batch in enumerate(loader):
        with jd.record():
            terms = model(batch)                          # one LossTerms per supervision step
            diagnostics = jd.backward(split.objectives([terms], step=step))
        optimizer.step()
        optimizer.zero_grad()
    ```

    The rule has no exception: `backward` outside `record()` raises RuntimeError, whatever
    the engine, the objective count or DDP (some engines hook the model's modules there, and
    DDP's forwards must run under `no_sync()`; one rule keeps a loop right when these change).
    Forwards outside `record()` (gradient descent, evaluation) are untouched.

    `backward` takes an `ObjectiveSet` (`Split.objectives`, `ObjectiveSet.per_instance` or
    `ObjectiveSet.from_vector`) and fills `.grad` of the model's trainable parameters (and
    of `extra_inputs`) with `J^T w`, accumulating like `Tensor.backward`. Extra inputs are
    leaf tensors fed to the forward besides the parameters (e.g. per-sample embedding rows
    gathered from a table). `jacobian_covers` says which Jacobian the aggregator sees:
    `"all"` (the default; the reference differentiated every leaf requiring grad) the
    united `J = [J_params | J_extras]`, so `G = J_p J_p^T + J_e J_e^T`; `"parameters"`
    `J_params` alone, the extra inputs then receiving `J_extras^T w` with its weights.

    `split` (optional) is the split whose objectives every `backward` receives. It serves
    to plan: with a split of one objective (e.g. `sum`) `record()` installs no hooks, so
    the model may be compiled (`uses_hooks`). When it is given, `backward` refuses
    objectives made otherwise (by another split, `per_instance` or `from_vector`).

    Engines (`engine`; `jd/engine` in the diagnostics says which ran):

    - `per_sample`: module hooks capture each `nn.Linear` / `nn.Embedding` call; ordinary
      backward passes (one per objective a sample feeds: one for IWRM) give per-sample
      weight gradients and so the Jacobian rows, with no second backward. Needs every
      trainable parameter in such a leaf, batch-first inputs and structured objectives.
      Checked against autograd on its first step. Past its memory budget it streams the
      Jacobian module by module (Gramian-based aggregators; `per_sample_streamed`).
    - `autogram`: Gramian by torchjd's `autogram.Engine` (`batch_dim=0`), weights from the
      aggregator's weighting, one weighted backward. Gramian-based aggregators and
      structured objectives only; with extra inputs and `"all"`, one more backward per
      colour (one for IWRM) gives their part of the Gramian.
    - `autojac`: Jacobian by torchjd's `autojac.jac` (`autojac_chunk_size` rows at a time;
      1, the default, is fastest on CPU), any aggregator, any objectives.
    - `sequential`: one backward per (base) objective, as the reference implementation.
    - `auto`: one plain backward for a single objective, one weighted backward for weights
      that need no Jacobian (`mean`, `sum`, `constant`, `random`); else for structured
      objectives the first of `per_sample`, `per_sample_streamed` and `autojac` whose
      estimated peak fits the budget when the model allows `per_sample`, else `autogram`
      for Gramian-based aggregators; else `autojac`.

    The `per_sample` and `autogram` engines take a batch-first extra input to be
    per-sample (row `b` feeds sample `b` only). Memory plan (`per_sample` and `auto`):
    each step estimates the candidates' peak bytes from the recorded shapes against
    `max_jacobian_bytes` (default: 80% of the GPU memory free after the forward, 4 GiB on
    CPU), logs the first plan on the `jd_splits` logger (WARNING if it falls back or does
    not fit) and keeps the latest in `memory_plan`.

    Under `DistributedDataParallel` (pass the wrapped model) each rank aggregates its own
    objectives (cross-rank conflicts are not seen), then one all-reduce per `backward`,
    entered by every rank whatever its objectives, AVERAGES the parameter updates. Extra
    inputs are not reduced (each rank's rows belong to its own samples). To match gradient
    descent on the global batch, scale by `1 / local batch size`.
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
        self.split = split
        self.jacobian_covers = jacobian_covers
        self._ddp = model if isinstance(model, nn.parallel.DistributedDataParallel) else None
        module: nn.Module = self._ddp.module if self._ddp is not None else model
        self._params: list[Tensor] = [p for p in module.parameters() if p.requires_grad]
        self._recording = False
        self._dispatch = Dispatch(
            module,
            self._params,
            aggregator,
            engine,
            split,
            max_jacobian_bytes=max_jacobian_bytes,
            autojac_chunk_size=autojac_chunk_size,
            covers_extras=jacobian_covers == "all",
        )

    @property
    def parameters(self) -> list[Tensor]:
        """The trainable parameters whose `.grad` the step fills."""
        return list(self._params)

    @property
    def memory_plan(self) -> MemoryPlan | None:
        """The memory plan of the latest step that planned one (None before)."""
        return self._dispatch.memory_plan

    @property
    def uses_hooks(self) -> bool:
        """Whether `record()` hooks the model's modules (the `per_sample` or `autogram`
        engine may run). A model compiled whole bypasses module hooks: compile it whole only
        when this is False; compiling only what lies between its `nn.Linear` /
        `nn.Embedding` leaves keeps the hooks `per_sample` needs (see `hooked_engines`)."""
        return bool(self._dispatch.hooks)

    @property
    def hooked_engines(self) -> frozenset[str]:
        """The engines whose hooks `record()` installs: `per_sample`, `autogram` or none.
        `autogram` runs the model's backward under `vmap`, which torch refuses for compiled
        backward functions: it needs a model with no compiled part."""
        return self._dispatch.hooks

    @contextmanager
    def record(self) -> Iterator[None]:
        """Run the forward(s) of one JD step and its `backward` inside this context, always.
        The hooks the engine needs exist only here; under DDP the forwards run in `no_sync()`."""
        if self._recording:
            raise RuntimeError("JacobianDescent.record() is already active")
        self._recording = True
        with ExitStack() as stack:
            stack.callback(self._stop_recording)
            if self._ddp is not None:
                stack.enter_context(self._ddp.no_sync())
            self._dispatch.attach()
            yield

    def _stop_recording(self) -> None:
        self._dispatch.detach()
        self._recording = False

    def backward(
        self,
        objectives: ObjectiveSet,
        *,
        extra_inputs: Sequence[Tensor] = (),
        scale: float = 1.0,
    ) -> Diagnostics:
        """Fill `.grad` with the aggregated update of the objectives (multiplied by `scale`)
        and return the step's diagnostics. Call it inside `record()`, with the objectives of
        the forward(s) run there."""
        start = time.perf_counter()
        self._check(objectives)
        for extra in extra_inputs:
            if not (extra.is_leaf and extra.requires_grad):
                raise ValueError("extra_inputs must be leaf tensors that require grad")
        objectives = objectives.scaled(scale)
        extras = list(extra_inputs)
        engine, aggregation = self._dispatch.aggregate(objectives, extras)
        self._apply(aggregation, extras)
        return Diagnostics(
            engine=engine,
            num_objectives=objectives.count,
            dropped=objectives.dropped,
            seconds=time.perf_counter() - start,
            **aggregation.statistics,
        )

    def _check(self, objectives: object) -> None:
        if not isinstance(objectives, ObjectiveSet):
            # A bare tensor would lose the per-sample structure the fast engines need.
            raise TypeError(
                f"backward takes an ObjectiveSet, not {type(objectives).__name__}: "
                "split.objectives(terms, step=...) for loss terms, "
                "ObjectiveSet.per_instance(losses) for per-sample losses [B] or [B, k], or "
                "ObjectiveSet.from_vector(values) for objectives without per-sample "
                "structure (differentiated by autojac, the slow path)"
            )
        if not self._recording:
            raise RuntimeError(
                "run the forward(s) and call backward inside `with jd.record():` (always: "
                "the engine's hooks and DDP's no_sync() exist only there)"
            )
        if self.split is not None and objectives.split != self.split:
            made = "no split" if objectives.split is None else f"another split, {objectives.split}"
            raise ValueError(
                f"this JacobianDescent was built for the objectives of {self.split}, but "
                f"these come from {made}; pass the split the objectives come from, or none"
            )

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
