from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import zarr
import zarr.storage

from arc_data import IGNORE_LABEL, Split, TrainSampler, iter_test_batches, open_store


def test_train_batches_follow_the_group_rule(arc2_eval_store: Path) -> None:
    split = open_store(arc2_eval_store).train
    sampler = TrainSampler(split, 64, seed=0)
    plan = sampler.plan_epoch(0)
    assert plan and all(len(batch) == 64 for batch in plan)
    puzzle_of = split.puzzle_of
    seen_groups: list[int] = []
    for batch in plan:
        puzzles = puzzle_of(batch)
        # Each batch is a run of whole-puzzle blocks (the last one possibly cut), one
        # version per group, no example twice.
        assert len(np.unique(batch)) == len(batch)
        blocks = np.split(puzzles, np.flatnonzero(np.diff(puzzles)) + 1)
        for block in blocks:
            k = block[0]
            size = split.puzzle_offsets[k + 1] - split.puzzle_offsets[k]
            assert len(block) <= size
        groups = np.searchsorted(split.group_offsets, [b[0] for b in blocks], side="right") - 1
        assert len(set(groups.tolist())) == len(groups)
        seen_groups += groups.tolist()
    # Each group appears at most once per epoch; only the dropped tail is missing.
    assert len(set(seen_groups)) == len(seen_groups)
    total = sum(len(b) for b in plan)
    assert split.num_examples // 64 >= len(plan) and total == 64 * len(plan)


def test_full_puzzles_are_kept_whole_except_at_the_batch_end(arc2_eval_store: Path) -> None:
    split = open_store(arc2_eval_store).train
    for batch in TrainSampler(split, 32, seed=3).plan_epoch(1):
        puzzles = split.puzzle_of(batch)
        blocks = np.split(puzzles, np.flatnonzero(np.diff(puzzles)) + 1)
        for block in blocks[:-1]:
            k = block[0]
            assert len(block) == split.puzzle_offsets[k + 1] - split.puzzle_offsets[k]


def test_rank_slices_concatenate_to_the_global_batch(arc2_eval_store: Path) -> None:
    store = open_store(arc2_eval_store)
    single = TrainSampler(store.train, 48, seed=5)
    ranks = [TrainSampler(store.train, 48, seed=5, rank=r, world_size=3) for r in range(3)]
    for _ in range(4):
        whole = next(single)
        parts = [next(r) for r in ranks]
        assert all(len(p) == 16 for p in parts)
        np.testing.assert_array_equal(np.concatenate([p.inputs for p in parts]), whole.inputs)
        np.testing.assert_array_equal(np.concatenate([p.labels for p in parts]), whole.labels)
        np.testing.assert_array_equal(
            np.concatenate([p.puzzle_identifiers for p in parts]), whole.puzzle_identifiers
        )


def test_batch_arrays(arc2_eval_store: Path) -> None:
    store = open_store(arc2_eval_store)
    batch = next(TrainSampler(store.train, 16, seed=0))
    assert batch.inputs.shape == (16, 900) and batch.inputs.dtype == np.int32
    assert batch.labels.dtype == np.int32
    assert set(np.unique(batch.labels).tolist()) <= {IGNORE_LABEL, 1, *range(2, 12)}
    inputs, labels = store.train.read(batch.example_indices)
    np.testing.assert_array_equal(batch.inputs, inputs)
    np.testing.assert_array_equal(
        batch.labels, np.where(labels == 0, IGNORE_LABEL, labels.astype(np.int32))
    )
    np.testing.assert_array_equal(
        batch.puzzle_identifiers, store.train.identifiers_of(batch.example_indices)
    )


