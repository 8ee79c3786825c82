from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor

from trm_model import (
    IGNORE_LABEL_ID,
    TRM,
    Batch,
    StepOutput,
    TRMConfig,
    softmax_cross_entropy,
    stablemax_cross_entropy,
)

ConfigFactory = Callable[..., TRMConfig]
ModelFactory = Callable[..., TRM]
BatchFactory = Callable[..., Batch]


class LossTermsShape(Protocol):
    """The seam jd-splits consumes (its `LossTerms`), as read-only members."""

    @property
    def lm(self) -> Tensor: ...
    @property
    def halt(self) -> Tensor | None: ...
    @property
    def internal(self) -> Sequence[Tensor] | None: ...
    @property
    def mask(self) -> Tensor | None: ...


def _bce_with_logits(x: float, y: float) -> float:
    return max(x, 0.0) - x * y + math.log1p(math.exp(-abs(x)))


def _first_step(model: TRM, batch: Batch, train: bool = False) -> StepOutput:
    model.train(train)
    carry = model.refill(model.initial_carry(batch), batch)
    return model(carry, generator=torch.Generator().manual_seed(7))


def _ragged_labels(batch: Batch) -> Batch:
    """Row b keeps its first seq_len - 3b labels; the last row has none (a blank slot)."""
    labels = batch.labels.clone()
    size, length = labels.shape
    for row in range(size):
        labels[row, length - 3 * row :] = IGNORE_LABEL_ID
    labels[-1] = IGNORE_LABEL_ID
    return dataclasses.replace(batch, labels=labels)


def test_lm_is_per_token_loss_divided_per_sequence(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config()
    batch = _ragged_labels(make_batch(config, 4))
    out = _first_step(make_model(config), batch)
    counts = (batch.labels != IGNORE_LABEL_ID).sum(-1)
    assert counts.tolist() == [16, 13, 10, 0]
    per_token = stablemax_cross_entropy(out.logits, batch.labels)
    expected = per_token / counts.clamp_min(1).unsqueeze(-1)
    assert out.losses.lm.shape == (4, 16) and out.losses.lm.dtype == torch.float64
    torch.testing.assert_close(out.losses.lm, expected, rtol=0, atol=0)
    assert (out.losses.lm[batch.labels == IGNORE_LABEL_ID] == 0).all()
    assert out.losses.mask.tolist() == [True, True, True, False]


def test_lm_plus_halt_is_the_reference_total_loss(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config()
    batch = _ragged_labels(make_batch(config, 4, seed=3))
    out = _first_step(make_model(config), batch)
    logits = out.logits.double()
    reference = 0.0
    for b in range(4):
        labelled = batch.labels[b] != IGNORE_LABEL_ID
        ce = stablemax_cross_entropy(logits[b][labelled], batch.labels[b][labelled])
        reference += ce.sum().item() / max(1, int(labelled.sum()))
        exact = bool((out.logits[b].argmax(-1) == batch.labels[b])[labelled].all())
        reference += 0.5 * _bce_with_logits(out.q_halt[b].item(), float(exact))
    total = out.losses.total()
    assert math.isclose(total.item(), reference, rel_tol=1e-6)
    # The blank row (no labels) counts as exactly right, as in the reference.
    assert out.metrics.exact[-1]
    assert out.losses.halt is not None
    assert math.isclose(out.losses.halt[-1].item(), 0.5 * _bce_with_logits(-5.0, 1.0), rel_tol=1e-6)


def test_metrics_match_hand_counts(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(halt_max_steps=1)
    model = make_model(config)
    batch = make_batch(config, 4)
    preds = _first_step(model, batch).preds
    # Rows 0, 1: labels = predictions (exact); row 2: 4 of 16 tokens wrong; row 3: blank.
    labels = preds.clone()
    labels[2, :4] = (preds[2, :4] + 1) % config.vocab_size
    labels[3] = IGNORE_LABEL_ID
    out = _first_step(model, dataclasses.replace(batch, labels=labels))
    assert out.carry.halted.all()
    assert out.metrics.counted.tolist() == [True, True, True, False]
    torch.testing.assert_close(out.metrics.token_accuracy[:3], torch.tensor([1.0, 1.0, 0.75]))
    totals = out.metrics.totals()
    assert totals["count"].item() == 3
    assert math.isclose(totals["accuracy"].item(), 2.75)
    assert totals["exact_accuracy"].item() == 2
    # q_halt = -5 at initialisation predicts "not exact": right for row 2 only.
    assert totals["q_halt_accuracy"].item() == 1
    assert totals["steps"].item() == 3


def test_softmax_loss_option(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(loss="softmax")
    batch = make_batch(config, 3, ignore_tail=4)
    out = _first_step(make_model(config), batch)
    expected = softmax_cross_entropy(out.logits, batch.labels) / 12
    assert out.losses.lm.dtype == torch.float32
    torch.testing.assert_close(out.losses.lm, expected)


def test_halt_loss_weight_scales_halt_only(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    batch = make_batch(small_config(), 3)
    half = _first_step(make_model(small_config()), batch).losses
    full = _first_step(make_model(small_config(halt_loss_weight=1.0)), batch).losses
    assert full.halt is not None and half.halt is not None
    torch.testing.assert_close(full.halt, 2 * half.halt)
    torch.testing.assert_close(full.lm, half.lm)


def test_q_continue_adds_its_bootstrapped_bce(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(q_continue=True, halt_exploration_prob=0.0)
    batch = make_batch(config, 3)
    out = _first_step(make_model(config), batch, train=True)
    # At initialisation both Q logits are -5 everywhere, so the target is sigmoid(-5).
    target = 1 / (1 + math.exp(5.0))
    assert out.losses.halt is not None
    for b in range(3):
        expected = 0.5 * (
            _bce_with_logits(-5.0, float(out.metrics.exact[b])) + _bce_with_logits(-5.0, target)
        )
        assert math.isclose(out.losses.halt[b].item(), expected, rel_tol=1e-5)


def test_step_losses_have_the_loss_terms_shape(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config(intermediate_outputs=True)
    out = _first_step(make_model(config), make_batch(config, 3))
    terms: LossTermsShape = out.losses  # checked structurally by mypy
    assert terms.lm.shape == (3, config.seq_len)
    assert terms.halt is not None and terms.halt.shape == (3,)
    assert terms.mask is not None and terms.mask.dtype == torch.bool
    assert terms.internal is not None and len(terms.internal) == config.H_cycles
