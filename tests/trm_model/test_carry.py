from __future__ import annotations

from collections.abc import Callable

import torch

from trm_model import TRM, Batch, Carry, TRMConfig

ConfigFactory = Callable[..., TRMConfig]
ModelFactory = Callable[..., TRM]
BatchFactory = Callable[..., Batch]


def test_initial_carry_has_every_slot_empty(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(differential_loss=True)
    carry = make_model(config).initial_carry(make_batch(config, 3))
    assert carry.halted.tolist() == [True] * 3
    assert carry.steps.tolist() == [0] * 3 and carry.steps.dtype == torch.int32
    assert carry.z_H.shape == (3, config.total_seq_len, config.hidden_size)
    assert carry.prev_logits is not None
    assert carry.prev_logits.shape == (3, config.seq_len, config.vocab_size)


def test_refill_replaces_exactly_the_halted_slots(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(differential_loss=True)
    model = make_model(config)
    old, new = make_batch(config, 4, seed=1), make_batch(config, 4, seed=2)
    generator = torch.Generator().manual_seed(0)
    state_shape = (4, config.total_seq_len, config.hidden_size)
    carry = Carry(
        z_H=torch.randn(state_shape, generator=generator),
        z_L=torch.randn(state_shape, generator=generator),
        steps=torch.tensor([3, 2, 1, 5], dtype=torch.int32),
        halted=torch.tensor([True, False, True, False]),
        batch=old,
        prev_logits=torch.randn(4, config.seq_len, config.vocab_size, generator=generator),
    )
    refilled = model.refill(carry, new)
    assert refilled.halted.tolist() == [False] * 4
    assert refilled.steps.tolist() == [0, 2, 0, 5]
    for slot, replaced in enumerate([True, False, True, False]):
        source = new if replaced else old
        assert torch.equal(refilled.batch.inputs[slot], source.inputs[slot])
        assert torch.equal(refilled.batch.labels[slot], source.labels[slot])
        assert refilled.batch.puzzle_identifiers[slot] == source.puzzle_identifiers[slot]
        assert refilled.prev_logits is not None
        if replaced:
            assert (refilled.z_H[slot] == model.H_init).all()
            assert (refilled.z_L[slot] == model.L_init).all()
            assert (refilled.prev_logits[slot] == 0).all()
        else:
            assert torch.equal(refilled.z_H[slot], carry.z_H[slot])
            assert torch.equal(refilled.z_L[slot], carry.z_L[slot])
            assert carry.prev_logits is not None
            assert torch.equal(refilled.prev_logits[slot], carry.prev_logits[slot])


def test_training_stream_refills_halted_slots_only(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    """Slots halt at different steps (exploration); each takes the next batch's sample."""
    config = small_config(halt_max_steps=4, halt_exploration_prob=1.0)
    model = make_model(config).train()
    assert model.q_head is not None and model.q_head.bias is not None
    with torch.no_grad():
        model.q_head.bias.fill_(5.0)  # halt as soon as the exploration floor allows
    generator = torch.Generator().manual_seed(3)
    batches = [make_batch(config, 5, seed=s) for s in range(6)]
    carry = model.initial_carry(batches[0])
    source = [-1] * 5  # which batch each slot's sample came from
    steps = [0] * 5
    for index, batch in enumerate(batches):
        halted = carry.halted.tolist()
        source = [index if h else s for h, s in zip(halted, source, strict=True)]
        steps = [1 if h else n + 1 for h, n in zip(halted, steps, strict=True)]
        carry = model.refill(carry, batch)
        for slot in range(5):
            assert torch.equal(carry.batch.inputs[slot], batches[source[slot]].inputs[slot])
        with torch.no_grad():
            carry = model(carry, generator=generator).carry
        assert carry.steps.tolist() == steps
    assert len(set(source)) > 1  # slots were refilled at different times


def test_carry_holds_no_graph(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(differential_loss=True)
    model = make_model(config).train()
    batch = make_batch(config, 2)
    out = model(model.refill(model.initial_carry(batch), batch), generator=torch.Generator())
    assert out.logits.requires_grad
    carry = out.carry
    assert carry.prev_logits is not None
    assert not any(t.requires_grad for t in (carry.z_H, carry.z_L, carry.prev_logits))


def test_refill_keeps_the_forward_dtype(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(forward_dtype="bfloat16")
    model = make_model(config)
    batch = make_batch(config, 2)
    carry = model.refill(model.initial_carry(batch), batch)
    assert carry.z_H.dtype == carry.z_L.dtype == torch.bfloat16
