"""Backward passes in which each sample feeds at most one base objective ("colours"), and
the Gramian of the extra inputs from such passes."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch
from torch import Tensor

from ._objective_set import ObjectiveBlock, ObjectiveSet


@attrs.frozen
class Colour:
    """One backward pass: the cotangent of a block's atoms and, per sample, the base
    objective its gradient belongs to (-1: none). `single` is set when every sample feeds
    the same base objective, so per-sample gradients need not be separated.

    Otherwise `live` lists the samples that feed an objective (None: all of them) and
    `start` is set when their objectives are `start, start + 1, ...` in sample order (as
    in IWRM): the pass's per-sample rows are then a slice of the Jacobian, filled in place
    rather than gathered and scattered. Both are worked out once per pass, not per call."""

    block: ObjectiveBlock
    cotangent: Tensor
    owner: Tensor
    single: int | None
    live: Tensor | None = None
    start: int | None = None

    @property
    def live_owner(self) -> Tensor:
        """The objective of each live sample (the samples `live` lists, or all)."""
        return self.owner if self.live is None else self.owner[self.live]


def colours(objectives: ObjectiveSet) -> list[Colour]:
    """Backward passes covering every atom once, such that within a pass each sample feeds
    at most one base objective. Their number is the largest count of distinct base
    objectives one sample feeds in one block."""
    result = []
    m = objectives.base_count
    for block in objectives.blocks:
        valid = block.index >= 0
        samples, columns = valid.nonzero(as_tuple=True)
        if samples.numel() == 0:
            continue
        owners = block.index[samples, columns]
        pairs, inverse = torch.unique(samples * m + owners, return_inverse=True)
        pair_sample = pairs // m
        first = torch.searchsorted(pair_sample, pair_sample, side="left")
        rank = torch.arange(pairs.numel(), device=pairs.device) - first
        atom_colour = rank[inverse]
        for colour in range(int(rank.max()) + 1):
            in_colour = atom_colour == colour
            cotangent = torch.zeros_like(block.atoms)
            cotangent[samples[in_colour], columns[in_colour]] = 1
            owner = torch.full((block.atoms.shape[0],), -1, device=pairs.device)
            chosen = rank == colour
            owner[pair_sample[chosen]] = pairs[chosen] % m
            distinct = torch.unique(owner[owner >= 0])
            if distinct.numel() == 1:
                result.append(Colour(block, cotangent, owner, int(distinct[0])))
            else:
                result.append(Colour(block, cotangent, owner, None, *_layout(owner)))
    return result


def _layout(owner: Tensor) -> tuple[Tensor | None, int | None]:
    """`Colour.live` and `Colour.start` of a pass whose samples feed several objectives."""
    feeding = owner >= 0
    live = None if bool(feeding.all()) else feeding.nonzero().squeeze(1)
    owners = owner if live is None else owner[live]
    first = int(owners[0])
    steps = torch.arange(first, first + owners.numel(), device=owner.device)
    return live, first if bool((owners == steps).all()) else None


def passes_per_block(objectives: ObjectiveSet) -> list[int]:
    """How many colours `colours` makes of each block, without building their cotangents
    (memory planning): the largest number of distinct base objectives one sample feeds in
    the block (0 for a block that feeds none)."""
    m = objectives.base_count
    counts = []
    for block in objectives.blocks:
        samples, columns = (block.index >= 0).nonzero(as_tuple=True)
        if samples.numel() == 0:
            counts.append(0)
            continue
        pairs = torch.unique(samples * m + block.index[samples, columns])
        counts.append(int(torch.bincount(pairs // m).max()))
    return counts


def extras_gramian(
    plan: Sequence[Colour], extra_grads: Sequence[Sequence[Tensor | None]], count: int
) -> Tensor | None:
    """`J_e J_e^T` over the `count` base objectives, from each pass's gradients of the
    extra inputs (`extra_grads[pass][input]`), without building `J_e`.

    A batch-first extra input is assumed to be per-sample (row `b` feeds sample `b` only,
    as `ObjectiveBlock` already requires of the model), so row `b` of a pass's gradient
    belongs to the objective sample `b` feeds in that pass, and
    `G_e[i, j] = sum_b sum_{p, q} <g_p[b], g_q[b]>` over the passes `p` (`q`) where sample
    `b` feeds `i` (`j`). Another extra input counts as one row, which needs every pass to
    feed a single objective."""
    total: Tensor | None = None
    inputs = max((len(grads) for grads in extra_grads), default=0)
    for k in range(inputs):
        vectors, owners = [], []
        for colour, grads in zip(plan, extra_grads, strict=True):
            grad = grads[k]
            if grad is None:
                continue
            batch = colour.owner.shape[0]
            if grad.shape[:1] == (batch,):
                vectors.append(grad.reshape(batch, -1))
                owners.append(colour.owner)
            elif colour.single is not None:
                vectors.append(grad.reshape(1, -1))
                owners.append(colour.owner.new_full((1,), colour.single))
            else:
                raise ValueError(
                    f"an extra input of shape {tuple(grad.shape)} is not batch-first with the "
                    f"{batch} samples; its gradient cannot be attributed to objectives (use "
                    "jacobian_covers='parameters' or the autojac engine)"
                )
        if not vectors:
            continue
        stacked = torch.stack(vectors)
        if stacked.dtype in (torch.float16, torch.bfloat16):
            stacked = stacked.float()
        per_sample = torch.einsum("psd,qsd->spq", stacked, stacked)
        owner = torch.stack(owners).T
        rows, columns = owner[:, :, None], owner[:, None, :]
        valid = (rows >= 0) & (columns >= 0)
        flat = (rows * count + columns).expand_as(valid)[valid]
        part = per_sample.new_zeros(count * count).index_add_(0, flat, per_sample[valid])
        part = part.view(count, count)
        total = part if total is None else total + part
    return total
