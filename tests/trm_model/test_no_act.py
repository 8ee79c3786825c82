"""The write-up's no-ACT variant (act_mode "none"), its refinement losses and dropout."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from trm_model import (
    IGNORE_LABEL_ID,
    TRM,
    Batch,
    TRMConfig,
    load_reference_state_dict,
    to_reference_state_dict,
)
from trm_model._blocks import Block
from trm_model._loss_head import loss_head

ConfigFactory = Callable[..., TRMConfig]
ModelFactory = Callable[..., TRM]
BatchFactory = Callable[..., Batch]


def test_the_no_act_variant_has_no_q_head_and_an_output_logits_buffer(
    small_config: ConfigFactory, make_model: ModelFactory
) -> None:
    config = small_config(act_mode="none")
    model = make_model(config)
    keys = set(model.state_dict())
    assert not any(key.startswith("q_head") for key in keys)
    assert model.output_logits_init is not None
    assert model.output_logits_init.shape == (config.vocab_size,)
    # Truncated normal, std 1: drawn, not zero.
    assert model.output_logits_init.abs().sum() > 0
    assert "output_logits_init" not in set(make_model(small_config()).state_dict())
    with pytest.raises(ValueError, match="q_continue needs a Q head"):
        small_config(act_mode="none", q_continue=True)


@pytest.mark.parametrize("training", [True, False])
def test_no_act_runs_exactly_halt_max_steps_without_halting_loss(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory, training: bool
) -> None:
    config = small_config(act_mode="none", halt_max_steps=3, halt_exploration_prob=1.0)
    model = make_model(config).train(training)
    batch = make_batch(config, 4)
    carry = model.refill(model.initial_carry(batch), batch)
    for step in range(1, 4):
        out = model(carry)  # no random draw: no generator needed
        carry = out.carry
        assert out.losses.halt is None
        assert torch.equal(out.q_halt, torch.zeros(4))
        assert carry.steps.tolist() == [step] * 4
        assert carry.halted.tolist() == [step == 3] * 4
        assert out.losses.internal is not None and len(out.losses.internal) == config.H_cycles


def test_every_cycle_of_the_no_act_variant_has_gradient(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(act_mode="none", H_cycles=3)
    model = make_model(config).train()
    batch = make_batch(config, 2)
    out = model(model.refill(model.initial_carry(batch), batch))
    assert out.losses.internal is not None
    for term in out.losses.internal:
        grads = torch.autograd.grad(term.sum(), list(model.net.parameters()), retain_graph=True)
        assert all(g.abs().sum() > 0 for g in grads)


def _stablemax_ce(logits: list[float], label: int) -> float:
    s = [x + 1 if x >= 0 else 1 / (1 - x) for x in logits]
    return -math.log(s[label] / sum(s))


def _hand_case(config: TRMConfig) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One sample, three tokens (the last unlabelled), vocab 3, two H cycles."""
    cycle_1 = torch.tensor([[[0.0, 1.0, -1.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]]])
    cycle_2 = torch.tensor([[[1.0, 3.0, -1.0], [2.0, 0.0, 0.0], [0.0, 5.0, 0.0]]])
    labels = torch.tensor([[1, 0, IGNORE_LABEL_ID]])
    return [cycle_1, cycle_2], labels


def _run_head(config: TRMConfig, cycles: list[torch.Tensor], labels: torch.Tensor) -> object:
    zeros = torch.zeros(1)
    losses, _, _ = loss_head(
        config,
        labels=labels,
        logits=cycles[-1],
        cycle_logits=cycles,
        prev_logits=None,
        q_halt=zeros,
        q_continue=zeros,
        q_continue_target=None,
        halted=torch.ones(1, dtype=torch.bool),
        steps=torch.ones(1, dtype=torch.int32),
    )
    return losses


