"""A composable loss split: which axes of the loss terms become separate objectives."""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

import attrs
import torch
from torch import Tensor

from ._grouping import random_buckets, step_seed
from ._loss_terms import LossTerms, check_loss_terms
from ._objective_set import ObjectiveBlock, ObjectiveSet


class HaltMode(enum.Enum):
    """Where the halting loss goes."""

    IN = "in"
    """Added to the other objectives, as the reference did. With one objective per sample
    (per-instance splits without pixels or stacked refinements), each sample's objective
    gets its own halting loss. With objectives summed over the samples, each sample's
    halting loss is spread equally over all of its atoms, so every objective gets an equal
    part of the batch's total. With several objectives per sample (e.g. per sample and
    pixel), every objective of the step gets an equal part of the batch's total halting
    loss: a shared term (`ObjectiveSet.shares`). Objectives holding only halting loss
    (unlabelled positions) are kept."""
    OUT = "out"
    """Objectives of its own, after the others (one per sample or one in total, see
    `Split.halt_instances`)."""
    ABSENT = "absent"
    """Ignored."""


class Refinements(enum.Enum):
    """How the losses of internal refinement steps (`LossTerms.internal`) enter."""

    FINAL = "final"
    """Only the final output's loss `lm`; internal losses are ignored."""
    SUM = "sum"
    """`lm + w * sum(internal)` in the same objectives."""
    STACK = "stack"
    """`lm` and each `w * internal[h]` as separate objectives (H + 1 of them)."""
    STACK_ONLY = "stack_only"
    """Each `w * internal[h]` as a separate objective (H of them); `lm` is left out."""


def _positive_groups(
    instance: Split, attribute: attrs.Attribute[int | None], value: int | None
) -> None:
    if value is not None and value < 1:
        raise ValueError(f"groups must be None or >= 1, got {value}")


