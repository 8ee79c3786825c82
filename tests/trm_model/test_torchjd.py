"""torchjd's Gramian engine on the model equals J J^T from explicit per-objective gradients."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torchjd.autogram import Engine

from trm_model import TRM, Batch, StepOutput, TRMConfig

ConfigFactory = Callable[..., TRMConfig]
ModelFactory = Callable[..., TRM]
BatchFactory = Callable[..., Batch]


def _step(model: TRM, batch: Batch) -> StepOutput:
    carry = model.refill(model.initial_carry(batch), batch)
    return model(carry, generator=torch.Generator().manual_seed(0))


def _explicit_gramian(model: TRM, objectives: Tensor) -> Tensor:
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for objective in objectives.flatten():
        grads = torch.autograd.grad(objective, params, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (torch.zeros_like(p) if g is None else g).flatten()
                    for p, g in zip(params, grads, strict=True)
                ]
            )
        )
    jacobian = torch.stack(rows).double()
    return jacobian @ jacobian.T


def _per_sample(out: StepOutput) -> Tensor:
    assert out.losses.halt is not None
    return out.losses.lm.sum(-1) + out.losses.halt


def _per_sample_with_internal(out: StepOutput) -> Tensor:
    # Every readout must reach the objectives: the engine rejects hooked calls with no backward.
    assert out.losses.internal is not None
    return _per_sample(out) + sum(term.sum(-1) for term in out.losses.internal[:-1])


def _lm_and_halt(out: StepOutput) -> Tensor:
    assert out.losses.halt is not None
    return torch.stack((out.losses.lm.sum(-1), out.losses.halt), dim=-1)


def _lm_and_cycles(out: StepOutput) -> Tensor:
    # The no-ACT variant: no halting loss; every cycle's term is an objective.
    assert out.losses.halt is None and out.losses.internal is not None
    terms = [out.losses.lm, *out.losses.internal]
    return torch.stack([term.sum(-1) for term in terms], dim=-1)


@pytest.mark.parametrize(
    ("changes", "objectives"),
    [
        ({}, _per_sample),
        ({"dropout": 0.1, "intermediate_outputs": True}, _per_sample_with_internal),
        ({"pos_encodings": "learned", "attention": "math"}, _lm_and_halt),
        ({"mlp_t": True, "pos_encodings": "none"}, _per_sample),
        ({"act_mode": "none", "dropout": 0.1, "attention": "math"}, _lm_and_cycles),
    ],
    ids=["iwrm", "iwrm-dropout", "iwrm-x-terms-math", "iwrm-mlp_t", "no-act-x-cycles-math"],
)
def test_autogram_gramian_equals_explicit_jjt(
    changes: dict[str, object],
    objectives: Callable[[StepOutput], Tensor],
    small_config: ConfigFactory,
    make_model: ModelFactory,
    make_batch: BatchFactory,
) -> None:
    config = small_config(halt_exploration_prob=0.0, **changes)
    model = make_model(config).train()
    if model.q_head is not None:
        with torch.no_grad():  # a Q head that depends on the state: a non-trivial Jacobian
            model.q_head.weight.normal_(generator=torch.Generator().manual_seed(2))
    batch = make_batch(config, 4, ignore_tail=3)
    expected = _explicit_gramian(model, objectives(_step(model, batch)))

    engine = Engine(model, batch_dim=0)  # before the forward, as torchjd requires
    gramian = engine.compute_gramian(objectives(_step(model, batch)))
    torch.testing.assert_close(
        gramian.double(), expected, rtol=1e-4, atol=1e-6 * expected.abs().max().item()
    )
