from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs
import pytest
import torch
from torch import Tensor

from jd_splits import (
    SPLIT_NAMES,
    HaltMode,
    LossTerms,
    ObjectiveBlock,
    ObjectiveSet,
    Split,
    get_split,
)

if TYPE_CHECKING:
    from tests.jd_splits.conftest import Terms, TermsFactory

B, P, H, T, W = 4, 6, 3, 2, 0.7

EXPECTED_COUNTS = {
    "sum": 1,
    "lm_loss_vs_q_halt_loss": 2,
    "iwrm_q_halt_in": B,
    "iwrm_q_halt_out": 2 * B,
    "pixelwise_q_halt_in": P,
    "pixelwise_q_halt_out": P + B,
    "iwrm_pixelwise_q_halt_in": B * P,
    "iwrm_pixelwise_q_halt_out": B * P + B,
    "stack_internal_losses": H + 1,
    "stack_internal_losses_only": H,
    "stack_internal_and_sum": 1,
    "stack_supervisions": T,
    "stack_supervisions_and_sum": 1,
    "stack_supervisions_and_iwrm": T * B,
    "stack_supervisions_and_pixelwise": T * P,
    "stack_supervisions_and_iwrm_pixelwise": T * B * P,
}


def gd_loss(name: str, steps: Sequence[Terms]) -> Tensor:
    """The gradient-descent loss each split must add up to, written out by hand."""
    total = torch.zeros((), dtype=torch.float64)
    if name.startswith("stack_supervisions"):  # the mean over the unrolled steps
        return sum((gd_loss("sum", [terms]) for terms in steps), total) / len(steps)
    for terms in steps:
        assert terms.halt is not None
        internal = torch.stack(list(terms.internal or [torch.zeros_like(terms.lm)])).sum()
        if name == "stack_internal_losses_only":
            total = total + W * internal + terms.halt.sum()
        elif name.startswith("stack_internal"):
            total = total + terms.lm.sum() + W * internal + terms.halt.sum()
        else:
            total = total + terms.lm.sum() + terms.halt.sum()
    return total


def steps_for(name: str, make_terms: TermsFactory, **kwargs: object) -> list[Terms]:
    count = T if name.startswith("stack_supervisions") else 1
    return [make_terms(B, P, H, seed=seed, **kwargs) for seed in range(count)]


def test_names_cover_the_design_table() -> None:
    assert set(SPLIT_NAMES) == set(EXPECTED_COUNTS)


@pytest.mark.parametrize("name", SPLIT_NAMES)
def test_count_and_sum_identity(name: str, make_terms: TermsFactory) -> None:
    steps = steps_for(name, make_terms)
    objectives = get_split(name, intermediate_weight=W).objectives(steps)
    assert objectives.count == EXPECTED_COUNTS[name]
    assert objectives.dropped == 0
    expected = gd_loss(name, steps)
    torch.testing.assert_close(objectives.values.sum(), expected, rtol=1e-12, atol=0)
    # The gradients agree too: the split only regroups the terms.
    used_internal = name.startswith("stack_internal")
    used_lm = name != "stack_internal_losses_only"
    leaves = [
        t
        for s in steps
        for t in (s.lm if used_lm else None, s.halt, *(s.internal or [] if used_internal else []))
        if t is not None
    ]
    got = torch.autograd.grad(objectives.values.sum(), leaves)
    want = torch.autograd.grad(expected, leaves)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", SPLIT_NAMES)
def test_grouping_preserves_the_sum(name: str, make_terms: TermsFactory) -> None:
    steps = steps_for(name, make_terms)
    split = get_split(name, intermediate_weight=W, groups=5, seed=3)
    objectives = split.objectives(steps, step=11)
    assert objectives.count == min(5, EXPECTED_COUNTS[name])
    torch.testing.assert_close(objectives.values.sum(), gd_loss(name, steps), rtol=1e-12, atol=0)


