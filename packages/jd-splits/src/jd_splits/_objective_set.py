"""The objective vector of one training step, with the per-sample structure engines use."""

from __future__ import annotations

import attrs
import torch
from torch import Tensor


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
    """Per-sample loss atoms of one computation graph and the objective each one feeds.

    `atoms[b, k]` depends only on sample `b` (the model treats samples independently);
    objective `i` is the sum of the atoms whose `index` is `i`; `index` -1 marks atoms that
    feed no objective (structural zeros). Blocks come from independent graphs (e.g. one per
    supervision step with a detached carry), so an objective touching one block is
    differentiated without traversing the others.
    """

    atoms: Tensor
    index: Tensor = attrs.field(validator=_check_block)


@attrs.frozen
class ObjectiveSet:
    """The objectives of one training step.

    `values` is the objective vector (`[m]`, part of the autograd graph). `blocks`
    describe how the objectives decompose into per-sample atoms; it is empty for an
    unstructured vector, which restricts the JD step to the `autojac` and `sequential`
    engines. `dropped` counts the objectives removed because they were identically zero.
    """

    values: Tensor
    blocks: tuple[ObjectiveBlock, ...] = ()
    dropped: int = 0

    def __attrs_post_init__(self) -> None:
        if self.values.ndim != 1:
            raise ValueError(f"objective values must be 1-D, got shape {tuple(self.values.shape)}")
        sizes = {block.atoms.shape[0] for block in self.blocks}
        if len(sizes) > 1:
            raise ValueError(f"every block must hold the same samples, got batch sizes {sizes}")

    @property
    def count(self) -> int:
        return self.values.shape[0]

    @property
    def structured(self) -> bool:
        return len(self.blocks) > 0

    @property
    def batch_size(self) -> int | None:
        return self.blocks[0].atoms.shape[0] if self.blocks else None

    @classmethod
    def from_vector(cls, values: Tensor) -> ObjectiveSet:
        """Any 1-D tensor of objectives, without per-sample structure."""
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
        return ObjectiveSet(values=self.values * factor, blocks=blocks, dropped=self.dropped)
