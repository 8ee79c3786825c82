"""The seam between a model and the splits: `LossTerms`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from torch import Tensor

LOSS_TERM_ATTRIBUTES = ("lm", "halt", "internal", "mask")


@runtime_checkable
class LossTerms(Protocol):
    """The per-element losses of one supervision step of a model.

    Any record with these four attributes satisfies the protocol (an attrs class, a
    dataclass, a NamedTuple...): all four must exist, and `halt`, `internal` and `mask`
    may hold None, so that a typo in an attribute name is an error rather than a loss
    silently left out. Shapes: `B` samples, `P` positions (pixels, tokens).

    - `lm`: `[B, P]` per-position losses; positions without a label hold exactly 0.
    - `halt`: `[B]` per-sample halting loss, or None when the model has none.
    - `internal`: one `[B, P]` loss per internal refinement step (e.g. per H cycle), or
      None (only the `refinements` other than `FINAL` read it).
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


def check_loss_terms(terms: object) -> None:
    """Refuse a record that lacks one of the `LossTerms` attributes, naming it."""
    missing = [name for name in LOSS_TERM_ATTRIBUTES if not hasattr(terms, name)]
    if missing:
        raise TypeError(
            f"{type(terms).__name__} is not a LossTerms record: it lacks "
            f"{', '.join(missing)} (every one of {', '.join(LOSS_TERM_ATTRIBUTES)} must exist; "
            "halt, internal and mask may be None)"
        )