def test_objective_values(make_terms: TermsFactory) -> None:
    terms = make_terms(B, P, H)
    lm, halt, internal = terms.lm, terms.halt, terms.internal
    assert halt is not None and internal is not None

    def values(name: str) -> Tensor:
        return get_split(name, intermediate_weight=W).objectives([terms]).values

    torch.testing.assert_close(values("iwrm_q_halt_in"), lm.sum(1) + halt)
    torch.testing.assert_close(values("iwrm_q_halt_out"), torch.cat([lm.sum(1), halt]))
    torch.testing.assert_close(values("pixelwise_q_halt_in"), lm.sum(0) + halt.sum() / P)
    torch.testing.assert_close(values("pixelwise_q_halt_out"), torch.cat([lm.sum(0), halt]))
    torch.testing.assert_close(
        values("lm_loss_vs_q_halt_loss"), torch.stack([lm.sum(), halt.sum()])
    )
    # The batch's total halting loss is shared by all B * P objectives.
    torch.testing.assert_close(
        values("iwrm_pixelwise_q_halt_in"), (lm + halt.sum() / (B * P)).flatten()
    )
    share = halt.sum() / (H + 1)
    stacked = torch.stack([lm.sum()] + [W * i.sum() for i in internal]) + share
    torch.testing.assert_close(values("stack_internal_losses"), stacked)
    only = torch.stack([W * i.sum() for i in internal]) + halt.sum() / H
    torch.testing.assert_close(values("stack_internal_losses_only"), only)


def test_stacked_supervisions_are_divided_by_the_number_of_steps(
    terms_class: type[Terms],
) -> None:
    # Two steps, one sample, two positions; no halting loss (the no-ACT model).
    first = terms_class(lm=torch.tensor([[1.0, 3.0]]))
    second = terms_class(lm=torch.tensor([[5.0, 7.0]]))
    steps = [first, second]
    values = {
        name: get_split(name).objectives(steps).values.tolist()
        for name in SPLIT_NAMES
        if "superv" in name
    }
    assert values["stack_supervisions"] == [2.0, 6.0]
    assert values["stack_supervisions_and_sum"] == [8.0]
    assert values["stack_supervisions_and_iwrm"] == [2.0, 6.0]
    assert values["stack_supervisions_and_pixelwise"] == [0.5, 1.5, 2.5, 3.5]
    assert values["stack_supervisions_and_iwrm_pixelwise"] == [0.5, 1.5, 2.5, 3.5]
    assert get_split("sum").objectives(steps).values.tolist() == [16.0]


def test_identically_zero_objectives_are_dropped(make_terms: TermsFactory) -> None:
    terms = make_terms(B, P, zero_positions=2)
    assert terms.halt is not None
    # Unlabelled positions hold a share of the halting loss: kept.
    pixelwise = get_split("pixelwise_q_halt_in").objectives([terms])
    assert (pixelwise.count, pixelwise.dropped) == (P, 0)
    torch.testing.assert_close(pixelwise.values, terms.lm.sum(0) + terms.halt.sum() / P)
    # Without a halting loss in them, they are identically zero: dropped.
    iwrm_pixelwise = get_split("iwrm_pixelwise_q_halt_out").objectives([terms])
    assert (iwrm_pixelwise.count, iwrm_pixelwise.dropped) == (B * (P - 2) + B, 2 * B)
    no_halt = get_split("pixelwise_q_halt_in").objectives(
        [make_terms(B, P, halt=False, zero_positions=2)]
    )
    assert (no_halt.count, no_halt.dropped) == (P - 2, 2)


def hand_made_terms(terms_class: type[Terms]) -> Terms:
    """Three slots of three positions: position 2 is unlabelled in every real sample,
    position 1 in sample 1, and slot 2 is masked (its losses are ignored)."""
    lm = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0], [5.0, 6.0, 7.0]], dtype=torch.float64)
    halt = torch.tensor([0.6, 1.2, 9.0], dtype=torch.float64)
    mask = torch.tensor([True, True, False])
    return terms_class(lm=lm.requires_grad_(), halt=halt.requires_grad_(), mask=mask)


