"""The two seams between a model and the splits: `LossTerms` and `Objective`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class LossTerms(Protocol):
    """The per-element losses of one supervision step of a model.

    Any record with these four attributes satisfies the protocol (an attrs class, a
    dataclass, a NamedTuple...). Shapes: `B` samples, `P` positions (pixels, tokens).

    - `lm`: `[B, P]` per-position losses; positions without a label hold exactly 0.
    - `halt`: `[B]` per-sample halting loss, or None when the model has none.
    - `internal`: one `[B, P]` loss per internal refinement step (e.g. per H cycle), or
      None.
    - `mask`: `[B]` bool, the slots holding a real sample; the losses of other slots are
      ignored. None means every slot is real.
    """

    @property
    def lm(self) -> Tensor: ...

    @property
    def halt(self) -> Tensor | None: ...

    @property
    def internal(self) -> Sequence[Tensor] | None: ...

    @property
    def mask(self) -> Tensor | None: ...


class Objective(Protocol):
    """Maps the `LossTerms` of one training step (one per supervision step) to a 1-D
    tensor of objectives whose Jacobian the JD step aggregates.

    `step` is the index of the training step; objectives that draw random numbers
    (random grouping) derive them from it, so runs are reproducible and resumable.
    """

    def __call__(self, steps: Sequence[LossTerms], /, *, step: int | None = None) -> Tensor: ...
