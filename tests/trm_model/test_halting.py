from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from trm_model import TRM, Batch, Carry, TRMConfig

ConfigFactory = Callable[..., TRMConfig]
ModelFactory = Callable[..., TRM]
BatchFactory = Callable[..., Batch]

SEED = 11


def _set_q(model: TRM, q_halt: float, q_continue: float = -5.0) -> None:
    """Constant Q logits: zero weight, the values as bias."""
    assert model.q_head is not None and model.q_head.bias is not None
    with torch.no_grad():
        model.q_head.weight.zero_()
        model.q_head.bias.copy_(torch.tensor([q_halt, q_continue]))


def _halted_per_step(model: TRM, batch: Batch, steps: int) -> list[list[bool]]:
    """Run ``steps`` supervision steps on one batch without refilling."""
    generator = torch.Generator().manual_seed(SEED)
    carry: Carry = model.refill(model.initial_carry(batch), batch)
    history = []
    for _ in range(steps):
        with torch.no_grad():
            carry = model(carry, generator=generator).carry
        history.append(carry.halted.tolist())
    return history


def test_training_halts_at_max_steps_when_q_says_continue(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(halt_max_steps=3, halt_exploration_prob=0.0)
    model = make_model(config).train()
    _set_q(model, q_halt=-1.0)
    history = _halted_per_step(model, make_batch(config, 4), 3)
    assert history == [[False] * 4, [False] * 4, [True] * 4]


def test_training_halts_when_q_halt_is_positive(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(halt_max_steps=4, halt_exploration_prob=0.0)
    model = make_model(config).train()
    _set_q(model, q_halt=0.5)
    assert _halted_per_step(model, make_batch(config, 4), 1) == [[True] * 4]


def test_evaluation_always_runs_max_steps(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(halt_max_steps=3)
    model = make_model(config).eval()
    _set_q(model, q_halt=5.0)
    history = _halted_per_step(model, make_batch(config, 4), 3)
    assert history == [[False] * 4, [False] * 4, [True] * 4]


def test_exploration_imposes_the_drawn_minimum_step(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    size, max_steps = 6, 4
    config = small_config(halt_max_steps=max_steps, halt_exploration_prob=1.0)
    model = make_model(config).train()
    _set_q(model, q_halt=5.0)
    history = _halted_per_step(model, make_batch(config, size), 3)
    # The documented draws, per step: rand(B) (all explore at p = 1), then the minimum
    # halting steps in [2, max]; a sample halts once its step reaches the fresh draw.
    generator = torch.Generator().manual_seed(SEED)
    expected = []
    for step in range(1, 4):
        torch.rand(size, generator=generator)
        min_steps = torch.randint(2, max_steps + 1, (size,), generator=generator, dtype=torch.int32)
        expected.append((step >= min_steps).tolist())
    assert history == expected
    assert history[0] == [False] * size  # the floor is at least 2
    assert any(history[1]) and not all(history[1])  # the draws differ between samples


def test_exploration_never_halts_before_q_or_max(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(halt_max_steps=3, halt_exploration_prob=1.0)
    model = make_model(config).train()
    _set_q(model, q_halt=-5.0)
    history = _halted_per_step(model, make_batch(config, 6), 3)
    assert history == [[False] * 6, [False] * 6, [True] * 6]


def test_fixed_act_mode_runs_every_sample_exactly_t_steps(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(act_mode="fixed", halt_max_steps=3, halt_exploration_prob=1.0)
    model = make_model(config).train()
    _set_q(model, q_halt=5.0)
    batch = make_batch(config, 4)
    # No random draw happens without ACT: no generator needed.
    carry = model.refill(model.initial_carry(batch), batch)
    for step in range(1, 4):
        with torch.no_grad():
            carry = model(carry).carry
        assert carry.steps.tolist() == [step] * 4
        assert carry.halted.tolist() == [step == 3] * 4


@pytest.mark.parametrize(("q_halt", "q_continue", "halts"), [(1.0, 2.0, False), (2.0, 1.0, True)])
def test_q_continue_compares_the_two_logits(
    q_halt: float,
    q_continue: float,
    halts: bool,
    small_config: ConfigFactory,
    make_model: ModelFactory,
    make_batch: BatchFactory,
) -> None:
    config = small_config(q_continue=True, halt_exploration_prob=0.0)
    model = make_model(config).train()
    _set_q(model, q_halt, q_continue)
    assert _halted_per_step(model, make_batch(config, 2), 1) == [[halts] * 2]


def test_training_with_random_draws_requires_a_generator(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config()
    model = make_model(config).train()
    batch = make_batch(config, 2)
    carry = model.refill(model.initial_carry(batch), batch)
    with pytest.raises(ValueError, match="generator"):
        model(carry)
    model.eval()
    with torch.no_grad():
        model(carry)  # evaluation draws nothing