def test_halt_in_is_spread_as_the_reference_did(terms_class: type[Terms]) -> None:
    terms = hand_made_terms(terms_class)
    # Sum of the real halting losses: 0.6 + 1.2 = 1.8.
    pixelwise = get_split("pixelwise_q_halt_in").objectives([terms])
    # Position p: lm[0, p] + lm[1, p] + 1.8 / 3; position 2 holds halting loss only.
    torch.testing.assert_close(pixelwise.values, torch.tensor([4.6, 2.6, 0.6], dtype=torch.float64))
    assert (pixelwise.dropped, pixelwise.shares) == (0, None)

    both = get_split("iwrm_pixelwise_q_halt_in").objectives([terms])
    # (b, p) for the 6 real pairs: lm[b, p] + 1.8 / 6; the masked slot's 3 are dropped.
    expected = torch.tensor([1.3, 2.3, 0.3, 3.3, 0.3, 0.3], dtype=torch.float64)
    torch.testing.assert_close(both.values, expected)
    assert (both.count, both.dropped, both.base_count) == (6, 3, 7)
    assert both.shares is not None
    torch.testing.assert_close(both.shares, torch.full((6, 1), 1 / 6, dtype=torch.float64))
    # Every objective depends on every real sample's halting loss (1 / 6 each), none on
    # the masked one's.
    assert terms.halt is not None
    (d_halt,) = torch.autograd.grad(both.values[2], [terms.halt])
    torch.testing.assert_close(d_halt, torch.tensor([1 / 6, 1 / 6, 0.0], dtype=torch.float64))

    iwrm = get_split("iwrm_q_halt_in").objectives([terms])
    torch.testing.assert_close(iwrm.values, torch.tensor([3.6, 4.2], dtype=torch.float64))
    assert iwrm.dropped == 1


def test_shared_halt_follows_the_groups(terms_class: type[Terms]) -> None:
    terms = hand_made_terms(terms_class)
    grouped = get_split("iwrm_pixelwise_q_halt_in", groups=4).objectives([terms], step=0)
    # 6 objectives in 4 buckets of sizes 2, 2, 1, 1: shares 2/6, 2/6, 1/6, 1/6 of 1.8.
    assert grouped.shares is not None
    shares = grouped.shares[:, 0]
    assert sorted(shares.tolist()) == pytest.approx([1 / 6, 1 / 6, 1 / 3, 1 / 3])
    block = grouped.blocks[0]
    lm_part, lm_index = block.atoms[:, :3].detach(), block.index[:, :3]
    values = grouped.values.detach()
    for k in range(4):
        expected = lm_part[lm_index == k].sum() + shares[k] * 1.8
        assert float(values[k]) == pytest.approx(float(expected))
    assert float(values.sum()) == pytest.approx(7.8)


def test_folding_with_a_shared_term() -> None:
    atoms = torch.tensor([[1.0, 2.0, 3.0]])
    objectives = ObjectiveSet(
        values=torch.tensor([2.5, 2.75]),
        blocks=(ObjectiveBlock(atoms, torch.tensor([[0, 1, 2]])),),
        shares=torch.tensor([[0.5], [0.25]]),
    )
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    # A = [[1, 0, 0.5], [0, 1, 0.25]]
    torch.testing.assert_close(objectives.fold_rows(rows), torch.tensor([[2.0, 1.0], [0.5, 1.5]]))
    gramian = rows @ rows.T
    folded = objectives.fold_rows(rows)
    torch.testing.assert_close(objectives.fold_gramian(gramian), folded @ folded.T)
    torch.testing.assert_close(
        objectives.base_weights(torch.tensor([2.0, 4.0])), torch.tensor([2.0, 4.0, 2.0])
    )
    with pytest.raises(ValueError, match="shares must be"):
        ObjectiveSet(values=torch.zeros(2), blocks=objectives.blocks, shares=torch.zeros(3, 1))


def test_masked_slots_are_dropped(make_terms: TermsFactory) -> None:
    mask = torch.tensor([True, False, True, True])
    terms = make_terms(B, P, mask=mask)
    assert terms.halt is not None
    objectives = get_split("iwrm_q_halt_out").objectives([terms])
    assert (objectives.count, objectives.dropped) == (2 * (B - 1), 2)
    keep = mask.nonzero().squeeze(1)
    torch.testing.assert_close(
        objectives.values, torch.cat([terms.lm.sum(1)[keep], terms.halt[keep]])
    )