def test_epochs_roll_over_and_resume_exactly(arc2_eval_store: Path) -> None:
    split = open_store(arc2_eval_store).train
    sampler = TrainSampler(split, 100, seed=9)
    per_epoch = sampler.batches_in_epoch()
    straight = [next(sampler).example_indices for _ in range(per_epoch + 3)]
    assert sampler.epoch == 1
    resumed = TrainSampler(split, 100, seed=9)
    first = [next(resumed).example_indices for _ in range(per_epoch - 1)]
    state = resumed.state_dict()
    fresh = TrainSampler(split, 100, seed=9)
    fresh.load_state_dict(state)
    rest = [next(fresh).example_indices for _ in range(4)]
    for a, b in zip(straight, first + rest, strict=True):
        np.testing.assert_array_equal(a, b)
    # Epochs differ, and another seed gives other batches.
    assert not np.array_equal(straight[0], straight[per_epoch])
    assert not np.array_equal(straight[0], next(TrainSampler(split, 100, seed=10)).example_indices)


def test_resume_refuses_a_different_sampler(arc2_eval_store: Path) -> None:
    split = open_store(arc2_eval_store).train
    state = TrainSampler(split, 100, seed=9).state_dict()
    with pytest.raises(ValueError, match="seed 9"):
        TrainSampler(split, 100, seed=1).load_state_dict(state)


def test_weights_steer_version_choice(arc2_eval_store: Path) -> None:
    store = open_store(arc2_eval_store)
    split = store.train
    weights = np.zeros(store.metadata.num_puzzle_identifiers)
    originals = split.puzzle_identifiers[split.group_offsets[:-1]]  # version 0 of each task
    weights[originals] = 1.0
    sampler = TrainSampler(split, 50, seed=0, weights=weights)
    for batch in sampler.plan_epoch(0, weights):
        assert set(split.identifiers_of(batch).tolist()) <= set(originals.tolist())
    # Only one task weighted: every batch is made of that task alone.
    weights[:] = 0
    weights[split.puzzle_identifiers[split.group_offsets[3] : split.group_offsets[4]]] = 1.0
    for batch in sampler.plan_epoch(1, weights):
        groups = np.searchsorted(split.group_offsets, split.puzzle_of(batch), side="right") - 1
        assert set(groups.tolist()) == {3}


def _drawn_puzzles(split: Split, batch: npt.NDArray[np.int64]) -> list[int]:
    """One entry per version drawn: a batch is a run of blocks, one per drawn puzzle."""
    puzzles = split.puzzle_of(batch)
    return [int(block[0]) for block in np.split(puzzles, np.flatnonzero(np.diff(puzzles)) + 1)]


def test_shuffled_groups_keep_every_group_and_weight_only_the_version(
    arc2_eval_store: Path,
) -> None:
    store = open_store(arc2_eval_store)
    split = store.train
    firsts = split.group_offsets[:-1]
    # Version 0 weighs 3, version 1 weighs 1, the other versions 0; group 5 weighs 0 all
    # through, which would keep it out of a weighted group draw.
    weights = np.zeros(store.metadata.num_puzzle_identifiers)
    weights[split.puzzle_identifiers[firsts]] = 3.0
    weights[split.puzzle_identifiers[firsts + 1]] = 1.0
    weights[split.puzzle_identifiers[split.group_offsets[5] : split.group_offsets[6]]] = 0.0
    sampler = TrainSampler(split, 50, seed=0, weights=weights, weight_groups=False)
    versions: list[int] = []
    group_five = 0
    for epoch in range(40):
        drawn = [
            p for batch in sampler.plan_epoch(epoch, weights) for p in _drawn_puzzles(split, batch)
        ]
        groups = np.searchsorted(split.group_offsets, drawn, side="right") - 1
        # A shuffle: no group twice, and only the groups of the dropped tail are missing:
        # fewer than 50 examples, and every puzzle here has at least 2, so at most 24.
        assert len(set(groups.tolist())) == len(groups)
        assert len(groups) >= split.num_groups - 24
        for group, puzzle in zip(groups.tolist(), drawn, strict=True):
            if group == 5:
                group_five += 1
            else:
                versions.append(puzzle - int(firsts[group]))
    # Group 5 (all weights 0) is drawn like any other: once per epoch unless in the tail
    # (40 times out of 40 with this seed), its version uniformly.
    assert group_five >= 30
    # Weight 0 versions never; versions 0 and 1 in the ratio 3 : 1, a share of 0.75 for
    # version 0 (0.742 over the 4684 draws of this seed; the standard error is 0.006).
    assert set(versions) == {0, 1}
    assert abs(versions.count(0) / len(versions) - 0.75) < 0.02


