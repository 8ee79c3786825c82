"""The objective vector of one training step, with the per-sample structure engines use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs
import torch
from torch import Tensor

if TYPE_CHECKING:
    from ._split import Split


def _check_block(instance: ObjectiveBlock, attribute: object, index: Tensor) -> None:
    atoms = instance.atoms
    if atoms.ndim != 2 or index.shape != atoms.shape:
        raise ValueError(
            f"a block needs atoms [B, K] and an index of the same shape, got {tuple(atoms.shape)} "
            f"and {tuple(index.shape)}"
        )
    if index.dtype != torch.long:
        raise ValueError(f"the index of a block must be int64, got {index.dtype}")


@attrs.frozen
class ObjectiveBlock:
    """Per-sample loss atoms of one computation graph and the base objective each one feeds.

    `atoms[b, k]` depends only on sample `b` (the model treats samples independently);
    base objective `j` is the sum of the atoms whose `index` is `j` (see `ObjectiveSet` for
    how base objectives make the objectives); `index` -1 marks atoms that feed none
    (structural zeros). Blocks come from independent graphs (e.g. one per supervision step
    with a detached carry), so an objective touching one block is differentiated without
    traversing the others.
    """

    atoms: Tensor
    index: Tensor = attrs.field(validator=_check_block)


@attrs.frozen
class ObjectiveSet:
    """The objectives of one training step, what `JacobianDescent.backward` takes. Made by
    `Split.objectives` (loss terms), `per_instance` (per-sample losses) or `from_vector`
    (objectives without per-sample structure).

    `values` is the objective vector (`[m]`, part of the autograd graph). `blocks`
    describe how the objectives decompose into per-sample atoms; it is empty for an
    unstructured vector, which restricts the JD step to the `autojac` and `sequential`
    engines. `dropped` counts the objectives removed because they were identically zero.
    `split` is the split that made them (None otherwise).

    The atoms sum into `base_count` base objectives. Without `shares`, base objective `i`
    is objective `i`. A term that every objective holds a part of (e.g. the batch's total
    halting loss spread over per-sample-and-pixel objectives) depends on every sample, so
    it cannot be split into atoms of single objectives; instead it is a base objective of
    its own: with `shares` (`[m, s]`), base objectives `m .. m + s - 1` are the shared
    terms `S_j` and objective `i = base_i + sum_j shares[i, j] * S_j`. In matrix form the
    objectives are `A @ base` with `A = [I | shares]`, so every engine computes the
    Jacobian rows (or the Gramian) of the base objectives and folds them: `J = A J_base`,
    `G = A G_base A^T`, and backpropagates the base weights `A^T w`.
    """

    values: Tensor
    blocks: tuple[ObjectiveBlock, ...] = ()
    dropped: int = 0
    shares: Tensor | None = None
    split: Split | None = None

    def __attrs_post_init__(self) -> None:
        if self.values.ndim != 1:
            raise ValueError(f"objective values must be 1-D, got shape {tuple(self.values.shape)}")
        sizes = {block.atoms.shape[0] for block in self.blocks}
        if len(sizes) > 1:
            raise ValueError(f"every block must hold the same samples, got batch sizes {sizes}")
        if self.shares is not None:
            if not self.blocks:
                raise ValueError("shared terms need blocks holding their atoms")
            if self.shares.ndim != 2 or self.shares.shape[0] != self.count:
                raise ValueError(
                    f"shares must be [m, s] with m = {self.count} objectives, got "
                    f"{tuple(self.shares.shape)}"
                )

    @property
    def count(self) -> int:
        return self.values.shape[0]

    @property
    def base_count(self) -> int:
        """The number of base objectives: the objectives, then the shared terms."""
        return self.count + (0 if self.shares is None else self.shares.shape[1])

    @property
    def structured(self) -> bool:
        return len(self.blocks) > 0

    @property
    def batch_size(self) -> int | None:
        return self.blocks[0].atoms.shape[0] if self.blocks else None

    def fold_rows(self, rows: Tensor) -> Tensor:
        """`A @ rows`: rows of the objectives `[m, ...]` (e.g. Jacobian rows) from those of
        the base objectives `[base_count, ...]`."""
        if self.shares is None:
            return rows
        m = self.count
        shared: Tensor = torch.tensordot(self.shares.to(rows.dtype), rows[m:], dims=1)
        return rows[:m] + shared

    def fold_gramian(self, gramian: Tensor) -> Tensor:
        """`A G A^T`: the objectives' Gramian from the base objectives' Gramian."""
        return self.fold_rows(self.fold_rows(gramian).T)

    def base_weights(self, weights: Tensor) -> Tensor:
        """`A^T w`: the weights of the base objectives for weights `w` of the objectives."""
        if self.shares is None:
            return weights
        return torch.cat([weights, self.shares.T.to(weights.dtype) @ weights])

    @classmethod
    def from_vector(cls, values: Tensor) -> ObjectiveSet:
        """Any 1-D tensor of objectives, without per-sample structure: each objective may
        depend on every sample (e.g. one loss per task head, each a batch mean). The JD
        step then gets the Jacobian from `autojac` (or `sequential`), not from the
        per-sample engines; prefer `per_instance` or a split when each sample's losses are
        at hand."""
        return cls(values=values.reshape(-1))

    @classmethod
    def per_instance(cls, losses: Tensor) -> ObjectiveSet:
        """Instance-wise objectives: `losses[b]` (shape `[B]`) or `losses[b, j]` (shape
        `[B, k]`: k objectives per sample, e.g. one per task) each form one objective."""
        atoms = losses.reshape(losses.shape[0], -1)
        index = torch.arange(atoms.numel(), device=atoms.device).view(atoms.shape)
        return cls(values=atoms.reshape(-1), blocks=(ObjectiveBlock(atoms, index),))

    def scaled(self, factor: float) -> ObjectiveSet:
        """The same objectives multiplied by `factor` (e.g. 1 / global batch size)."""
        if factor == 1.0:
            return self
        blocks = tuple(ObjectiveBlock(b.atoms * factor, b.index) for b in self.blocks)
        return attrs.evolve(self, values=self.values * factor, blocks=blocks)


def fold_jacobians(
    objectives: ObjectiveSet, jacobians: Sequence[Tensor | None]
) -> list[Tensor | None]:
    """`A J_base` for each input's Jacobian of the base objectives (None: no gradient)."""
    return [None if j is None else objectives.fold_rows(j) for j in jacobians]
