"""The no-recursion baseline (arch "transformer"): TRM's blocks applied once per step."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from trm_model import IGNORE_LABEL_ID, TRM, Batch, Carry, TRMConfig, stablemax_cross_entropy

ConfigFactory = Callable[..., TRMConfig]
ModelFactory = Callable[..., TRM]
BatchFactory = Callable[..., Batch]


def _fresh(model: TRM, batch: Batch) -> Carry:
    return model.refill(model.initial_carry(batch), batch)


def _randomise_heads(model: TRM) -> None:
    """Non-zero puzzle rows and Q head, so that their paths are checked too."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        assert model.puzzle_emb is not None and model.q_head is not None
        model.puzzle_emb.copy_(torch.randn(model.puzzle_emb.shape, generator=generator))
        model.q_head.weight.copy_(0.1 * torch.randn(model.q_head.weight.shape, generator=generator))


def _by_hand(model: TRM, batch: Batch, z_H: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One step composed from the model's own submodules: embeddings, the blocks once over
    (state + embeddings), the heads. Returns (new z_H, logits, q_halt, q_continue)."""
    cfg = model.config
    assert model.puzzle_emb is not None and model.q_head is not None
    tokens = model.embed_tokens(batch.inputs)
    puzzle = torch.zeros(len(batch.inputs), cfg.puzzle_emb_len, cfg.hidden_size)
    puzzle[:, 0] = model.puzzle_emb[batch.puzzle_identifiers]
    x = torch.cat((puzzle, tokens), dim=1) * math.sqrt(cfg.hidden_size)
    assert model.rope_cos is not None and model.rope_sin is not None
    h = z_H + x
    for block in model.net.layers:
        h = block(h, (model.rope_cos, model.rope_sin), None)
    logits = model.lm_head(h[:, cfg.puzzle_emb_len :])
    q = model.q_head(h[:, 0]).float()
    return h, logits, q[:, 0], q[:, 1]


def test_the_config_validates_arch_and_has_one_cycle(small_config: ConfigFactory) -> None:
    assert small_config().arch == "trm" and small_config().cycles == small_config().H_cycles
    config = small_config(arch="transformer", H_cycles=3)
    assert config.cycles == 1
    with pytest.raises(ValueError, match="arch"):
        small_config(arch="rnn")


@pytest.mark.parametrize("act_mode", ["act", "none"])
def test_same_modules_and_parameter_count_as_trm(
    small_config: ConfigFactory, make_model: ModelFactory, act_mode: str
) -> None:
    trm = make_model(small_config(act_mode=act_mode))
    baseline = make_model(small_config(act_mode=act_mode, arch="transformer"))

    def shapes(model: TRM) -> dict[str, tuple[int, ...]]:
        return {name: tuple(p.shape) for name, p in model.named_parameters()}

    assert shapes(baseline) == shapes(trm)
    count = sum(p.numel() for p in baseline.parameters())
    assert count == sum(p.numel() for p in trm.parameters())
    assert len(baseline.net.layers) == trm.config.L_layers
    assert baseline.state_dict().keys() == trm.state_dict().keys()
    # Same seed, same draws: the very same weights, so the two differ by the forward only.
    for key, value in trm.state_dict().items():
        assert torch.equal(baseline.state_dict()[key], value), key


def test_forward_shapes(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(arch="transformer")
    model = make_model(config).eval()
    batch = make_batch(config, 3)
    carry = _fresh(model, batch)
    with torch.no_grad():
        out = model(carry)
    assert out.logits.shape == (3, config.seq_len, config.vocab_size)
    assert out.preds.shape == (3, config.seq_len)
    assert out.q_halt.shape == out.q_continue.shape == (3,)
    assert out.losses.lm.shape == (3, config.seq_len)
    assert out.losses.halt is not None and out.losses.halt.shape == (3,)
    assert out.losses.internal is None
    state = (3, config.total_seq_len, config.hidden_size)
    assert out.carry.z_H.shape == out.carry.z_L.shape == state
    # z_L is unused: it leaves the step as it came in (L_init for a fresh slot).
    assert torch.equal(out.carry.z_L, carry.z_L)
    assert torch.equal(out.carry.z_L[0, 0], model.L_init)


def test_forward_is_the_blocks_once_over_state_plus_input(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(arch="transformer")
    model = make_model(config).eval()
    _randomise_heads(model)
    batch = make_batch(config, 3)
    carry = _fresh(model, batch)
    z_H = model.H_init.expand(3, config.total_seq_len, config.hidden_size)
    with torch.no_grad():
        for _ in range(2):  # the second step starts from the first's state
            out = model(carry)
            z_H, logits, q_halt, q_continue = _by_hand(model, batch, z_H)
            torch.testing.assert_close(out.logits, logits)
            torch.testing.assert_close(out.q_halt, q_halt)
            torch.testing.assert_close(out.q_continue, q_continue)
            torch.testing.assert_close(out.carry.z_H, z_H)
            carry = out.carry


@pytest.mark.parametrize("training", [False, True])
def test_h_and_l_cycles_do_not_change_the_output(
    small_config: ConfigFactory,
    make_model: ModelFactory,
    make_batch: BatchFactory,
    training: bool,
) -> None:
    batch = make_batch(small_config(), 4)
    outputs: list[tuple[Tensor, Tensor, Tensor]] = []
    for h_cycles, l_cycles in ((1, 1), (2, 2), (3, 6)):
        config = small_config(arch="transformer", H_cycles=h_cycles, L_cycles=l_cycles)
        model = make_model(config).train(training)
        generator = torch.Generator().manual_seed(3)
        carry, step_logits = _fresh(model, batch), []
        for _ in range(3):
            out = model(carry, generator=generator)
            step_logits.append(out.logits.detach())
            carry = model.refill(out.carry, batch)
        outputs.append((torch.stack(step_logits), carry.z_H, carry.steps))
    for logits, z_H, steps in outputs[1:]:
        assert torch.equal(logits, outputs[0][0])
        assert torch.equal(z_H, outputs[0][1]) and torch.equal(steps, outputs[0][2])


def test_gradients_reach_every_parameter_and_the_puzzle_rows(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(arch="transformer", halt_exploration_prob=0.0)
    model = make_model(config).train()
    batch = make_batch(config, 3)
    carry = _fresh(model, batch)
    assert model.puzzle_emb is not None
    rows = model.puzzle_emb[carry.batch.puzzle_identifiers].requires_grad_()
    torch.autograd.backward(model(carry, rows).losses.total())
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert rows.grad is not None and rows.grad.abs().sum() > 0


@pytest.mark.parametrize("act_mode", ["act", "fixed", "none"])
def test_every_act_mode_runs(
    small_config: ConfigFactory,
    make_model: ModelFactory,
    make_batch: BatchFactory,
    act_mode: str,
) -> None:
    config = small_config(arch="transformer", act_mode=act_mode, halt_max_steps=3)
    model = make_model(config).train()
    batch = make_batch(config, 4, ignore_tail=3)
    generator = torch.Generator().manual_seed(0)
    carry = _fresh(model, batch)
    for step in range(1, 4):
        out = model(carry, generator=generator)
        torch.autograd.backward(out.losses.total())
        assert torch.isfinite(out.losses.lm).all()
        assert (out.losses.halt is None) == (act_mode == "none")
        if act_mode == "none":
            # One cycle per step: the refinement splits see one internal term.
            assert out.losses.internal is not None and len(out.losses.internal) == 1
        else:
            assert out.losses.internal is None
        if act_mode != "act":
            assert carry.steps.tolist() == [step - 1] * 4
            assert out.carry.halted.tolist() == [step == 3] * 4
        carry = out.carry
    assert carry.halted.all()


@pytest.mark.parametrize("internal_losses", ["differential", "absolute"])
def test_the_one_internal_term_scores_the_step_logits(
    small_config: ConfigFactory,
    make_model: ModelFactory,
    make_batch: BatchFactory,
    internal_losses: str,
) -> None:
    config = small_config(
        arch="transformer", intermediate_outputs=True, internal_losses=internal_losses
    )
    model = make_model(config).train()
    batch = make_batch(config, 3, ignore_tail=2)
    out = model(_fresh(model, batch), generator=torch.Generator().manual_seed(0))
    assert out.losses.internal is not None and len(out.losses.internal) == 1
    (term,) = out.losses.internal
    if internal_losses == "absolute":
        torch.testing.assert_close(term, out.losses.lm)
    else:  # logits_0 = 0: the cross-entropy of the step's logits, not normalised
        expected = stablemax_cross_entropy(out.logits, batch.labels)
        torch.testing.assert_close(term, expected)
        assert (term[:, -2:] == 0).all() and (batch.labels[:, -2:] == IGNORE_LABEL_ID).all()


def test_q_continue_and_carry_noise_touch_z_H_only(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(arch="transformer", q_continue=True, carry_perturbation=0.1)
    model = make_model(config).train()
    batch = make_batch(config, 3)
    carry = _fresh(model, batch)
    clean = model.eval()(carry).carry.z_H
    out = model.train()(carry, generator=torch.Generator().manual_seed(0))
    assert out.losses.halt is not None and torch.isfinite(out.losses.halt).all()
    assert torch.equal(out.carry.z_L, carry.z_L)
    noise = (out.carry.z_H - clean).std().item()
    assert 0.05 < noise < 0.2
    # The carried state is the network's input next step: gradient reaches it.
    z_H = carry.z_H.clone().requires_grad_()
    out = model(dataclasses.replace(carry, z_H=z_H), generator=torch.Generator())
    torch.autograd.backward(out.losses.total())
    assert z_H.grad is not None and z_H.grad.abs().sum() > 0