def test_weighted_groups_leave_out_groups_of_weight_zero(arc2_eval_store: Path) -> None:
    store = open_store(arc2_eval_store)
    split = store.train
    weights = np.ones(store.metadata.num_puzzle_identifiers)
    weights[split.puzzle_identifiers[split.group_offsets[5] : split.group_offsets[6]]] = 0.0
    sampler = TrainSampler(split, 50, seed=0, weights=weights)
    for epoch in range(5):
        for batch in sampler.plan_epoch(epoch, weights):
            groups = np.searchsorted(split.group_offsets, split.puzzle_of(batch), side="right") - 1
            assert 5 not in groups.tolist()


@pytest.mark.parametrize("weight_groups", [True, False])
def test_weighted_sampling_resumes_exactly(arc2_eval_store: Path, weight_groups: bool) -> None:
    store = open_store(arc2_eval_store)
    split = store.train
    count = store.metadata.num_puzzle_identifiers
    first = np.linspace(0.1, 1.0, count)
    second = first[::-1].copy()

    def run(sampler: TrainSampler, steps: int, start: int) -> list[npt.NDArray[np.int64]]:
        out = []
        for step in range(start, start + steps):
            if step == 3:  # new weights mid-epoch: they apply from the next epoch
                sampler.set_weights(second)
            out.append(next(sampler).example_indices)
        return out

    def make() -> TrainSampler:
        return TrainSampler(split, 40, seed=4, weights=first, weight_groups=weight_groups)

    per_epoch = make().batches_in_epoch()
    total = per_epoch + 5
    straight = run(make(), total, 0)
    interrupted = make()
    head = run(interrupted, 5, 0)
    resumed = make()
    resumed.load_state_dict(interrupted.state_dict())
    tail = run(resumed, total - 5, 5)
    for a, b in zip(straight, head + tail, strict=True):
        np.testing.assert_array_equal(a, b)
    # Epoch 0 kept the weights it began with; epoch 1 follows the new ones.
    np.testing.assert_array_equal(straight[0], make().plan_epoch(0, first)[0])
    np.testing.assert_array_equal(straight[per_epoch], make().plan_epoch(1, second)[0])
    with pytest.raises(ValueError, match=f"weight_groups={weight_groups}"):
        TrainSampler(split, 40, seed=4, weight_groups=not weight_groups).load_state_dict(
            interrupted.state_dict()
        )


