"""The records passed in and out of one supervision step.

Frozen dataclasses rather than attrs classes: TorchDynamo traces their construction, so a
whole-model ``torch.compile`` sees one graph (it cannot trace frozen attrs ``__init__``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def _where_rows(take: Tensor, new: Tensor, old: Tensor) -> Tensor:
    return torch.where(take.view(-1, *(1,) * (new.ndim - 1)), new, old)


@dataclass(frozen=True)
class Batch:
    """Examples, one per batch row.

    ``inputs`` and ``labels`` are ``[B, seq_len]`` integer tokens (label -100: no loss),
    ``puzzle_identifiers`` is ``[B]`` (0: the blank puzzle of padding rows).
    """

    inputs: Tensor
    labels: Tensor
    puzzle_identifiers: Tensor

    def replace_rows(self, take: Tensor, other: Batch) -> Batch:
        """Rows of ``other`` where ``take`` (``[B]`` bool) holds, of this batch elsewhere."""
        return Batch(
            inputs=_where_rows(take, other.inputs, self.inputs),
            labels=_where_rows(take, other.labels, self.labels),
            puzzle_identifiers=_where_rows(take, other.puzzle_identifiers, self.puzzle_identifiers),
        )


@dataclass(frozen=True)
class Carry:
    """What persists between supervision steps, one slot per batch row. Holds no graph.

    ``z_H``/``z_L``: ``[B, puzzle_emb_len + seq_len, hidden]`` states in the forward dtype;
    ``steps``: ``[B]`` int32 steps taken by the slot's sample; ``halted``: ``[B]`` bool, the
    sample is done and :meth:`TRM.refill` will replace it; ``batch``: the slots' samples;
    ``prev_logits``: the previous step's logits (zero for a fresh sample), kept only for
    the differential loss.
    """

    z_H: Tensor
    z_L: Tensor
    steps: Tensor
    halted: Tensor
    batch: Batch
    prev_logits: Tensor | None


@dataclass(frozen=True)
class StepLosses:
    """Per-sample loss terms of one supervision step.

    Structurally a ``jd_splits.LossTerms``. ``lm``: ``[B, seq_len]`` per-token losses,
    each divided by its sequence's number of labelled tokens (unlabelled tokens are 0);
    ``halt``: ``[B]`` halting losses, already weighted by ``halt_loss_weight`` (None
    without a Q head, act_mode "none"); ``internal``: one ``[B, seq_len]`` term per
    cycle (``TRMConfig.cycles``: H_cycles, 1 for the transformer baseline) when
    ``TRMConfig.cycle_outputs`` (see ``TRMConfig.internal_losses``), else None;
    ``mask``: ``[B]`` bool, the slot has at least one label. ``lm.sum() + halt.sum()`` is
    the reference TRM loss of the step, before its division by the global batch size.
    """

    lm: Tensor
    halt: Tensor | None
    internal: tuple[Tensor, ...] | None
    mask: Tensor

    def total(self) -> Tensor:
        """``lm.sum() + halt.sum()`` (the halting part only where there is one)."""
        lm = self.lm.sum()
        return lm if self.halt is None else lm + self.halt.sum()


@dataclass(frozen=True)
class StepMetrics:
    """Per-slot evaluation of one step (no graph); :meth:`totals` reduces it.

    ``counted``: the slot halted this step and has labels (the slots the reference's
    metrics count); ``token_accuracy``: share of labelled tokens predicted right;
    ``exact``: every labelled token right; ``q_halt_correct``: ``(q_halt >= 0) == exact``;
    ``steps``: supervision steps taken, this one included.
    """

    counted: Tensor
    token_accuracy: Tensor
    exact: Tensor
    q_halt_correct: Tensor
    steps: Tensor

    def totals(self) -> dict[str, Tensor]:
        """Sums over the counted slots, as the reference logs them (divide by ``count``)."""
        counted = self.counted
        return {
            "count": counted.sum(),
            "accuracy": torch.where(counted, self.token_accuracy, 0.0).sum(),
            "exact_accuracy": (counted & self.exact).sum(),
            "q_halt_accuracy": (counted & self.q_halt_correct).sum(),
            "steps": torch.where(counted, self.steps, 0).sum(),
        }


@dataclass(frozen=True)
class StepOutput:
    """Result of one supervision step.

    ``logits``: ``[B, seq_len, vocab]`` (forward dtype, with graph); ``preds``: their
    argmax; ``q_halt``/``q_continue``: ``[B]`` float32 logits (with graph).
    """

    carry: Carry
    logits: Tensor
    preds: Tensor
    q_halt: Tensor
    q_continue: Tensor
    losses: StepLosses
    metrics: StepMetrics
