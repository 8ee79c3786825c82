from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pytest
import torch
from torch import Tensor, nn

from jd_splits import (
    JACOBIAN_COVERS,
    Diagnostics,
    EngineName,
    JacobianCovers,
    JacobianDescent,
    ObjectiveSet,
    Refinements,
    Split,
    _memory,
    get_split,
)

if TYPE_CHECKING:
    from tests.jd_splits.conftest import Batch, ModelFactory, TinyRecursive

ENGINES: tuple[EngineName, ...] = ("per_sample", "autogram", "autojac", "sequential")


def grads(model: nn.Module, batch: Batch) -> list[Tensor]:
    out = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]
    out.append(torch.zeros_like(batch.rows) if batch.rows.grad is None else batch.rows.grad.clone())
    return out


def clear(model: nn.Module, batch: Batch) -> None:
    model.zero_grad(set_to_none=True)
    batch.rows.grad = None


def jd_step(
    model: TinyRecursive,
    batch: Batch,
    split: Split,
    engine: EngineName,
    *,
    aggregator: str = "upgrad",
    steps: int = 1,
    scale: float = 1.0,
    max_jacobian_bytes: int | None = None,
    covers: JacobianCovers = "all",
) -> Diagnostics:
    jd = JacobianDescent(
        model,
        aggregator=aggregator,
        engine=engine,
        split=split,
        max_jacobian_bytes=max_jacobian_bytes,
        jacobian_covers=covers,
    )
    with jd.record():
        internal = split.refinements is not Refinements.FINAL
        terms = [
            model(batch.tokens, batch.labels.roll(t, 1), batch.rows, internal=internal)
            for t in range(steps)
        ]
        objectives = split.objectives(terms, step=0)
        return jd.backward(objectives, extra_inputs=[batch.rows], scale=scale)


SPLITS = {
    "iwrm_q_halt_in": (get_split("iwrm_q_halt_in"), 1),
    "iwrm_q_halt_out": (get_split("iwrm_q_halt_out"), 1),
    "pixelwise_q_halt_in": (get_split("pixelwise_q_halt_in"), 1),
    "iwrm_pixelwise_grouped": (get_split("iwrm_pixelwise_q_halt_in", groups=5), 1),
    "iwrm_grouped": (get_split("iwrm_q_halt_in", groups=3), 1),
    "pixelwise_grouped": (get_split("pixelwise_q_halt_out", groups=4), 1),
    "stack_internal_losses": (get_split("stack_internal_losses", intermediate_weight=0.5), 1),
    "stack_supervisions_and_iwrm": (get_split("stack_supervisions_and_iwrm"), 2),
    "lm_loss_vs_q_halt_loss": (get_split("lm_loss_vs_q_halt_loss"), 1),
}


@pytest.mark.parametrize("covers", JACOBIAN_COVERS)
@pytest.mark.parametrize("name", list(SPLITS))
def test_engines_agree(name: str, covers: JacobianCovers, tiny_model: ModelFactory) -> None:
    split, steps = SPLITS[name]
    model, batch = tiny_model()
    results = {}
    counts = set()
    for engine in ENGINES:
        clear(model, batch)
        diagnostics = jd_step(model, batch, split, engine, steps=steps, covers=covers)
        assert diagnostics.engine == engine
        counts.add(diagnostics.num_objectives)
        results[engine] = grads(model, batch)
    assert len(counts) == 1 and counts.pop() > 1
    reference = results["sequential"]
    for engine in ENGINES:
        for got, want in zip(results[engine], reference, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-10)
    # The extra input (last) did receive an update.
    assert reference[-1].abs().sum() > 0


