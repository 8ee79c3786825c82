from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torchjd.aggregation import UPGrad

from jd_splits import (
    AGGREGATOR_NAMES,
    AGGREGATOR_PARAMETERS,
    AggregatorParameter,
    BatchedDualConeProjector,
    JacobianDescent,
    ObjectiveSet,
    make_aggregator,
    parse_aggregator_params,
)

README = Path(__file__).parents[2] / "packages" / "jd-splits" / "README.md"

# The required parameters for the 5 objectives of the JD step below, as on a command line.
REQUIRED: dict[str, list[str]] = {
    "nashmtl": ["n_tasks=5"],
    "krum": ["n_byzantine=1"],
    "trimmed_mean": ["trim_number=1"],
    "constant": ["weights=1,2,0.5,1,1"],
    "fairgrad": ["alpha=1"],
}

# A text value of each kind that every parameter of that kind accepts.
EXAMPLES = {"int": "1", "float": "0.5", "vector": "1,2", "float_or_vector": "0.5,0.25"}


def build(name: str, pairs: list[str]) -> Any:
    try:
        return make_aggregator(name, **parse_aggregator_params(name, pairs))
    except ImportError as error:  # optional solver dependencies (cvxpy for nashmtl, cagrad)
        pytest.skip(str(error))


def test_every_name_is_documented_and_required_parameters_are_the_listed_ones() -> None:
    assert tuple(AGGREGATOR_PARAMETERS) == AGGREGATOR_NAMES
    required = {
        name
        for name, parameters in AGGREGATOR_PARAMETERS.items()
        if any(p.required for p in parameters)
    }
    assert required == set(REQUIRED)


@pytest.mark.filterwarnings("ignore:You are solving a parameterized problem that is not DPP")
@pytest.mark.parametrize("name", AGGREGATOR_NAMES)
def test_every_aggregator_runs_in_a_jd_step(name: str) -> None:
    aggregator = build(name, REQUIRED.get(name, []))
    generator = torch.Generator().manual_seed(0)
    module = torch.nn.Module()
    module.weight = torch.nn.Parameter(torch.randn(5, 4, generator=generator))
    x = torch.randn(4, generator=generator)
    jd = JacobianDescent(module, aggregator=aggregator, engine="autojac")
    with jd.record():
        values = (module.weight @ x) ** 2 + torch.arange(5.0) - (module.weight.sum(0) @ x)
        result = jd.backward(ObjectiveSet.from_vector(values))
    assert result.num_objectives == 5
    assert module.weight.grad is not None and module.weight.grad.shape == (5, 4)
    assert torch.isfinite(module.weight.grad).all()


def _example(parameter: AggregatorParameter) -> str:
    return parameter.choices[-1] if parameter.kind == "choice" else EXAMPLES[parameter.kind]


@pytest.mark.parametrize("name", AGGREGATOR_NAMES)
def test_every_documented_parameter_reaches_the_constructor(name: str) -> None:
    """Each aggregator builds with every parameter a command line can give, and with its
    required ones alone (so that none is missing from the documentation)."""
    given = [p for p in AGGREGATOR_PARAMETERS[name] if p.kind != "python"]
    assert build(name, [f"{p.name}={_example(p)}" for p in given]) is not None
    assert build(name, [f"{p.name}={_example(p)}" for p in given if p.required]) is not None


def test_text_values_are_read_by_the_parameter_kind() -> None:
    assert parse_aggregator_params("nashmtl", ["n_tasks=4", " max_norm = 2"]) == {
        "n_tasks": 4,
        "max_norm": 2.0,
    }
    assert parse_aggregator_params("UPGrad", ["pref_vector=1,2"]) == {"pref_vector": [1.0, 2.0]}
    assert parse_aggregator_params("upgrad", ["pref_vector=3"]) == {"pref_vector": [3.0]}
    assert parse_aggregator_params("pcd", ["tau=0.1"]) == {"tau": 0.1}
    assert parse_aggregator_params("pcd", ["tau=0.1,0.2"]) == {"tau": [0.1, 0.2]}
    assert parse_aggregator_params("aligned_mtl", ["scale_mode=rmse"]) == {"scale_mode": "rmse"}
    upgrad = make_aggregator("upgrad", pref_vector=[1, 2])
    assert isinstance(upgrad, UPGrad) and upgrad.pref_vector is not None
    assert upgrad.pref_vector.tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    ("name", "pairs", "message"),
    [
        ("nashmtl", ["n_tasks"], "'n_tasks' is not KEY=VALUE"),
        ("nashmtl", ["=4"], "'=4' is not KEY=VALUE"),
        ("nashmtl", ["n_tasks=4", "n_tasks=5"], "'n_tasks' is given twice"),
        ("nashmtl", ["n_tasks=four"], "n_tasks must be an int, got 'four'"),
        ("nashmtl", ["n_tasks=4.5"], "n_tasks must be an int, got '4.5'"),
        ("cagrad", ["c=inf"], "c must be a finite number, got inf"),
        ("upgrad", ["pref_vector=1,a"], "pref_vector must be numbers separated by commas"),
        ("aligned_mtl", ["scale_mode=max"], "scale_mode must be one of min, median, rmse"),
        ("upgrad", ["projector=quadprog"], "projector is a Python object"),
        (
            "nashmtl",
            ["n_task=4"],
            "unknown parameter 'n_task': aggregator 'nashmtl' accepts: n_tasks (int, "
            "required), max_norm (float, 1.0), update_weights_every (int, 1), optim_niter",
        ),
        ("mean", ["scale=2"], "unknown parameter 'scale': aggregator 'mean' takes no parameters"),
        ("krum", [], "missing required parameter n_byzantine: aggregator 'krum' accepts"),
    ],
)
def test_bad_parameters_are_refused_by_name(name: str, pairs: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_aggregator_params(name, pairs)


def test_python_values_are_checked_too() -> None:
    with pytest.raises(ValueError, match="missing required parameter n_byzantine"):
        make_aggregator("krum")
    with pytest.raises(ValueError, match="n_byzantine must be an int, got True"):
        make_aggregator("krum", n_byzantine=True)
    with pytest.raises(ValueError, match="unknown parameter 'C'"):
        make_aggregator("cagrad", C=0.4)


def test_names_are_forgiving_and_unknown_ones_listed() -> None:
    assert isinstance(make_aggregator("UPGrad"), UPGrad)
    make_aggregator("Aligned-MTL")
    make_aggregator("trimmedmean", trim_number=1)
    with pytest.raises(ValueError, match="valid names: upgrad, mean, sum"):
        make_aggregator("upgrade")


def test_the_readme_documents_every_parameter() -> None:
    rows = ["| aggregator | parameter | kind | default | meaning |", "|---|---|---|---|---|"]
    plain = [name for name, parameters in AGGREGATOR_PARAMETERS.items() if not parameters]
    rows.append(f"| {', '.join(f'`{name}`' for name in plain)} | none | | | |")
    for name, parameters in AGGREGATOR_PARAMETERS.items():
        for i, p in enumerate(parameters):
            kind = ", ".join(p.choices) if p.kind == "choice" else p.kind.replace("_", " ")
            default = "**required**" if p.default is None else p.default
            label = f"`{name}`" if i == 0 else ""
            rows.append(f"| {label} | `{p.name}` | {kind} | {default} | {p.meaning} |")
    assert "\n".join(rows) in README.read_text()


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