def test_differential_internal_losses_match_hand_computed_values(
    small_config: ConfigFactory,
) -> None:
    config = small_config(act_mode="none")
    cycles, labels = _hand_case(config)
    losses = _run_head(config, cycles, labels)
    internal = losses.internal  # type: ignore[attr-defined]
    # Cycle 1 scores its own logits (logits_0 = 0); cycle 2 scores cycle_2 - cycle_1:
    # token 0 [1, 2, 0], token 1 [2, 0, 0]. Not divided by the 2 labelled tokens.
    expected_1 = [_stablemax_ce([0, 1, -1], 1), _stablemax_ce([0, 0, 0], 0), 0.0]
    expected_2 = [_stablemax_ce([1, 2, 0], 1), _stablemax_ce([2, 0, 0], 0), 0.0]
    assert expected_1[:2] == pytest.approx([math.log(1.75), math.log(3)])
    assert expected_2[:2] == pytest.approx([math.log(2), math.log(5 / 3)])
    torch.testing.assert_close(internal[0], torch.tensor([expected_1], dtype=torch.float64))
    torch.testing.assert_close(internal[1], torch.tensor([expected_2], dtype=torch.float64))
    # The LM loss is the final output's CE, normalised by the labelled tokens.
    lm = [_stablemax_ce([1, 3, -1], 1) / 2, _stablemax_ce([2, 0, 0], 0) / 2, 0.0]
    torch.testing.assert_close(losses.lm, torch.tensor([lm], dtype=torch.float64))  # type: ignore[attr-defined]
    assert losses.halt is None  # type: ignore[attr-defined]


def test_the_previous_cycle_is_detached_in_the_differential_loss(
    small_config: ConfigFactory,
) -> None:
    config = small_config(act_mode="none")
    cycles, labels = _hand_case(config)
    cycles = [c.clone().requires_grad_() for c in cycles]
    internal = _run_head(config, cycles, labels).internal  # type: ignore[attr-defined]
    (grad_first,) = torch.autograd.grad(internal[1].sum(), [cycles[0]], allow_unused=True)
    assert grad_first is None


def test_absolute_internal_losses_are_normalised_and_end_with_the_lm_loss(
    small_config: ConfigFactory,
) -> None:
    config = small_config(intermediate_outputs=True, internal_losses="absolute")
    cycles, labels = _hand_case(config)
    losses = _run_head(config, cycles, labels)
    internal = losses.internal  # type: ignore[attr-defined]
    first = [_stablemax_ce([0, 1, -1], 1) / 2, _stablemax_ce([0, 0, 0], 0) / 2, 0.0]
    torch.testing.assert_close(internal[0], torch.tensor([first], dtype=torch.float64))
    assert internal[1] is losses.lm  # type: ignore[attr-defined]
    assert losses.halt is not None  # type: ignore[attr-defined]


def test_a_fresh_sample_starts_from_output_logits_init_in_the_differential_loss(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(act_mode="none", differential_loss=True, halt_max_steps=2)
    model = make_model(config)
    assert model.output_logits_init is not None
    batch = make_batch(config, 3)
    carry = model.refill(model.initial_carry(batch), batch)
    assert carry.prev_logits is not None
    expected = model.output_logits_init.expand(3, config.seq_len, -1)
    torch.testing.assert_close(carry.prev_logits, expected)
    out = model(carry)
    # The next step scores against this step's logits.
    assert out.carry.prev_logits is not None
    torch.testing.assert_close(out.carry.prev_logits, out.logits.detach())


def test_the_reference_layout_carries_output_logits_init(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(act_mode="none")
    model = make_model(config, seed=3)
    reference = to_reference_state_dict(model)
    assert "model.inner.output_logits_init" in reference
    assert not any("q_head" in key for key in reference)
    loaded = load_reference_state_dict(reference, config)
    assert loaded.output_logits_init is not None and model.output_logits_init is not None
    assert torch.equal(loaded.output_logits_init, model.output_logits_init)
    batch = make_batch(config, 2)
    a = model(model.refill(model.initial_carry(batch), batch))
    b = loaded(loaded.refill(loaded.initial_carry(batch), batch))
    assert torch.equal(a.logits, b.logits)


def test_dropout_acts_on_the_block_output_after_its_last_norm(
    small_config: ConfigFactory,
) -> None:
    config = small_config(dropout=0.5)
    block = Block(config)
    for parameter in block.parameters():
        torch.nn.init.normal_(parameter, std=0.1, generator=torch.Generator().manual_seed(0))
    h = torch.randn(2, config.total_seq_len, config.hidden_size)
    block.eval()
    clean = block(h, None, None)
    block.train()
    dropped = block(h, None, torch.Generator().manual_seed(1))
    kept = dropped != 0
    # After the norm, a dropped unit is exactly 0 and a kept one is scaled by 1 / (1 - p).
    assert 0.3 < kept.float().mean() < 0.7
    torch.testing.assert_close(dropped[kept], 2 * clean[kept])
