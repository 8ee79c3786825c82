"""Where gradients flow: the last H cycle only, or each cycle alone for the internal terms."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import attrs
import torch
from torch import Tensor

from trm_model import TRM, Batch, Carry, TRMConfig

ConfigFactory = Callable[..., TRMConfig]
ModelFactory = Callable[..., TRM]
BatchFactory = Callable[..., Batch]


def _grads(model: TRM, loss: Tensor) -> dict[str, Tensor]:
    """Gradients of ``loss`` for every parameter (zeros where it does not depend on one)."""
    names, params = zip(*model.named_parameters(), strict=True)
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return {
        n: torch.zeros_like(p) if g is None else g
        for n, p, g in zip(names, params, grads, strict=True)
    }


def _assert_same_grads(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-7, msg=name)


def _one_cycle_twin(model: TRM) -> TRM:
    """The same weights with H_cycles = 1: each call runs exactly one cycle, with gradient."""
    twin = TRM(
        attrs.evolve(model.config, H_cycles=1, intermediate_outputs=False),
        generator=torch.Generator().manual_seed(99),
    )
    twin.load_state_dict(model.state_dict())
    return twin.train(model.training)


def _fresh(model: TRM, batch: Batch) -> Carry:
    return model.refill(model.initial_carry(batch), batch)


def test_no_gradient_reaches_the_carry_through_earlier_cycles(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    for h_cycles, reaches in ((2, False), (1, True)):
        config = small_config(H_cycles=h_cycles, halt_exploration_prob=0.0)
        model = make_model(config).train()
        batch = make_batch(config, 2)
        carry = _fresh(model, batch)
        z_H, z_L = carry.z_H.clone().requires_grad_(), carry.z_L.clone().requires_grad_()
        out = model(dataclasses.replace(carry, z_H=z_H, z_L=z_L))
        torch.autograd.backward(out.losses.total())
        assert (z_H.grad is not None) == reaches
        assert (z_L.grad is not None) == reaches


def test_gradients_equal_those_of_the_last_cycle_alone(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(H_cycles=3, halt_exploration_prob=0.0)
    model = make_model(config).train()
    twin = _one_cycle_twin(model)
    batch = make_batch(config, 3)

    out = model(_fresh(model, batch))
    carry = _fresh(twin, batch)
    with torch.no_grad():
        for _ in range(2):
            carry = twin(carry).carry
    twin_out = twin(carry)

    torch.testing.assert_close(out.logits, twin_out.logits)
    loss = out.losses.total()
    twin_loss = twin_out.losses.total()
    _assert_same_grads(_grads(model, loss), _grads(twin, twin_loss))


def test_absolute_internal_losses_give_one_term_per_cycle_each_through_its_own_cycle(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(
        H_cycles=3,
        intermediate_outputs=True,
        internal_losses="absolute",
        halt_exploration_prob=0.0,
    )
    model = make_model(config).train()
    batch = make_batch(config, 3, ignore_tail=5)
    out = model(_fresh(model, batch))
    internal = out.losses.internal
    assert internal is not None and len(internal) == 3
    assert internal[-1] is out.losses.lm
    assert all(term.shape == (3, config.seq_len) for term in internal)

    twin = _one_cycle_twin(model)
    carry = _fresh(twin, batch)
    for term in internal:
        twin_out = twin(carry)
        torch.testing.assert_close(term, twin_out.losses.lm)
        _assert_same_grads(_grads(model, term.sum()), _grads(twin, twin_out.losses.lm.sum()))
        carry = twin_out.carry


def test_intermediate_outputs_leave_the_final_terms_unchanged(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(H_cycles=2, halt_exploration_prob=0.0)
    plain = make_model(config).train()
    stacked = make_model(attrs.evolve(config, intermediate_outputs=True)).train()
    stacked.load_state_dict(plain.state_dict())
    batch = make_batch(config, 2)
    a, b = plain(_fresh(plain, batch)), stacked(_fresh(stacked, batch))
    assert a.losses.internal is None
    torch.testing.assert_close(a.losses.lm, b.losses.lm)
    torch.testing.assert_close(a.losses.halt, b.losses.halt)
    loss_a = a.losses.total()
    loss_b = b.losses.total()
    _assert_same_grads(_grads(plain, loss_a), _grads(stacked, loss_b))


def test_puzzle_rows_receive_the_gradient_and_the_table_stays_untouched(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config()
    model = make_model(config).train()
    assert model.puzzle_emb is not None
    with torch.no_grad():
        model.puzzle_emb.normal_(generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = make_batch(config, 3)
    carry = _fresh(model, batch)
    rows = model.puzzle_emb[carry.batch.puzzle_identifiers].requires_grad_()
    out = model(carry, rows, generator=torch.Generator().manual_seed(0))
    torch.autograd.backward(out.losses.total())
    assert rows.grad is not None and rows.grad.shape == (3, config.hidden_size)
    assert (rows.grad.abs().sum(-1) > 0).all()
    # Reading the table itself gives the same forward, and no gradient to the table.
    same = model(carry, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(same.logits, out.logits)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