def test_grouping_is_near_equal_seeded_and_fresh_per_step(terms_class: type[Terms]) -> None:
    ones = torch.ones(B, P, dtype=torch.float64, requires_grad=True)
    terms = terms_class(lm=ones)
    split = get_split("iwrm_pixelwise_q_halt_in", groups=5, seed=1)
    sizes = split.objectives([terms], step=0).values
    # 24 unit objectives in 5 buckets: sizes 5, 5, 5, 5, 4.
    assert sorted(sizes.tolist()) == [4.0, 5.0, 5.0, 5.0, 5.0]

    def grouping(seed: int, step: int) -> Tensor:
        objectives = attrs.evolve(split, seed=seed).objectives([terms], step=step)
        return objectives.blocks[0].index

    assert torch.equal(grouping(1, 7), grouping(1, 7))
    assert not torch.equal(grouping(1, 7), grouping(1, 8))
    assert not torch.equal(grouping(1, 7), grouping(2, 7))
    with pytest.raises(ValueError, match="step="):
        split.objectives([terms])


def test_more_groups_than_objectives(make_terms: TermsFactory) -> None:
    objectives = get_split("iwrm_q_halt_in", groups=50).objectives([make_terms(B, P)], step=0)
    assert objectives.count == B


def test_halt_absent_and_missing(make_terms: TermsFactory) -> None:
    terms = make_terms(B, P)
    absent = Split(instances=True, halt=HaltMode.ABSENT).objectives([terms]).values
    torch.testing.assert_close(absent, terms.lm.sum(1))
    no_halt = make_terms(B, P, halt=False)
    assert get_split("iwrm_q_halt_out").objectives([no_halt]).count == B


def test_aliases_and_unknown_names() -> None:
    assert get_split("iwrm_with_q_halt_in") == get_split("iwrm_q_halt_in")
    assert get_split("IWRM_Pixelwise_With_Q_Halt_Out") == get_split("iwrm_pixelwise_q_halt_out")
    with pytest.raises(ValueError, match="valid names: sum, lm_loss_vs_q_halt_loss"):
        get_split("pixelwize")


def test_refinement_splits_need_internal_losses(make_terms: TermsFactory) -> None:
    with pytest.raises(ValueError, match=r"LossTerms\.internal"):
        get_split("stack_internal_losses").objectives([make_terms(B, P)])


def test_single_objective_flag() -> None:
    single = {name for name in SPLIT_NAMES if get_split(name).single_objective}
    assert single == {"sum", "stack_internal_and_sum", "stack_supervisions_and_sum"}
    assert get_split("iwrm_q_halt_in", groups=1).single_objective


def test_loss_terms_are_structural_and_every_attribute_must_exist(
    make_terms: TermsFactory,
) -> None:
    terms = make_terms()
    assert isinstance(terms, LossTerms) and terms.halt is not None
    objectives = get_split("sum").objectives([terms])
    assert objectives.split == get_split("sum")
    torch.testing.assert_close(objectives.values, (terms.lm.sum() + terms.halt.sum())[None])

    @attrs.frozen
    class WithoutMask:  # `halt` and `internal` may be None, but must exist
        lm: Tensor
        halt: Tensor | None = None
        internal: list[Tensor] | None = None

    partial = WithoutMask(terms.lm)
    assert not isinstance(partial, LossTerms)
    with pytest.raises(TypeError, match="WithoutMask is not a LossTerms record: it lacks mask"):
        get_split("sum").objectives([partial])  # type: ignore[list-item]


def test_shape_errors(make_terms: TermsFactory, terms_class: type[Terms]) -> None:
    terms = make_terms(B, P)
    with pytest.raises(ValueError, match=r"\[B, P\]"):
        get_split("sum").objectives([terms_class(lm=terms.lm.flatten())])
    with pytest.raises(ValueError, match="halt must be"):
        get_split("sum").objectives([terms_class(lm=terms.lm, halt=torch.ones(B + 1))])
    with pytest.raises(ValueError, match="groups"):
        Split(groups=0)
