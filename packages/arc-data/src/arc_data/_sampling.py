"""Batches for training: group-shuffled epochs.

Per epoch: shuffle the groups (one group = one original task with all its versions); for
each group pick one version at random and add its examples in random order until the
global batch is full (a puzzle that does not fit is cut); drop the last incomplete batch.
In DDP each rank takes its contiguous slice of every global batch, so all ranks must
build the sampler with the same seed. Sampling weights (failure-weighted sampling) bias
the picks, and `examples_per_draw` caps what one pick adds: see `TrainSampler`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from arc_data._batches import Batch, make_batch
from arc_data._store import Split


class TrainSampler:
    """Endless iterator of training batches (this rank's slice of each global batch).

    Deterministic from `seed`: epoch `e` is planned from its own generator, so the
    position (`state_dict`: epoch and batch within it) is enough to resume exactly.

    `weights` (one non-negative float per puzzle identifier) switches on failure-weighted
    sampling: the version within a group is picked in proportion to its weight (uniformly
    if all its versions weigh 0). With `weight_groups` (the default) the weights choose
    the groups too: each epoch draws as many groups as there are, with replacement and in
    proportion to the mean weight of their versions. Without it every group comes once
    per epoch in shuffled order, as in the write-up's code. New weights (`set_weights`)
    apply from the next epoch on.

    `examples_per_draw` (K; None, the default, is TRM's rule above) makes each draw of a
    group add at most K examples of the version it picks instead of all of them, so that
    a batch spans several tasks even when one task has as many examples as a batch.
    An epoch still offers every group's examples once: a group whose versions hold n
    examples each is drawn ceil(n / K) times; its draws split one random order of its n
    example positions into runs of K (the last one shorter), each run read from a
    version picked afresh. The draws of all groups are shuffled together and their runs
    concatenated: a run that does not fit the batch goes on into the next one (nothing
    is cut), and the last incomplete batch is dropped. An epoch is thus floor(sum of n /
    global batch) batches whatever K is, so `batches_in_epoch()`, and a number of epochs
    counted with it, stays a pass over the data; one draw per group per epoch would
    instead shrink the epoch n / K-fold. With `weight_groups` an epoch makes as many
    draws, with replacement, a group's chance its weight times its ceil(n / K) draws, so
    its share of examples is the one whole versions give it; a group drawn again goes on
    through its random order of positions before starting another, and the epoch's
    length is about the same.
    """

    def __init__(
        self,
        split: Split,
        global_batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        weights: npt.NDArray[np.floating[Any]] | None = None,
        weight_groups: bool = True,
        examples_per_draw: int | None = None,
    ) -> None:
        if global_batch_size <= 0:
            raise ValueError(f"global batch size must be positive, got {global_batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        if global_batch_size % world_size:
            raise ValueError(
                f"global batch size {global_batch_size} is not divisible by {world_size} ranks"
            )
        if examples_per_draw is not None and examples_per_draw < 1:
            raise ValueError(
                f"examples per draw must be at least 1 (or None for whole versions), "
                f"got {examples_per_draw}"
            )
        if split.num_groups == 0:
            raise ValueError(f"the {split.name} split is empty")
        self.split = split
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // world_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.weight_groups = weight_groups
        self.examples_per_draw = examples_per_draw
        self._next_weights = None if weights is None else self._checked(weights)
        self._epoch = 0
        self._batch = 0
        self._plan: list[npt.NDArray[np.int64]] | None = None
        self._plan_weights: npt.NDArray[np.float64] | None = None

    @property
    def epoch(self) -> int:
        """Epoch of the next batch."""
        return self._epoch

    def set_weights(self, weights: npt.NDArray[np.floating[Any]] | None) -> None:
        self._next_weights = None if weights is None else self._checked(weights)

    def state_dict(self) -> dict[str, Any]:
        self._ensure_plan()
        return {
            "epoch": self._epoch,
            "batch": self._batch,
            "seed": self.seed,
            "global_batch_size": self.global_batch_size,
            "weight_groups": self.weight_groups,
            "examples_per_draw": self.examples_per_draw,
            "plan_weights": self._plan_weights,
            "next_weights": self._next_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["seed"] != self.seed or state["global_batch_size"] != self.global_batch_size:
            raise ValueError(
                f"sampler state is for seed {state['seed']} and global batch "
                f"{state['global_batch_size']}, this sampler has seed {self.seed} and "
                f"global batch {self.global_batch_size}"
            )
        # States saved before the option existed always weighted the groups.
        weight_groups = bool(state.get("weight_groups", True))
        if weight_groups != self.weight_groups:
            raise ValueError(
                f"sampler state has weight_groups={weight_groups}, this sampler has "
                f"weight_groups={self.weight_groups}"
            )
        # States saved before the option existed drew whole versions.
        examples_per_draw = state.get("examples_per_draw")
        if examples_per_draw != self.examples_per_draw:
            raise ValueError(
                f"sampler state has examples_per_draw={examples_per_draw}, this sampler has "
                f"examples_per_draw={self.examples_per_draw}"
            )
        self._epoch = int(state["epoch"])
        self._batch = int(state["batch"])
        self._plan_weights = state["plan_weights"]
        self._next_weights = state["next_weights"]
        self._plan = self.plan_epoch(self._epoch, self._plan_weights)

    def batches_in_epoch(self) -> int:
        return len(self._ensure_plan())

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        plan = self._ensure_plan()
        while self._batch >= len(plan):
            self._epoch += 1
            self._batch = 0
            self._plan = None
            plan = self._ensure_plan()
        examples = plan[self._batch]
        self._batch += 1
        local = examples[
            self.rank * self.local_batch_size : (self.rank + 1) * self.local_batch_size
        ]
        return make_batch(self.split, local)

    def _ensure_plan(self) -> list[npt.NDArray[np.int64]]:
        if self._plan is None:
            self._plan_weights = self._next_weights
            self._plan = self.plan_epoch(self._epoch, self._plan_weights)
            if not self._plan:
                raise ValueError(
                    f"the {self.split.name} split has {self.split.num_examples} examples, "
                    f"fewer than one global batch of {self.global_batch_size}"
                )
        return self._plan

    def plan_epoch(
        self, epoch: int, weights: npt.NDArray[np.float64] | None = None
    ) -> list[npt.NDArray[np.int64]]:
        """The global batches (example indices) of one epoch, before rank slicing."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch]))
        puzzle_weights = None if weights is None else weights[self.split.puzzle_identifiers]
        if self.examples_per_draw is None:
            return self._plan_whole_versions(rng, puzzle_weights)
        return self._plan_runs(rng, puzzle_weights, self.examples_per_draw)

    def _plan_whole_versions(
        self, rng: np.random.Generator, puzzle_weights: npt.NDArray[np.float64] | None
    ) -> list[npt.NDArray[np.int64]]:
        offsets = self.split.puzzle_offsets
        order = self._group_order(rng, puzzle_weights, np.ones(self.split.num_groups, np.int64))
        batches: list[npt.NDArray[np.int64]] = []
        current: list[npt.NDArray[np.int64]] = []
        filled = 0
        for group in order.tolist():
            puzzle = self._pick_version(rng, group, puzzle_weights)
            start, size = int(offsets[puzzle]), int(offsets[puzzle + 1] - offsets[puzzle])
            take = min(size, self.global_batch_size - filled)
            current.append(start + rng.choice(size, take, replace=False))
            filled += take
            if filled == self.global_batch_size:
                batches.append(np.concatenate(current).astype(np.int64))
                current, filled = [], 0
        return batches  # the incomplete last batch is dropped

    def _plan_runs(
        self,
        rng: np.random.Generator,
        puzzle_weights: npt.NDArray[np.float64] | None,
        examples_per_draw: int,
    ) -> list[npt.NDArray[np.int64]]:
        offsets = self.split.puzzle_offsets
        # The versions of a group are the same pairs in other frames (the builder writes
        # them so), so its first version's size is every version's.
        sizes = np.diff(offsets)[self.split.group_offsets[:-1]]
        order = self._group_order(rng, puzzle_weights, -(-sizes // examples_per_draw))
        # Per group, the positions its random order has not served yet.
        unserved: dict[int, npt.NDArray[np.int64]] = {}
        runs: list[npt.NDArray[np.int64]] = []
        for group in order.tolist():
            puzzle = self._pick_version(rng, group, puzzle_weights)
            positions = unserved.get(group)
            if positions is None or not len(positions):
                positions = rng.permutation(int(sizes[group]))
            runs.append(offsets[puzzle] + positions[:examples_per_draw])
            unserved[group] = positions[examples_per_draw:]
        stream = np.concatenate(runs).astype(np.int64)
        size = self.global_batch_size
        # The incomplete last batch is dropped.
        return [stream[i * size : (i + 1) * size] for i in range(len(stream) // size)]

    def _group_order(
        self,
        rng: np.random.Generator,
        puzzle_weights: npt.NDArray[np.float64] | None,
        draws: npt.NDArray[np.int64],
    ) -> npt.NDArray[np.int64]:
        """The groups drawn this epoch, in order: group g `draws[g]` times, shuffled, or
        as many draws in proportion to its weight times `draws[g]` when weighting groups."""
        groups = self.split.group_offsets
        if puzzle_weights is None or not self.weight_groups:
            return rng.permutation(np.repeat(np.arange(self.split.num_groups), draws))
        group_weights = np.add.reduceat(puzzle_weights, groups[:-1]) / np.diff(groups) * draws
        if not group_weights.sum() > 0:
            raise ValueError("sampling weights are zero for every group")
        return rng.choice(
            self.split.num_groups, int(draws.sum()), p=group_weights / group_weights.sum()
        )

    def _pick_version(
        self, rng: np.random.Generator, group: int, puzzle_weights: npt.NDArray[np.float64] | None
    ) -> int:
        """A puzzle of `group`: in proportion to its weight, uniformly if all weigh 0."""
        groups = self.split.group_offsets
        first, last = int(groups[group]), int(groups[group + 1])
        if puzzle_weights is not None:
            local = puzzle_weights[first:last]
            total = local.sum()
            if total > 0:
                return first + int(rng.choice(last - first, p=local / total))
        return int(rng.integers(first, last))

    def _checked(self, weights: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
        checked = np.asarray(weights, dtype=np.float64)
        expected = int(self.split.puzzle_identifiers.max()) + 1
        if checked.ndim != 1 or len(checked) < expected:
            raise ValueError(
                f"sampling weights need one entry per puzzle identifier (>= {expected}), "
                f"got shape {checked.shape}"
            )
        if not np.all(np.isfinite(checked)) or np.any(checked < 0):
            raise ValueError("sampling weights must be finite and non-negative")
        return checked
