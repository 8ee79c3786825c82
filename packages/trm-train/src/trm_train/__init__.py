"""Train and evaluate Tiny Recursive Models on ARC with gradient or Jacobian descent.

`trm-train` (and `python -m trm_train` for torchrun) runs `train` on a `TrainConfig`
built from a recipe (`arc2`, `seed`, `cpu`, `cpu_sudoku`, `tiny`) and command-line
overrides; `trm-eval` scores a run's checkpoint with the official pass@K rule;
`trm-report` writes a run's report.md.

One subpackage per job, each with its command: `training` (the loop and what it runs),
`evaluation` (predict and score), `reporting` (report.md and charts). What they share
sits here: the configuration and recipes (`_config`, `_recipes`), the run folder
(`_run`: config, store, trained model), checkpoints, the metrics log, the process
group, and the batch conversion.

Every public name is importable from here, but loaded on first use (PEP 562): the
commands' modules import this package first, and `trm-eval` and `trm-report` must not
load the training machinery to score or describe a run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._checkpoint import list_checkpoints, load_checkpoint
    from ._config import (
        DataConfig,
        LoopConfig,
        ObjectiveConfig,
        OptimConfig,
        TrainConfig,
    )
    from ._distributed import Distributed, init_distributed
    from ._metrics_log import LoggingConfig, read_metrics
    from ._recipes import RECIPES, arc2, cpu, cpu_sudoku, seed, split_model, tiny
    from ._run import load_trained_model, read_run_config
    from .evaluation import (
        DEFAULT_KS,
        Candidate,
        EvalResult,
        InputResult,
        Predictions,
        Submission,
        TaskResult,
        predict,
        score_predictions,
        write_eval_files,
    )
    from .reporting import line_chart, write_report
    from .training import (
        AdamATan2,
        FailureWeights,
        ParameterEMA,
        TrainingError,
        TrainSummary,
        load_initial_weights,
        make_adam_atan2,
        train,
        warmup_cosine,
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

# The module of each public name, for `__getattr__` (the imports above are for readers
# and type checkers only).
_HOMES: dict[str, tuple[str, ...]] = {
    "._checkpoint": ("list_checkpoints", "load_checkpoint"),
    "._config": ("DataConfig", "LoopConfig", "ObjectiveConfig", "OptimConfig", "TrainConfig"),
    "._distributed": ("Distributed", "init_distributed"),
    "._metrics_log": ("LoggingConfig", "read_metrics"),
    "._recipes": ("RECIPES", "arc2", "cpu", "cpu_sudoku", "seed", "split_model", "tiny"),
    "._run": ("load_trained_model", "read_run_config"),
    ".evaluation": (
        "DEFAULT_KS",
        "Candidate",
        "EvalResult",
        "InputResult",
        "Predictions",
        "Submission",
        "TaskResult",
        "predict",
        "score_predictions",
        "write_eval_files",
    ),
    ".reporting": ("line_chart", "write_report"),
    ".training": (
        "AdamATan2",
        "FailureWeights",
        "ParameterEMA",
        "TrainSummary",
        "TrainingError",
        "load_initial_weights",
        "make_adam_atan2",
        "train",
        "warmup_cosine",
    ),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