def test_bad_sampler_arguments(arc2_eval_store: Path) -> None:
    split = open_store(arc2_eval_store).train
    with pytest.raises(ValueError, match="not divisible by 3"):
        TrainSampler(split, 10, seed=0, world_size=3)
    with pytest.raises(ValueError, match="finite and non-negative"):
        TrainSampler(split, 10, seed=0, weights=np.full(10**6, -1.0))
    with pytest.raises(ValueError, match="fewer than one global batch"):
        next(TrainSampler(split, 10**7, seed=0))


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_test_batches_are_sequential_and_padded(arc2_eval_store: Path, world_size: int) -> None:
    split = open_store(arc2_eval_store).test
    global_batch = 96
    per_rank = [
        list(iter_test_batches(split, global_batch, rank=r, world_size=world_size))
        for r in range(world_size)
    ]
    expected_batches = -(-split.num_examples // global_batch)
    assert all(len(batches) == expected_batches for batches in per_rank)
    seen = []
    for step in range(expected_batches):
        for rank in range(world_size):
            batch = per_rank[rank][step]
            assert len(batch) == global_batch // world_size
            real = batch.example_indices >= 0
            pad = ~real
            assert (batch.puzzle_identifiers[pad] == 0).all()
            assert (batch.labels[pad] == IGNORE_LABEL).all() and (batch.inputs[pad] == 0).all()
            assert (batch.puzzle_identifiers[real] > 0).all()
            # Padding only at the end of a rank's slice.
            assert not (pad[:-1] & real[1:]).any()
            seen += batch.example_indices[real].tolist()
    assert seen == list(range(split.num_examples))


def _hand_split(versions: int, size: int, groups: int = 4) -> Split:
    """`groups` groups of `versions` versions of `size` examples each: puzzle p (identifier
    p + 1) holds examples p * size .. (p + 1) * size - 1, group g puzzles g * versions on."""
    root = zarr.group(store=zarr.storage.MemoryStore())
    puzzles = groups * versions
    root.create_array("inputs", data=np.zeros((puzzles * size, 1), np.uint8))
    root.create_array("labels", data=np.zeros((puzzles * size, 1), np.uint8))
    root.create_array("puzzle_offsets", data=np.arange(0, puzzles * size + 1, size))
    root.create_array("puzzle_identifiers", data=np.arange(1, puzzles + 1, dtype=np.int32))
    root.create_array("group_offsets", data=np.arange(0, puzzles + 1, versions))
    return Split("train", root, in_memory=True)


def test_no_examples_per_draw_keeps_todays_batches() -> None:
    # 4 groups of 2 versions of 3 examples, batches of 4; recorded from the sampler before
    # `examples_per_draw` existed. Each batch is a whole version (3 examples) then the
    # start of the next group's version, cut: e.g. [13, 14, 12] is puzzle 4 (group 2).
    split = _hand_split(versions=2, size=3)
    weights = np.array([0, 1, 2, 3, 4, 0, 1, 1, 2.0])
    for sampler in (
        TrainSampler(split, 4, seed=0),
        TrainSampler(split, 4, seed=0, examples_per_draw=None),
    ):
        assert [b.tolist() for b in sampler.plan_epoch(0)] == [[13, 14, 12, 4], [9, 10, 11, 22]]
        assert [b.tolist() for b in sampler.plan_epoch(1, weights)] == [
            [20, 19, 18, 6],
            [23, 22, 21, 18],
        ]
    shuffled = TrainSampler(split, 4, seed=0, weight_groups=False)
    assert [b.tolist() for b in shuffled.plan_epoch(1, weights)] == [
        [21, 22, 23, 0],
        [17, 16, 15, 10],
    ]


@pytest.mark.parametrize("seed", range(5))
def test_each_draw_adds_at_most_k_examples(seed: int) -> None:
    # 4 groups of one version of 6 examples, batches of 4, K = 2: each group is drawn 3
    # times, 12 runs of 2 examples, 24 examples, so 6 batches of 2 runs each, and every
    # example comes exactly once per epoch.
    split = _hand_split(versions=1, size=6)
    sampler = TrainSampler(split, 4, seed=seed, examples_per_draw=2)
    assert sampler.batches_in_epoch() == 6
    for epoch in range(3):
        plan = sampler.plan_epoch(epoch)
        assert len(plan) == 6
        for batch in plan:
            groups = batch // 6
            assert groups[0] == groups[1] and groups[2] == groups[3]
        assert sorted(np.concatenate(plan).tolist()) == list(range(24))


@pytest.mark.parametrize("k", [4, 5, 6, 10])
def test_draws_that_do_not_fit_run_on_into_the_next_batch(k: int) -> None:
    # Runs of K = 4 (then 2), 5 (then 1) or the whole 6 do not split batches of 4
    # evenly: nothing is cut, the epoch still holds all 24 examples in 6 batches.
    split = _hand_split(versions=1, size=6)
    plan = TrainSampler(split, 4, seed=1, examples_per_draw=k).plan_epoch(0)
    assert len(plan) == 6 and all(len(batch) == 4 for batch in plan)
    assert sorted(np.concatenate(plan).tolist()) == list(range(24))


def test_draws_cover_a_groups_positions_across_versions() -> None:
    # 4 groups of 2 versions of 3 examples, K = 2: each group is drawn twice (runs of 2
    # then 1) from versions picked afresh, 12 examples in 3 batches of 4; a group's 3
    # positions come once each, every run from a single version.
    split = _hand_split(versions=2, size=3)
    sampler = TrainSampler(split, 4, seed=0, examples_per_draw=2)
    for epoch in range(5):
        stream = np.concatenate(sampler.plan_epoch(epoch))
        assert len(stream) == 12
        for group in range(4):
            mine = stream[stream // 6 == group]
            assert sorted((mine % 3).tolist()) == [0, 1, 2]
        # Version weights still pick the version: only version 0 (identifiers 1, 3, 5, 7)
        # weighs, so the epoch is exactly the version-0 examples.
        weights = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0.0])
        shuffled = TrainSampler(split, 4, seed=0, weight_groups=False, examples_per_draw=2)
        picked = np.concatenate(shuffled.plan_epoch(epoch, weights))
        assert sorted(picked.tolist()) == [0, 1, 2, 6, 7, 8, 12, 13, 14, 18, 19, 20]


