"""The constructor parameters of each aggregator: documented, checked, and read from text."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs
import torch
from torch import Tensor

ParameterKind = Literal["int", "float", "vector", "float_or_vector", "choice", "python"]
"""`vector`: numbers, one per objective (a tensor; from text `1,2,0.5`); `float_or_vector`:
one number or such a vector; `python`: an object only Python code can give."""


@attrs.frozen
class AggregatorParameter:
    """One keyword argument of an aggregator's constructor."""

    name: str
    kind: ParameterKind
    meaning: str
    default: str | None = None
    """The value used when it is not given, as text; None: the parameter is required."""
    choices: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is None

    def __str__(self) -> str:
        kind = "|".join(self.choices) if self.kind == "choice" else self.kind.replace("_", " ")
        return f"{self.name} ({kind}, {'required' if self.required else self.default})"


_P = AggregatorParameter
_PREF = _P("pref_vector", "vector", "preference weights, one per objective", "equal weights")
_PROJECTOR = _P("projector", "python", "the dual-cone projector", "BatchedDualConeProjector()")

AGGREGATOR_PARAMETERS: Mapping[str, tuple[AggregatorParameter, ...]] = {
    "upgrad": (_PREF, _PROJECTOR),
    "mean": (),
    "sum": (),
    "mgda": (
        _P("epsilon", "float", "stop when the step of the solver falls below it", "0.001"),
        _P("max_iters", "int", "most iterations of the solver", "100"),
    ),
    "dualproj": (_PREF, _PROJECTOR),
    "pcgrad": (),
    "cagrad": (
        _P("c", "float", "radius of the ball around the mean gradient, relative to it", "0.5"),
        _P("norm_eps", "float", "guards the normalisation against division by zero", "0.0001"),
    ),
    "nashmtl": (
        _P("n_tasks", "int", "the number of objectives (the same at every step)"),
        _P("max_norm", "float", "largest norm of the update (0: no clipping)", "1.0"),
        _P("update_weights_every", "int", "solve for new weights every this many steps", "1"),
        _P("optim_niter", "int", "iterations of the inner solver", "20"),
    ),
    "imtlg": (),
    "aligned_mtl": (
        _P("pref_vector", "vector", "weights of the aligned gradients", "equal weights"),
        _P(
            "scale_mode",
            "choice",
            "eigenvalue that scales the balance transformation",
            "min",
            ("min", "median", "rmse"),
        ),
    ),
    "graddrop": (
        _P("leak", "vector", "how much of each objective's gradient leaks through", "no leak"),
        _P("f", "python", "increasing function of the gradient sign purity", "identity"),
    ),
    "krum": (
        _P("n_byzantine", "int", "objectives whose gradient may be adversarial"),
        _P("n_selected", "int", "gradients averaged (Multi-Krum)", "1"),
    ),
    "trimmed_mean": (
        _P("trim_number", "int", "largest and smallest values dropped from each coordinate"),
    ),
    "random": (),
    "config": (_P("pref_vector", "vector", "weights of the unit gradients", "equal weights"),),
    "constant": (_P("weights", "vector", "the weight of each objective"),),
    "fairgrad": (
        _P("alpha", "float", "the kind of fairness of the alpha-fair allocation"),
        _P("max_iters", "int", "most iterations of the solver", "100 per objective"),
    ),
    "gradvac": (
        _P("beta", "float", "decay of the moving target of the gradient cosines", "0.5"),
        _P("eps", "float", "added to denominators", "1e-08"),
    ),
    "pcd": (
        _P(
            "tau",
            "float_or_vector",
            "share of progress guaranteed to the secondary objectives (one, or one each)",
            "0.02",
        ),
        _P("beta", "float", "decay of the moving average of the squared gradient norms", "0.999"),
        _P("eps", "float", "added to that average", "1e-08"),
    ),
    "excess_mtl": (
        _P("robust_step_size", "float", "step of the exponentiated weight update", "1.0"),
        _P("n_warmup_steps", "int", "steps with equal weights that set the baseline", "0"),
    ),
    "cr_mogm": (
        _P("alpha", "float", "weight of the previous weights in their moving average", "0.9"),
        _P("initial_weights", "vector", "the weights before the first step", "the first ones"),
        _PROJECTOR,
    ),
}
"""Each aggregator's parameters (`make_aggregator` keyword arguments), by canonical name."""


