"""Adaptive computation time: which slots halt after a supervision step."""

from __future__ import annotations

import torch
from torch import Tensor

from ._config import TRMConfig


def adaptive_halting(config: TRMConfig, training: bool) -> bool:
    """Whether the Q head decides halting (else every sample runs ``halt_max_steps``).

    Evaluation always runs every step, so that a batch halts together.
    """
    return training and config.act_mode == "act" and config.halt_max_steps > 1


def next_halted(
    config: TRMConfig,
    steps: Tensor,
    q_halt: Tensor,
    q_continue: Tensor,
    *,
    training: bool,
    generator: torch.Generator | None,
) -> Tensor:
    """``[B]`` bool: the slots whose sample is done after a step (``steps`` counts it).

    A sample halts at ``halt_max_steps``; under adaptive halting also when ``q_halt > 0``
    (``q_halt > q_continue`` with ``q_continue`` on), except that with probability
    ``halt_exploration_prob`` a minimum step drawn uniformly in ``[2, halt_max_steps]``
    (drawn afresh at every step, as in TRM) holds it back. Draw order from ``generator``:
    ``rand(B)`` for exploring, then ``randint(B)`` for the minimum steps.
    """
    halted = steps >= config.halt_max_steps
    if not adaptive_halting(config, training):
        return halted
    halted = halted | (q_halt > (q_continue if config.q_continue else 0.0))
    if config.halt_exploration_prob > 0:
        assert generator is not None, "TRM.forward requires a generator for exploration"
        explore = (
            torch.rand(steps.shape, generator=generator, device=steps.device)
            < config.halt_exploration_prob
        )
        min_steps = torch.randint(
            2,
            config.halt_max_steps + 1,
            steps.shape,
            generator=generator,
            device=steps.device,
            dtype=steps.dtype,
        )
        halted = halted & (steps >= torch.where(explore, min_steps, 0))
    return halted


def q_continue_target(is_last_step: Tensor, next_q_halt: Tensor, next_q_continue: Tensor) -> Tensor:
    """The bootstrapped Q-learning target of ``q_continue`` from the next step's Q values."""
    best_next = torch.where(is_last_step, next_q_halt, torch.maximum(next_q_halt, next_q_continue))
    return torch.sigmoid(best_next)
