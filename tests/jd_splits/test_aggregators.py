from __future__ import annotations

from typing import Any

import pytest
import torch
from torchjd.aggregation import UPGrad

from jd_splits import AGGREGATOR_NAMES, BatchedDualConeProjector, JacobianDescent, make_aggregator

# Constructor arguments some aggregators require.
REQUIRED: dict[str, dict[str, Any]] = {
    "nashmtl": {"n_tasks": 5},
    "krum": {"n_byzantine": 1},
    "trimmed_mean": {"trim_number": 1},
    "constant": {"weights": torch.tensor([1.0, 2.0, 0.5, 1.0, 1.0])},
    "fairgrad": {"alpha": 1.0},
}


def build(name: str) -> Any:
    try:
        return make_aggregator(name, **REQUIRED.get(name, {}))
    except ImportError as error:  # optional solver dependencies (cvxpy for nashmtl, cagrad)
        pytest.skip(str(error))


@pytest.mark.filterwarnings("ignore:You are solving a parameterized problem that is not DPP")
@pytest.mark.parametrize("name", AGGREGATOR_NAMES)
def test_every_aggregator_runs_in_a_jd_step(name: str) -> None:
    aggregator = build(name)
    generator = torch.Generator().manual_seed(0)
    module = torch.nn.Module()
    module.weight = torch.nn.Parameter(torch.randn(5, 4, generator=generator))
    x = torch.randn(4, generator=generator)
    values = (module.weight @ x) ** 2 + torch.arange(5.0) - (module.weight.sum(0) @ x)
    result = JacobianDescent(module, aggregator=aggregator, engine="autojac").backward(values)
    assert result.num_objectives == 5
    assert module.weight.grad is not None and module.weight.grad.shape == (5, 4)
    assert torch.isfinite(module.weight.grad).all()


def test_names_are_forgiving_and_unknown_ones_listed() -> None:
    assert isinstance(make_aggregator("UPGrad"), UPGrad)
    make_aggregator("Aligned-MTL")
    make_aggregator("trimmedmean", trim_number=1)
    with pytest.raises(ValueError, match="valid names: upgrad, mean, sum"):
        make_aggregator("upgrade")
    with pytest.raises(TypeError, match="krum"):
        make_aggregator("krum")


def test_upgrad_defaults_to_the_batched_projector_and_takes_parameters() -> None:
    upgrad = make_aggregator("upgrad")
    assert isinstance(upgrad, UPGrad) and isinstance(upgrad.projector, BatchedDualConeProjector)
    preference = torch.tensor([0.2, 0.8])
    with_preference = make_aggregator("upgrad", pref_vector=preference)
    assert isinstance(with_preference, UPGrad) and with_preference.pref_vector is preference


def test_batched_upgrad_matches_quadprog_upgrad() -> None:
    generator = torch.Generator().manual_seed(1)
    jacobian = torch.randn(12, 30, generator=generator, dtype=torch.float64)
    jacobian[6:] -= 1.5 * jacobian[:6]  # strong conflicts
    torch.testing.assert_close(
        make_aggregator("upgrad")(jacobian), UPGrad()(jacobian), rtol=1e-5, atol=1e-8
    )