def accepted(name: str) -> str:
    parameters = AGGREGATOR_PARAMETERS[name]
    if not parameters:
        return f"aggregator {name!r} takes no parameters"
    return f"aggregator {name!r} accepts: {', '.join(str(p) for p in parameters)}"


def _lookup(name: str, keys: Iterable[str]) -> dict[str, AggregatorParameter]:
    """The parameter of each key; refuses unknown keys and missing required parameters."""
    known = {p.name: p for p in AGGREGATOR_PARAMETERS[name]}
    keys = list(keys)
    unknown = [key for key in keys if key not in known]
    if unknown:
        raise ValueError(f"unknown parameter {', '.join(map(repr, unknown))}: {accepted(name)}")
    missing = [p.name for p in known.values() if p.required and p.name not in keys]
    if missing:
        raise ValueError(f"missing required parameter {', '.join(missing)}: {accepted(name)}")
    return {key: known[key] for key in keys}


def check_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor's keyword arguments from `params`: names checked, numbers of the
    right type, vectors as tensors (`name` canonical)."""
    parameters = _lookup(name, params)
    return {key: _value(name, parameters[key], value) for key, value in params.items()}


def _value(name: str, parameter: AggregatorParameter, value: Any) -> Any:
    def refuse(expected: str) -> ValueError:
        return ValueError(
            f"aggregator {name!r}: {parameter.name} must be {expected}, got {value!r}"
        )

    kind = parameter.kind
    if kind == "python":
        return value
    if kind == "choice":
        if value not in parameter.choices:
            raise refuse(f"one of {', '.join(parameter.choices)}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise refuse("an int")
        return value
    if kind == "float_or_vector" and _is_number(value):
        return float(value)
    if kind == "float":
        if not _is_number(value):
            raise refuse("a finite number")
        return float(value)
    if isinstance(value, Tensor):
        return value
    numbers = list(value) if isinstance(value, list | tuple) else None
    if not numbers or not all(_is_number(x) for x in numbers):
        raise refuse("a non-empty list of finite numbers")
    return torch.tensor([float(x) for x in numbers])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_params(name: str, pairs: Iterable[str]) -> dict[str, Any]:
    """`KEY=VALUE` texts as plain values (int, float, str, list of floats; JSON-able),
    checked against the aggregator's parameters (`name` canonical)."""
    texts: dict[str, str] = {}
    for pair in pairs:
        key, equals, text = pair.partition("=")
        key, text = key.strip(), text.strip()
        if not (equals and key and text):
            raise ValueError(f"aggregator parameter {pair!r} is not KEY=VALUE")
        if key in texts:
            raise ValueError(f"aggregator parameter {key!r} is given twice")
        texts[key] = text
    parameters = _lookup(name, texts)
    values = {key: _parse(name, parameters[key], text) for key, text in texts.items()}
    check_params(name, values)
    return values


def _parse(name: str, parameter: AggregatorParameter, text: str) -> Any:
    kind = parameter.kind
    if kind == "python":
        raise ValueError(
            f"aggregator {name!r}: {parameter.name} is a Python object; give it to "
            "make_aggregator in Python"
        )
    if kind == "choice":
        return text
    try:
        if kind == "int":
            return int(text)
        if kind == "float" or (kind == "float_or_vector" and "," not in text):
            return float(text)
        return [float(part) for part in text.split(",")]
    except ValueError:
        expected = {"int": "an int", "float": "a number"}.get(kind, "numbers separated by commas")
        raise ValueError(
            f"aggregator {name!r}: {parameter.name} must be {expected}, got {text!r}"
        ) from None
