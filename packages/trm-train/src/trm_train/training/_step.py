"""One optimizer step: micro-batches through the model, the JD step, both optimizers.

Carry mode (every split but `stack_supervisions*`): the carry persists across batches;
each micro-batch refills the halted slots with new samples and runs one supervision
step. Stacked mode: each micro-batch starts a fresh carry and unrolls T =
`halt_max_steps` steps, keeping every step's graph, so the split sees one `LossTerms`
per step (whose `stack_supervisions*` presets divide each step's loss by T).

Under DDP each rank runs JD on its own objectives and `JacobianDescent` averages the
ranks' updates (one all-reduce per micro-batch); the puzzle-embedding rows' gradients
are all-gathered so every rank applies the same sparse update to its table. The logged
metrics cover every rank: loss and accuracy sums are summed over ranks, and each numeric
JD diagnostic (`jd/*`) is the mean over ranks of each rank's mean over its micro-steps.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

import trm_model
from jd_splits import Diagnostics

from .._batch import model_batch
from .._distributed import Distributed, all_gather_rows, all_reduce_sum
from ._schedule import warmup_cosine
from ._trainer import Trainer

# Sums reduced across ranks each step, in this order.
_SUMS = ("samples", "lm", "halt", "count", "accuracy", "exact_accuracy", "q_halt_accuracy", "steps")


class NonFiniteLossError(RuntimeError):
    """The loss of a training step is NaN or infinite."""


def train_step(trainer: Trainer) -> dict[str, Any]:
    """Run optimizer step `trainer.step + 1` and return its metrics (already reduced
    across ranks). Raises `NonFiniteLossError` before touching the weights if the loss
    is not finite."""
    start = time.perf_counter()
    config = trainer.config
    # The schedule's factor for this step, from the function the scheduler follows (its
    # 1-based step count): the puzzle embedding's SignSGD has no scheduler of its own.
    factor = warmup_cosine(
        trainer.step + 1,
        warmup_steps=config.optim.warmup_steps,
        total_steps=config.loop.steps,
        min_ratio=config.optim.lr_min_ratio,
    )
    trainer.puzzle_optimizer.lr = config.optim.puzzle_emb_lr * factor
    trainer.optimizer.zero_grad(set_to_none=True)

    sums = torch.zeros(len(_SUMS), dtype=torch.float64, device=trainer.runtime.device)
    row_ids: list[Tensor] = []
    row_grads: list[Tensor] = []
    outcomes: list[tuple[Tensor, Tensor]] = []
    diagnostics: list[Diagnostics] = []
    accum = config.loop.grad_accum
    for micro in range(accum):
        batch = model_batch(next(trainer.sampler), trainer.runtime.device)
        ids, rows, diag, step_sums, outcome = _micro_step(
            trainer, batch, objective_step=trainer.step * accum + micro, accum=accum
        )
        row_ids.append(ids)
        assert rows.grad is not None
        row_grads.append(rows.grad)
        diagnostics.append(diag)
        outcomes.append(outcome)
        sums += step_sums

    totals, jd = _reduce_over_ranks(sums, diagnostics, trainer.runtime)
    loss = (totals["lm"] + totals["halt"]) / max(totals["samples"], 1.0)
    if not math.isfinite(loss):
        raise NonFiniteLossError(f"the loss of step {trainer.step + 1} is {loss}")

    grad_norm = _grad_norm(trainer.jd.parameters)
    ids, grads = all_gather_rows(torch.cat(row_ids), torch.cat(row_grads), trainer.runtime)
    trainer.puzzle_optimizer.step(ids, grads)
    if not config.optim.freeze_weights:
        trainer.optimizer.step()
        if trainer.ema is not None:
            trainer.ema.update()
    if not _all_finite([*trainer.jd.parameters, trainer.puzzle_optimizer.table[ids]]):
        raise NonFiniteLossError(f"the weights became non-finite at step {trainer.step + 1}")
    lr = trainer.optimizer.param_groups[0]["lr"]
    with warnings.catch_warnings():
        # With frozen weights AdamATan2 never steps, yet the schedule (shared with the
        # puzzle embedding) must advance: PyTorch's order warning does not apply.
        warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"))
        trainer.scheduler.step()
    if trainer.failure_weights is not None:
        _update_failure_weights(trainer, outcomes)
    trainer.step += 1

    seconds = time.perf_counter() - start
    examples = config.data.global_batch_size * accum
    metrics: dict[str, Any] = {
        "train/loss": loss,
        "train/lm_loss": totals["lm"] / max(totals["samples"], 1.0),
        "train/halt_loss": totals["halt"] / max(totals["samples"], 1.0),
        "train/counted": totals["count"],
        "train/lr": lr,
        "train/grad_norm": grad_norm,
        "train/step_seconds": seconds,
        "train/examples_per_second": examples / seconds,
        "train/epoch": trainer.sampler.epoch,
    }
    if totals["count"] > 0:  # no sample finished this step: nothing to score
        scored = ["accuracy", "exact_accuracy", "steps"]
        if config.model.has_q_head:
            scored.append("q_halt_accuracy")
        for key in scored:
            metrics[f"train/{key}"] = totals[key] / totals["count"]
    metrics.update(jd)
    return metrics


def _micro_step(
    trainer: Trainer, batch: trm_model.Batch, *, objective_step: int, accum: int
) -> tuple[Tensor, Tensor, Diagnostics, Tensor, tuple[Tensor, Tensor]]:
    model, config = trainer.model, trainer.config
    table = model.puzzle_emb
    assert table is not None
    stacked = config.objective.stacks_supervisions
    carry = model.initial_carry(batch) if stacked or trainer.carry is None else trainer.carry
    carry = model.refill(carry, batch)
    ids = carry.batch.puzzle_identifiers
    rows = table[ids].detach().clone().requires_grad_()
    local_batch = batch.inputs.shape[0]
    unrolled = config.model.halt_max_steps if stacked else 1
    with trainer.jd.record():
        outputs = []
        for _ in range(unrolled):
            out = model(carry, rows, generator=trainer.generator)
            outputs.append(out)
            carry = out.carry
        objectives = trainer.split.objectives([o.losses for o in outputs], step=objective_step)
        diagnostics = trainer.jd.backward(
            objectives, extra_inputs=[rows], scale=1.0 / (local_batch * accum)
        )
    if not stacked:
        trainer.carry = carry
    final = outputs[-1]
    sums = _step_sums(outputs, every_slot=stacked)
    counted = final.losses.mask if stacked else final.metrics.counted
    # Every slot with flags, so that all ranks gather tensors of one size.
    outcome = (ids, torch.stack([counted, final.metrics.exact], dim=1).to(torch.float32))
    return ids, rows, diagnostics, sums, outcome


def _step_sums(outputs: list[trm_model.StepOutput], *, every_slot: bool) -> Tensor:
    """Loss sums, averaged over the unrolled steps; metrics of the last step, over the
    slots that halted there (carry mode, as TRM counts them) or over every labelled slot
    (stacked)."""
    final = outputs[-1]
    metrics = final.metrics
    if every_slot:
        metrics = trm_model.StepMetrics(
            counted=final.losses.mask,
            token_accuracy=metrics.token_accuracy,
            exact=metrics.exact,
            q_halt_correct=metrics.q_halt_correct,
            steps=metrics.steps,
        )
    totals = metrics.totals()
    with torch.no_grad():
        values = [
            final.losses.mask.sum(),
            sum(o.losses.lm.sum() for o in outputs) / len(outputs),
            sum(0.0 if o.losses.halt is None else o.losses.halt.sum() for o in outputs)
            / len(outputs),
            *(totals[key] for key in _SUMS[3:]),
        ]
    device = final.losses.lm.device
    return torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values])


def _all_finite(tensors: list[Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _grad_norm(params: list[Tensor]) -> float:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))


def _reduce_over_ranks(
    sums: Tensor, diagnostics: list[Diagnostics], runtime: Distributed
) -> tuple[dict[str, float], dict[str, Any]]:
    """The `_SUMS` summed over ranks, and the JD diagnostics averaged over each rank's
    micro-steps, then over ranks (every rank runs as many): one all-reduce for both."""
    jd = _mean_diagnostics(diagnostics)
    numeric = [key for key, value in jd.items() if not isinstance(value, str)]
    local = torch.tensor([float(jd[key]) for key in numeric], dtype=sums.dtype, device=sums.device)
    reduced = all_reduce_sum(torch.cat([sums, local]), runtime).tolist()
    means = reduced[len(_SUMS) :]
    jd.update({key: value / runtime.world_size for key, value in zip(numeric, means, strict=True)})
    return dict(zip(_SUMS, reduced[: len(_SUMS)], strict=True)), jd


def _mean_diagnostics(diagnostics: list[Diagnostics]) -> dict[str, Any]:
    """This rank's diagnostics, each numeric one averaged over the micro-steps (NaN if any
    is NaN); the strings (the engine) are the same in every micro-step."""
    first = diagnostics[0].as_dict()
    merged: dict[str, Any] = {}
    for key, value in first.items():
        if isinstance(value, str):
            merged[key] = value
        else:
            values = [float(d.as_dict()[key]) for d in diagnostics]
            merged[key] = float(np.mean(values))
    return merged


def _update_failure_weights(trainer: Trainer, outcomes: list[tuple[Tensor, Tensor]]) -> None:
    assert trainer.failure_weights is not None
    ids, flags = all_gather_rows(
        torch.cat([i for i, _ in outcomes]), torch.cat([f for _, f in outcomes]), trainer.runtime
    )
    counted = flags[:, 0].cpu().numpy() > 0.5
    exact = flags[:, 1].cpu().numpy() > 0.5
    trainer.failure_weights.update(ids.cpu().numpy()[counted].astype(np.int64), exact[counted])
    # A copy: the sampler plans the current epoch with the weights it was given.
    trainer.sampler.set_weights(trainer.failure_weights.weights.copy())
