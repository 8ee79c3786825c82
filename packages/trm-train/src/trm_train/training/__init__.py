"""Training: the loop (`train`) of a `TrainConfig` from scratch, from a checkpoint to
fine-tune (`load_initial_weights`) or resumed bit-exactly, and what it runs: one
optimizer step of Jacobian descent over micro-batches, AdamATan2 and the other weight
optimizers, the warm-up + cosine schedule, the EMA, failure-weighted sampling, the
evaluations along the way and the `trm-train` command (`_cli`).

Exports the loop (`train`, `TrainSummary`, `TrainingError`) and the pieces a library
user may reuse: `AdamATan2` / `make_adam_atan2`, `ParameterEMA`, `FailureWeights`,
`warmup_cosine`, `load_initial_weights`.
"""

from ._adam_atan2 import AdamATan2, make_adam_atan2
from ._ema import ParameterEMA
from ._failure_weights import FailureWeights
from ._init_from import load_initial_weights
from ._loop import TrainingError, TrainSummary, train
from ._schedule import warmup_cosine

__all__ = [
    "AdamATan2",
    "FailureWeights",
    "ParameterEMA",
    "TrainSummary",
    "TrainingError",
    "load_initial_weights",
    "make_adam_atan2",
    "train",
    "warmup_cosine",
]
