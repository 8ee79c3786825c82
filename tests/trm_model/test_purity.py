"""Pure, batch-independent forwards: what Gramian engines re-running modules rely on."""

from __future__ import annotations

from collections.abc import Callable

import torch

from trm_model import TRM, Batch, StepOutput, TRMConfig

ConfigFactory = Callable[..., TRMConfig]
ModelFactory = Callable[..., TRM]
BatchFactory = Callable[..., Batch]

# Every source of randomness on: dropout, exploration, carry perturbation.
RANDOM = {"dropout": 0.1, "halt_exploration_prob": 0.5, "carry_perturbation": 0.05}


def _step(model: TRM, batch: Batch, seed: int = 0) -> StepOutput:
    carry = model.refill(model.initial_carry(batch), batch)
    return model(carry, generator=torch.Generator().manual_seed(seed))


def _halt(out: StepOutput) -> torch.Tensor:
    assert out.losses.halt is not None
    return out.losses.halt


def _rows(out: StepOutput, index: list[int]) -> list[torch.Tensor]:
    """Every per-sample output of the step, restricted to the rows ``index``."""
    return [
        out.logits[index],
        out.q_halt[index],
        out.q_continue[index],
        out.losses.lm[index],
        _halt(out)[index],
        out.carry.z_H[index],
        out.carry.z_L[index],
        out.carry.halted[index],
        out.metrics.exact[index],
    ]


def test_same_inputs_and_generator_state_give_the_same_outputs(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(**RANDOM)
    model = make_model(config).train()
    batch = make_batch(config, 4)
    first, second = _step(model, batch), _step(model, batch)
    for a, b in zip(_rows(first, [0, 1, 2, 3]), _rows(second, [0, 1, 2, 3]), strict=True):
        assert torch.equal(a, b)
    other_seed = _step(model, batch, seed=1)
    assert not torch.equal(first.logits, other_seed.logits)


def test_a_sample_does_not_see_the_other_samples(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(**RANDOM)
    model = make_model(config).train()
    assert model.puzzle_emb is not None
    with torch.no_grad():
        model.puzzle_emb.normal_(generator=torch.Generator().manual_seed(3))
    batch = make_batch(config, 4, seed=1)
    changed = make_batch(config, 4, seed=2)
    j = 2
    mixed = Batch(
        inputs=torch.where(torch.arange(4)[:, None] == j, changed.inputs, batch.inputs),
        labels=torch.where(torch.arange(4)[:, None] == j, changed.labels, batch.labels),
        puzzle_identifiers=torch.where(
            torch.arange(4) == j, changed.puzzle_identifiers, batch.puzzle_identifiers
        ),
    )
    base, moved = _step(model, batch), _step(model, mixed)
    others = [0, 1, 3]
    for a, b in zip(_rows(base, others), _rows(moved, others), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(base.logits[j], moved.logits[j])


def test_evaluation_of_a_sample_alone_equals_it_within_a_batch(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config()
    model = make_model(config).eval()
    batch = make_batch(config, 3)
    alone = Batch(batch.inputs[1:2], batch.labels[1:2], batch.puzzle_identifiers[1:2])
    with torch.no_grad():
        together, single = _step(model, batch), _step(model, alone)
    for a, b in zip(_rows(together, [1]), _rows(single, [0]), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_forward_writes_no_buffer_and_no_parameter(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(**RANDOM, q_continue=True)
    model = make_model(config).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _step(model, make_batch(config, 3))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
