"""The write-up's options: dropout, differential loss, carry perturbation."""

from __future__ import annotations

from collections.abc import Callable

import torch

from trm_model import TRM, Batch, Carry, StepOutput, TRMConfig, stablemax_cross_entropy

ConfigFactory = Callable[..., TRMConfig]
ModelFactory = Callable[..., TRM]
BatchFactory = Callable[..., Batch]


def _twins(make_model: ModelFactory, base: TRMConfig, varied: TRMConfig) -> tuple[TRM, TRM]:
    a, b = make_model(base), make_model(varied)
    b.load_state_dict(a.state_dict())
    return a, b


def _fresh(model: TRM, batch: Batch) -> Carry:
    return model.refill(model.initial_carry(batch), batch)


def _step(model: TRM, carry: Carry, seed: int = 0) -> StepOutput:
    return model(carry, generator=torch.Generator().manual_seed(seed))


def test_dropout_acts_in_training_only(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    plain, dropped = _twins(
        make_model, small_config(halt_exploration_prob=0.0), small_config(dropout=0.2)
    )
    batch = make_batch(plain.config, 2)
    plain.train(), dropped.train()
    assert not torch.allclose(
        _step(plain, _fresh(plain, batch)).logits, _step(dropped, _fresh(dropped, batch)).logits
    )
    plain.eval(), dropped.eval()
    torch.testing.assert_close(
        _step(plain, _fresh(plain, batch)).logits, _step(dropped, _fresh(dropped, batch)).logits
    )


def test_dropout_backward_matches_its_forward_masks(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    """The masks come from the generator alone: replaying them reproduces the gradients."""
    config = small_config(dropout=0.3, halt_exploration_prob=0.0)
    model = make_model(config).train()
    carry = _fresh(model, make_batch(config, 2))
    grads = []
    for _ in range(2):
        model.zero_grad()
        torch.autograd.backward(_step(model, carry).losses.lm.sum())
        assert model.lm_head.weight.grad is not None
        grads.append(model.lm_head.weight.grad.clone())
    assert torch.equal(grads[0], grads[1])


def test_differential_loss_scores_the_change_of_logits(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    plain, diff = _twins(
        make_model,
        small_config(halt_exploration_prob=0.0),
        small_config(halt_exploration_prob=0.0, differential_loss=True),
    )
    plain.train(), diff.train()
    batch = make_batch(plain.config, 3, ignore_tail=6)
    first_plain = _step(plain, _fresh(plain, batch))
    first = _step(diff, _fresh(diff, batch))
    # A fresh sample's previous logits are zero: the first step is the plain loss.
    torch.testing.assert_close(first.losses.lm, first_plain.losses.lm)
    second = _step(diff, first.carry)
    expected = stablemax_cross_entropy(second.logits - first.logits, batch.labels) / 10
    torch.testing.assert_close(second.losses.lm, expected)
    # Predictions and exactness still come from the logits themselves.
    assert torch.equal(second.preds, second.logits.argmax(-1))
    assert second.carry.prev_logits is not None
    assert torch.equal(second.carry.prev_logits, second.logits.detach())


def test_carry_perturbation_adds_generator_noise_in_training_only(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    rate = 0.05
    plain, noisy = _twins(
        make_model,
        small_config(halt_exploration_prob=0.0),
        small_config(halt_exploration_prob=0.0, carry_perturbation=rate),
    )
    batch = make_batch(plain.config, 2)
    plain.train(), noisy.train()
    clean, perturbed = _step(plain, _fresh(plain, batch)), _step(noisy, _fresh(noisy, batch))
    torch.testing.assert_close(perturbed.logits, clean.logits)
    # The only draws of this step: noise for z_H, then for z_L.
    generator = torch.Generator().manual_seed(0)
    noise_H = rate * torch.randn(clean.carry.z_H.shape, generator=generator)
    noise_L = rate * torch.randn(clean.carry.z_L.shape, generator=generator)
    torch.testing.assert_close(perturbed.carry.z_H, clean.carry.z_H + noise_H)
    torch.testing.assert_close(perturbed.carry.z_L, clean.carry.z_L + noise_L)
    plain.eval(), noisy.eval()
    with torch.no_grad():
        clean, perturbed = _step(plain, _fresh(plain, batch)), _step(noisy, _fresh(noisy, batch))
    torch.testing.assert_close(perturbed.carry.z_H, clean.carry.z_H)