def test_weighted_groups_with_k_go_through_a_groups_positions() -> None:
    # Only group 3 weighs: the epoch's 4 x 3 draws are all of group 3, runs of 2 going
    # through one random order of its examples 18..23 after another: 24 examples, 6
    # batches, each 6 in a row a permutation of 18..23.
    split = _hand_split(versions=1, size=6)
    weights = np.array([0, 0, 0, 0, 1.0])
    stream = np.concatenate(
        TrainSampler(split, 4, seed=2, examples_per_draw=2).plan_epoch(0, weights)
    )
    assert len(stream) == 24
    for start in range(0, 24, 6):
        assert sorted(stream[start : start + 6].tolist()) == list(range(18, 24))


def test_rank_slices_with_k_concatenate_to_the_global_batch() -> None:
    split = _hand_split(versions=1, size=6)
    single = TrainSampler(split, 4, seed=5, examples_per_draw=2)
    ranks = [
        TrainSampler(split, 4, seed=5, rank=r, world_size=2, examples_per_draw=2) for r in range(2)
    ]
    for _ in range(8):  # past the epoch's 6 batches
        whole = next(single).example_indices
        parts = [next(r).example_indices for r in ranks]
        np.testing.assert_array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize("weighted", [False, True])
def test_k_sampling_resumes_exactly_mid_epoch(arc2_eval_store: Path, weighted: bool) -> None:
    store = open_store(arc2_eval_store)
    split = store.train
    weights = np.linspace(0.1, 1.0, store.metadata.num_puzzle_identifiers) if weighted else None

    def make(k: int = 3) -> TrainSampler:
        return TrainSampler(split, 40, seed=4, weights=weights, examples_per_draw=k)

    per_epoch = make().batches_in_epoch()
    if not weighted:  # every group's examples once: a version's size summed over groups
        sizes = np.diff(split.puzzle_offsets)[split.group_offsets[:-1]]
        assert per_epoch == int(sizes.sum()) // 40
    sampler = make()
    straight = [next(sampler).example_indices for _ in range(per_epoch + 3)]
    assert sampler.epoch == 1
    interrupted = make()
    head = [next(interrupted).example_indices for _ in range(per_epoch // 2)]
    resumed = make()
    resumed.load_state_dict(interrupted.state_dict())
    tail = [next(resumed).example_indices for _ in range(len(straight) - len(head))]
    for a, b in zip(straight, head + tail, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="examples_per_draw=3"):
        make(2).load_state_dict(interrupted.state_dict())


@pytest.mark.parametrize("k", [0, -2])
def test_examples_per_draw_must_be_positive(k: int) -> None:
    with pytest.raises(ValueError, match=f"examples per draw must be at least 1.*got {k}"):
        TrainSampler(_hand_split(versions=1, size=6), 4, seed=0, examples_per_draw=k)
