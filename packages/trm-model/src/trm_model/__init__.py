"""Tiny Recursive Models (TRM): config, model with ACT carry, per-sample loss terms."""

from ._config import TRMConfig, arc, sudoku_mlp, tiny
from ._losses import IGNORE_LABEL_ID, softmax_cross_entropy, stablemax_cross_entropy
from ._model import TRM
from ._records import Batch, Carry, StepLosses, StepMetrics, StepOutput
from ._reference import load_reference_state_dict, to_reference_state_dict
from ._sparse_sign_sgd import SparseSignSGD

__all__ = [
    "IGNORE_LABEL_ID",
    "TRM",
    "Batch",
    "Carry",
    "SparseSignSGD",
    "StepLosses",
    "StepMetrics",
    "StepOutput",
    "TRMConfig",
    "arc",
    "load_reference_state_dict",
    "softmax_cross_entropy",
    "stablemax_cross_entropy",
    "sudoku_mlp",
    "tiny",
    "to_reference_state_dict",
]