@pytest.mark.parametrize("covers", JACOBIAN_COVERS)
@pytest.mark.parametrize("name", list(SPLITS))
def test_per_sample_without_the_whole_jacobian(
    name: str, covers: JacobianCovers, tiny_model: ModelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the whole Jacobian's path does not fit (forced here: with few pixels per
    sample, streaming every pass's gradients is rarely the smaller), the per_sample engine
    streams the Jacobian module by module."""
    split, steps = SPLITS[name]
    model, batch = tiny_model()
    jd_step(model, batch, split, "sequential", steps=steps, covers=covers)
    expected = grads(model, batch)
    clear(model, batch)
    monkeypatch.setattr(_memory, "per_sample_peak", lambda sizes: 1 << 62)
    diagnostics = jd_step(
        model, batch, split, "per_sample", steps=steps, max_jacobian_bytes=1 << 61, covers=covers
    )
    assert diagnostics.engine == "per_sample_streamed"
    for got, want in zip(grads(model, batch), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-10)
    with pytest.raises(MemoryError, match="needs the Jacobian whole"):
        jd_step(
            model,
            batch,
            split,
            "per_sample",
            aggregator="graddrop",
            steps=steps,
            max_jacobian_bytes=1,
        )


@pytest.mark.parametrize("engine", ["auto", *ENGINES])
@pytest.mark.parametrize("name", ["sum", "stack_internal_and_sum", "iwrm_q_halt_in"])
def test_single_objective_is_plain_gradient_descent(
    engine: EngineName, name: str, tiny_model: ModelFactory
) -> None:
    model, batch = tiny_model(batch=1 if name == "iwrm_q_halt_in" else 4)
    split = get_split(name, intermediate_weight=0.5)
    internal = split.refinements is not Refinements.FINAL
    terms = model(batch.tokens, batch.labels, batch.rows, internal=internal)
    torch.autograd.backward([split.objectives([terms]).values.sum()])
    expected = grads(model, batch)
    clear(model, batch)
    diagnostics = jd_step(model, batch, split, engine)
    assert (diagnostics.engine, diagnostics.num_objectives) == ("plain", 1)
    for got, want in zip(grads(model, batch), expected, strict=True):
        assert torch.equal(got, want)


def explicit_jacobian(model: TinyRecursive, batch: Batch, split: Split) -> Tensor:
    """The Jacobian with respect to the parameters and the extra rows, one row at a time."""
    terms = model(batch.tokens, batch.labels, batch.rows)
    values = split.objectives([terms]).values
    inputs = [*model.parameters(), batch.rows]
    rows = []
    for value in values:
        gradient = torch.autograd.grad(value, inputs, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat(
                [
                    (torch.zeros_like(p) if g is None else g).flatten()
                    for g, p in zip(gradient, inputs, strict=True)
                ]
            )
        )
    return torch.stack(rows)


@pytest.mark.parametrize("name", ["iwrm_q_halt_out", "pixelwise_q_halt_in"])
def test_upgrad_update_conflicts_with_no_objective_and_cosine_matches(
    name: str, tiny_model: ModelFactory
) -> None:
    model, batch = tiny_model(batch=6, seed=3)
    split = get_split(name)
    jacobian = explicit_jacobian(model, batch, split)
    diagnostics = jd_step(model, batch, split, "auto")
    update = torch.cat([g.flatten() for g in grads(model, batch)])
    assert update.shape == jacobian.shape[1:]
    products = jacobian @ update
    # Non-negative up to UPGrad's regularisation (reg_eps * trace(G) * |w|).
    assert float(products.min()) >= -1e-3 * float(products.abs().max())
    mean = jacobian.sum(0)
    cosine = float(update @ mean / (update.norm() * mean.norm()))
    assert diagnostics.cosine_to_mean == pytest.approx(cosine, rel=1e-6)
    gramian = jacobian @ jacobian.T
    assert diagnostics.gramian_min == pytest.approx(float(gramian.min()), rel=1e-6)
    assert diagnostics.gramian_mean == pytest.approx(float(gramian.mean()), rel=1e-6)
    m = gramian.shape[0]
    conflicts = int((gramian[torch.triu(torch.ones(m, m, dtype=torch.bool), 1)] < 0).sum())
    assert diagnostics.conflict_share == pytest.approx(conflicts / (m * (m - 1) / 2))
    if name == "iwrm_q_halt_out":
        assert diagnostics.conflict_share > 0  # so that UPGrad has something to resolve


def test_auto_picks_per_sample_and_mean_is_one_weighted_backward(tiny_model: ModelFactory) -> None:
    model, batch = tiny_model()
    split = get_split("iwrm_q_halt_in")
    assert jd_step(model, batch, split, "auto").engine == "per_sample"
    clear(model, batch)
    weighted = jd_step(model, batch, split, "auto", aggregator="mean")
    assert (weighted.engine, weighted.cosine_to_mean) == ("weighted", 1.0)
    expected = grads(model, batch)
    clear(model, batch)
    jd_step(model, batch, split, "autojac", aggregator="mean")
    for got, want in zip(grads(model, batch), expected, strict=True):
        torch.testing.assert_close(got, want)


def test_scale_multiplies_the_update(tiny_model: ModelFactory) -> None:
    model, batch = tiny_model()
    split = get_split("iwrm_q_halt_out")
    jd_step(model, batch, split, "per_sample")
    expected = [0.25 * g for g in grads(model, batch)]
    clear(model, batch)
    jd_step(model, batch, split, "per_sample", scale=0.25)
    for got, want in zip(grads(model, batch), expected, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("engine", ["auto", "autogram", "per_sample"])
def test_other_forwards_between_steps(engine: EngineName, tiny_model: ModelFactory) -> None:
    model, batch = tiny_model()
    split = get_split("iwrm_q_halt_in")
    jd = JacobianDescent(model, engine=engine, split=split)

    def step() -> list[Tensor]:
        clear(model, batch)
        with jd.record():
            jd.backward(
                split.objectives([model(batch.tokens, batch.labels, batch.rows)]),
                extra_inputs=[batch.rows],
            )
        return grads(model, batch)

    first = step()
    model(batch.tokens, batch.labels, batch.rows).lm.sum().backward()  # a GD step
    with torch.no_grad():
        model(batch.tokens, batch.labels, batch.rows)  # an evaluation
    with jd.record(), torch.no_grad():
        model(batch.tokens, batch.labels, batch.rows)  # even one inside record()
    for got, want in zip(step(), first, strict=True):
        torch.testing.assert_close(got, want)
    assert all(not m._forward_hooks for m in model.modules())


def test_record_is_not_reentrant(tiny_model: ModelFactory) -> None:
    model, _ = tiny_model()
    jd = JacobianDescent(model)
    with jd.record(), pytest.raises(RuntimeError, match="already active"), jd.record():
        pass


def test_backward_is_refused_outside_record_whatever_the_engine(tiny_model: ModelFactory) -> None:
    model, batch = tiny_model()
    for split in (get_split("iwrm_q_halt_in"), get_split("sum")):
        jd = JacobianDescent(model, split=split)
        terms = model(batch.tokens, batch.labels, batch.rows)
        with pytest.raises(RuntimeError, match=r"inside `with jd.record\(\):` \(always"):
            jd.backward(split.objectives([terms]))
    assert JacobianDescent(model, split=get_split("iwrm_q_halt_in")).uses_hooks
    # One objective, or weights without a Jacobian: no hooks, so the model may be compiled.
    assert not JacobianDescent(model, split=get_split("sum")).uses_hooks
    assert not JacobianDescent(model, aggregator="mean").uses_hooks


def test_the_split_given_at_construction_must_make_the_objectives(
    tiny_model: ModelFactory,
) -> None:
    model, batch = tiny_model()
    jd = JacobianDescent(model, split=get_split("sum"))
    iwrm = get_split("iwrm_q_halt_in")
    with jd.record():
        terms = model(batch.tokens, batch.labels, batch.rows)
        with pytest.raises(ValueError, match="built for the objectives of Split") as error:
            jd.backward(iwrm.objectives([terms]))
        assert "these come from another split, Split(supervisions=False" in str(error.value)
        with pytest.raises(ValueError, match="these come from no split"):
            jd.backward(ObjectiveSet.per_instance(terms.lm.sum(1)))
        # An equal split (the same preset built again) is the same split.
        assert jd.backward(get_split("sum").objectives([terms])).engine == "plain"


def test_plain_vector_objectives(tiny_model: ModelFactory) -> None:
    model, batch = tiny_model()
    jd = JacobianDescent(model, engine="autojac")
    with jd.record():
        terms = model(batch.tokens, batch.labels, batch.rows)
        assert terms.halt is not None
        vector = torch.stack([terms.lm.sum(), terms.halt.sum()])
        with pytest.raises(TypeError, match=r"ObjectiveSet, not Tensor: split\.objectives"):
            jd.backward(vector)  # type: ignore[arg-type]
        diagnostics = jd.backward(ObjectiveSet.from_vector(vector))
    assert (diagnostics.engine, diagnostics.num_objectives) == ("autojac", 2)
    with pytest.raises(ValueError, match="per-sample structure"):
        jd = JacobianDescent(model, engine="autogram")
        with jd.record():
            terms = model(batch.tokens, batch.labels, batch.rows)
            jd.backward(ObjectiveSet.from_vector(torch.stack([terms.lm.sum(), terms.lm.mean()])))


class _DirectWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.linear(x) + x @ self.linear.weight.T
        return out


def test_per_sample_refuses_what_it_cannot_handle() -> None:
    with pytest.raises(ValueError, match="LayerNorm"):
        JacobianDescent(nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)), engine="per_sample")
    model = _DirectWeight()
    jd = JacobianDescent(model, engine="per_sample")
    with jd.record(), pytest.raises(RuntimeError, match="used outside"):
        jd.backward(ObjectiveSet.per_instance(model(torch.randn(4, 3)).pow(2).sum(1)))


def test_auto_falls_back_for_other_modules() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1))
    jd = JacobianDescent(model)
    with jd.record():
        losses = model(torch.randn(5, 3)).squeeze(1).pow(2)
        assert jd.backward(ObjectiveSet.per_instance(losses)).engine == "autogram"
    graddrop = JacobianDescent(model, aggregator="graddrop")
    with graddrop.record():
        losses = model(torch.randn(5, 3)).squeeze(1).pow(2)
        assert graddrop.backward(ObjectiveSet.per_instance(losses)).engine == "autojac"


def test_diagnostics_as_dict(tiny_model: ModelFactory) -> None:
    model, batch = tiny_model()
    diagnostics = jd_step(model, batch, get_split("iwrm_q_halt_in"), "auto")
    flat = diagnostics.as_dict()
    assert flat["jd/engine"] == "per_sample" and flat["jd/num_objectives"] == 4
    assert set(flat) == {
        "jd/" + k
        for k in (
            "engine",
            "num_objectives",
            "dropped",
            "cosine_to_mean",
            "gramian_min",
            "gramian_mean",
            "gramian_median",
            "conflict_share",
            "seconds",
        )
    }
    assert 0 < diagnostics.cosine_to_mean <= 1 + 1e-12 and diagnostics.seconds > 0
    assert not math.isnan(diagnostics.gramian_median)


def test_no_objectives_leaves_grads_untouched(tiny_model: ModelFactory) -> None:
    model, batch = tiny_model()
    jd = JacobianDescent(model, engine="autojac")
    with jd.record():
        terms = model(batch.tokens, batch.labels, batch.rows)
        diagnostics = jd.backward(ObjectiveSet.from_vector(terms.lm.sum()[None][:0]))
    assert diagnostics.num_objectives == 0
    assert all(p.grad is None for p in model.parameters())