def _finite(instance: Split, attribute: attrs.Attribute[float], value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be finite, got {value}")


@attrs.frozen(kw_only=True)
class Split:
    """Maps the loss terms of one training step to a vector of objectives.

    Each axis of the loss terms is either kept apart (one objective per index) or summed:
    supervision steps (`supervisions`), internal refinement steps (`refinements`, weighted
    by `intermediate_weight`), samples (`instances`) and positions (`pixels`). The halting
    loss goes in, out or nowhere (`halt`). Optionally the objectives are then summed into
    `groups` random buckets of near-equal size, drawn afresh at every training step from
    `(seed, step)`. Objectives that are identically zero (masked slots, ignored positions
    without a halting loss to share) are dropped. Whatever the split, the objectives sum to
    the gradient-descent loss `sum_t [sum(lm_t) + w * sum(internal_t) + sum(halt_t)]`
    restricted to the terms the split uses.
    """

    supervisions: bool = False
    mean_over_steps: bool = False
    """Divide each supervision step's losses by the number of steps (the mean over steps,
    as the write-up's `stack_supervisions*` objectives), instead of their sum."""
    refinements: Refinements = Refinements.FINAL
    intermediate_weight: float = attrs.field(default=1.0, validator=_finite)
    instances: bool = False
    pixels: bool = False
    halt: HaltMode = HaltMode.IN
    halt_instances: bool = True
    """With `HaltMode.OUT`: one halting objective per sample (True) or one in total."""
    groups: int | None = attrs.field(default=None, validator=_positive_groups)
    seed: int = 0

    @property
    def single_objective(self) -> bool:
        """True when the split always yields at most one objective (plain gradient descent
        whatever the aggregator)."""
        if self.groups == 1:
            return True
        return not (
            self.supervisions
            or self.instances
            or self.pixels
            or self.halt is HaltMode.OUT
            or self.refinements in (Refinements.STACK, Refinements.STACK_ONLY)
        )

    def objectives(self, steps: Sequence[LossTerms], /, *, step: int | None = None) -> ObjectiveSet:
        """The objectives of one training step, for `JacobianDescent.backward`: `steps`
        holds one `LossTerms` per supervision step, `step` is the training step (needed
        with `groups`). `.values` is the objective vector; the rest is the per-sample
        structure the fast engines need."""
        if len(steps) == 0:
            raise ValueError("a split needs the loss terms of at least one supervision step")
        for terms in steps:
            check_loss_terms(terms)
        if self.groups is not None and step is None:
            raise ValueError(
                "this split groups its objectives at random afresh at every training step: "
                "pass step=<training step index>"
            )
        cells_and_halts = [self._cells(terms) for terms in steps]
        if self.mean_over_steps:
            share = 1.0 / len(steps)
            cells_and_halts = [
                (cells * share, None if halt is None else halt * share)
                for cells, halt in cells_and_halts
            ]
        if not self.supervisions:
            cells_and_halts = [_sum_steps(cells_and_halts)]
        raw = [self._block(cells, halt) for cells, halt in cells_and_halts]
        return self._finalise(raw, step)

    def _cells(self, terms: LossTerms) -> tuple[Tensor, Tensor | None]:
        """`[B, R, X]` weighted losses (R refinement objectives, X = P or 1) and the masked
        halting loss `[B]` (None when unused)."""
        lm = terms.lm
        if lm.ndim != 2:
            raise ValueError(f"LossTerms.lm must be [B, P], got shape {tuple(lm.shape)}")
        batch = lm.shape[0]
        parts = self._refinement_terms(terms)
        for part, _ in parts:
            if part.shape != lm.shape:
                raise ValueError(
                    f"internal losses must have the shape of lm {tuple(lm.shape)}, "
                    f"got {tuple(part.shape)}"
                )
        cells = torch.stack([part if weight == 1.0 else part * weight for part, weight in parts], 1)
        if not self.pixels:
            cells = cells.sum(2, keepdim=True)
        halt = terms.halt if self.halt is not HaltMode.ABSENT else None
        if halt is not None and halt.shape != (batch,):
            raise ValueError(f"LossTerms.halt must be [B] = [{batch}], got {tuple(halt.shape)}")
        mask = terms.mask
        if mask is not None:
            if mask.shape != (batch,):
                raise ValueError(f"LossTerms.mask must be [B] = [{batch}], got {tuple(mask.shape)}")
            keep = mask.to(torch.bool)
            cells = torch.where(keep[:, None, None], cells, torch.zeros_like(cells))
            if halt is not None:
                halt = torch.where(keep, halt, torch.zeros_like(halt))
        return cells, halt

    def _refinement_terms(self, terms: LossTerms) -> list[tuple[Tensor, float]]:
        if self.refinements is Refinements.FINAL:
            return [(terms.lm, 1.0)]
        internal = list(terms.internal or ())
        if not internal:
            raise ValueError(
                f"refinements={self.refinements.value} needs LossTerms.internal "
                "(the losses of the intermediate outputs)"
            )
        weight = self.intermediate_weight
        if self.refinements is Refinements.SUM:
            return [(terms.lm + weight * torch.stack(internal).sum(0), 1.0)]
        stacked = [(loss, weight) for loss in internal]
        if self.refinements is Refinements.STACK:
            return [(terms.lm, 1.0), *stacked]
        return stacked

    def _block(self, cells: Tensor, halt: Tensor | None) -> _Raw:
        """The atoms of one supervision step, with the halting loss in or beside them."""
        batch, refinements, positions = cells.shape
        per_sample = refinements * positions
        device = cells.device
        if self.instances:
            ids = torch.arange(batch * per_sample, device=device).view(batch, per_sample)
            count = batch * per_sample
        else:
            ids = torch.arange(per_sample, device=device).expand(batch, per_sample)
            count = per_sample
        atoms = cells.reshape(batch, per_sample)
        if halt is None:
            return _Raw(atoms, ids, count, _live_ids(atoms, ids, count))
        halt = halt.to(atoms.dtype)
        if self.halt is HaltMode.IN and self.instances and per_sample > 1:
            # Every objective holds an equal part of the batch's total halting loss, as the
            # reference did: a shared term. Every objective of a real sample counts, even
            # one holding no loss of its own.
            real = (atoms.detach() != 0).any(1) | (halt.detach() != 0)
            return _Raw(atoms, ids, count, real.repeat_interleave(per_sample), shared=halt)
        if self.halt is HaltMode.IN:
            atoms = atoms + halt[:, None] / per_sample
            return _Raw(atoms, ids, count, _live_ids(atoms, ids, count))
        if self.halt_instances:
            halt_ids = count + torch.arange(batch, device=device)
            count += batch
        else:
            halt_ids = torch.full((batch,), count, device=device)
            count += 1
        atoms = torch.cat([atoms, halt[:, None]], 1)
        ids = torch.cat([ids, halt_ids[:, None]], 1)
        return _Raw(atoms, ids, count, _live_ids(atoms, ids, count))

    def _finalise(self, raw: list[_Raw], step: int | None) -> ObjectiveSet:
        """Drop identically-zero objectives, group, renumber and sum the atoms."""
        live = torch.cat([r.live for r in raw])
        total = live.numel()
        live_count = int(live.sum())
        new_id = torch.cumsum(live, 0) - 1
        if self.groups is not None and live_count > 0:
            assert step is not None
            generator = torch.Generator().manual_seed(step_seed(self.seed, step))
            bucket = random_buckets(live_count, self.groups, generator).to(live.device)
            new_id = bucket[new_id.clamp_min(0)]
            count = min(self.groups, live_count)
        else:
            count = live_count
        sharing = sum(r.shared is not None for r in raw)
        dtype = raw[0].atoms.dtype
        shares = live.new_zeros((count, sharing), dtype=dtype) if sharing else None
        blocks = []
        values = raw[0].atoms.new_zeros(count + sharing)
        offset = column = 0
        for r in raw:
            ids = new_id[offset : offset + r.count]
            index = torch.where(r.atoms.detach() != 0, ids[r.ids], -1)
            atoms = r.atoms
            if r.shared is not None:
                assert shares is not None
                alive = r.live.nonzero().squeeze(1)
                # Each objective's share is 1 / (objectives of its step); a bucket holds
                # the shares of its members.
                part = shares.new_full((alive.numel(),), 1 / max(alive.numel(), 1))
                shares[:, column].index_add_(0, ids[alive], part)
                shared_id = torch.where(r.shared.detach() != 0, count + column, -1)
                atoms = torch.cat([atoms, r.shared[:, None]], 1)
                index = torch.cat([index, shared_id[:, None]], 1)
                column += 1
            blocks.append(ObjectiveBlock(atoms, index))
            used = index >= 0
            values = values.index_add(0, index[used], atoms[used])
            offset += r.count
        if shares is not None:
            values = values[:count] + shares @ values[count:]
        return ObjectiveSet(
            values=values,
            blocks=tuple(blocks),
            dropped=total - live_count,
            shares=shares,
            split=self,
        )


@attrs.frozen
class _Raw:
    """The atoms of one supervision step before dropping and grouping: `ids` number its
    `count` objectives, `live` marks those kept, `shared` holds each sample's part of a
    term shared by all of them (see `ObjectiveSet.shares`)."""

    atoms: Tensor
    ids: Tensor
    count: int
    live: Tensor
    shared: Tensor | None = None


def _live_ids(atoms: Tensor, ids: Tensor, count: int) -> Tensor:
    """The objectives holding a non-zero atom."""
    live = torch.zeros(count, dtype=torch.bool, device=atoms.device)
    live[ids[atoms.detach() != 0]] = True
    return live


def _sum_steps(cells_and_halts: list[tuple[Tensor, Tensor | None]]) -> tuple[Tensor, Tensor | None]:
    if len(cells_and_halts) == 1:
        return cells_and_halts[0]
    shapes = {tuple(cells.shape) for cells, _ in cells_and_halts}
    if len(shapes) > 1:
        raise ValueError(f"summed supervision steps need equal shapes, got {sorted(shapes)}")
    cells = torch.stack([c for c, _ in cells_and_halts]).sum(0)
    halts = [h for _, h in cells_and_halts if h is not None]
    if halts and len(halts) != len(cells_and_halts):
        raise ValueError("either every supervision step has a halting loss or none has")
    return cells, torch.stack(halts).sum(0) if halts else None
