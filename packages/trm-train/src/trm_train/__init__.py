"""Train and evaluate Tiny Recursive Models on ARC with gradient or Jacobian descent.

`trm-train` (and `python -m trm_train` for torchrun) runs `train` on a `TrainConfig`
built from a recipe (`arc2`, `seed`, `cpu`, `cpu_sudoku`, `tiny`) and command-line overrides; `trm-eval` scores a
run's checkpoint with the official pass@K rule; `trm-report` writes a run's report.md.
"""

from ._adam_atan2 import AdamATan2, make_adam_atan2
from ._checkpoint import list_checkpoints, load_checkpoint
from ._config import (
    RECIPES,
    DataConfig,
    LoopConfig,
    ObjectiveConfig,
    OptimConfig,
    TrainConfig,
    arc2,
    cpu,
    cpu_sudoku,
    seed,
    split_model,
    tiny,
)
from ._distributed import Distributed, init_distributed
from ._ema import ParameterEMA
from ._eval_files import write_eval_files
from ._failure_weights import FailureWeights
from ._init_from import load_initial_weights
from ._loop import TrainingError, TrainSummary, train
from ._metrics_log import LoggingConfig, read_metrics
from ._plot import line_chart
from ._predict import Predictions, predict
from ._report import write_report
from ._run import load_trained_model, read_run_config
from ._schedule import warmup_cosine
from ._scoring import (
    DEFAULT_KS,
    Candidate,
    EvalResult,
    InputResult,
    Submission,
    TaskResult,
    score_predictions,
)

__all__ = [
    "DEFAULT_KS",
    "RECIPES",
    "AdamATan2",
    "Candidate",
    "DataConfig",
    "Distributed",
    "EvalResult",
    "FailureWeights",
    "InputResult",
    "LoggingConfig",
    "LoopConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "ParameterEMA",
    "Predictions",
    "Submission",
    "TaskResult",
    "TrainConfig",
    "TrainSummary",
    "TrainingError",
    "arc2",
    "cpu",
    "cpu_sudoku",
    "init_distributed",
    "line_chart",
    "list_checkpoints",
    "load_checkpoint",
    "load_initial_weights",
    "load_trained_model",
    "make_adam_atan2",
    "predict",
    "read_metrics",
    "read_run_config",
    "score_predictions",
    "seed",
    "split_model",
    "tiny",
    "train",
    "warmup_cosine",
    "write_eval_files",
    "write_report",
]
