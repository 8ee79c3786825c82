"""The names `JacobianDescent` accepts for its engine and for what the Jacobian covers.

Apart from the engines themselves so that a configuration can check the names without
importing torchjd.
"""

from __future__ import annotations

from typing import Literal, get_args

EngineName = Literal["auto", "per_sample", "autogram", "autojac", "sequential"]
ENGINE_NAMES: tuple[str, ...] = get_args(EngineName)
JacobianCovers = Literal["all", "parameters"]
"""Which inputs' Jacobian the aggregator sees: the parameters and the extra inputs, or the
parameters only."""
JACOBIAN_COVERS: tuple[JacobianCovers, ...] = get_args(JacobianCovers)
