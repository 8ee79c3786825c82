"""From one step's outputs to its per-sample loss terms and metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._config import TRMConfig
from ._losses import IGNORE_LABEL_ID, softmax_cross_entropy, stablemax_cross_entropy
from ._records import StepLosses, StepMetrics

_CROSS_ENTROPIES = {"stablemax": stablemax_cross_entropy, "softmax": softmax_cross_entropy}


def loss_head(
    config: TRMConfig,
    *,
    labels: Tensor,
    logits: Tensor,
    cycle_logits: Sequence[Tensor] | None,
    prev_logits: Tensor | None,
    q_halt: Tensor,
    q_continue: Tensor,
    q_continue_target: Tensor | None,
    halted: Tensor,
    steps: Tensor,
) -> tuple[StepLosses, StepMetrics, Tensor]:
    """The step's loss terms, metrics and predicted tokens.

    ``cycle_logits`` (one per H cycle, the last being ``logits``) give the ``internal``
    terms (see ``TRMConfig.internal_losses``). With ``prev_logits`` (differential loss
    across supervision steps) the LM loss scores ``logits - prev_logits``; predictions,
    exactness and the halting target always come from ``logits`` itself. Without a Q head
    (act_mode "none") there is no halting loss: ``halt`` is None.
    """
    cross_entropy = _CROSS_ENTROPIES[config.loss]
    valid = labels != IGNORE_LABEL_ID
    counts = valid.sum(-1)
    divisor = counts.clamp_min(1)

    def per_token(step_logits: Tensor) -> Tensor:
        scored = step_logits if prev_logits is None else step_logits - prev_logits
        return cross_entropy(scored, labels) / divisor.unsqueeze(-1)

    lm = per_token(logits)
    internal = None
    if cycle_logits is not None:
        if config.internal_losses == "absolute":
            internal = (*(per_token(c) for c in cycle_logits[:-1]), lm)
        else:
            internal = _differential_internal(cross_entropy, cycle_logits, labels)

    with torch.no_grad():
        preds = logits.argmax(-1)
        correct = valid & (preds == labels)
        exact = correct.sum(-1) == counts
        token_accuracy = correct.sum(-1).float() / divisor

    halt = None
    if config.has_q_head:
        halt = F.binary_cross_entropy_with_logits(q_halt, exact.to(q_halt.dtype), reduction="none")
        if q_continue_target is not None:
            halt = halt + F.binary_cross_entropy_with_logits(
                q_continue, q_continue_target, reduction="none"
            )
        halt = config.halt_loss_weight * halt
    mask = counts > 0
    losses = StepLosses(lm=lm, halt=halt, internal=internal, mask=mask)
    metrics = StepMetrics(
        counted=halted & mask,
        token_accuracy=token_accuracy,
        exact=exact,
        q_halt_correct=(q_halt.detach() >= 0) == exact,
        steps=steps,
    )
    return losses, metrics, preds


def _differential_internal(
    cross_entropy: Callable[[Tensor, Tensor], Tensor],
    cycle_logits: Sequence[Tensor],
    labels: Tensor,
) -> tuple[Tensor, ...]:
    """Cycle h scores what it adds to the previous cycle's (detached) logits, logits_0 = 0:
    the write-up's refinement losses. Summed over labelled tokens, not normalised."""
    terms = []
    previous: Tensor | None = None
    for logits in cycle_logits:
        scored = logits if previous is None else logits - previous.detach()
        terms.append(cross_entropy(scored, labels))
        previous = logits
    return tuple(terms)
