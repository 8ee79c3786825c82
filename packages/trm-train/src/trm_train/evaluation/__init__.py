"""Evaluation: a model's predictions on a store's test split, scored by the official ARC
rule (pass@K over the votes of the augmentations), with the Kaggle submission, per-task
results and pictures; and the `trm-eval` command (`_eval_cli`), which scores a run's
checkpoint.

Exports `predict` (model -> `Predictions`), `score_predictions` (`Predictions` ->
`EvalResult`: metrics, `Submission`, `TaskResult` / `InputResult` / `Candidate`),
`write_eval_files`, and `evaluate_model` (all three in one call: every rank predicts,
rank 0 scores and writes). It never imports the training package: scoring a checkpoint
loads no optimizer or training loop.
"""

from ._eval_files import write_eval_files
from ._evaluate import evaluate_model
from ._predict import predict
from ._scoring import (
    DEFAULT_KS,
    Candidate,
    EvalResult,
    InputResult,
    Predictions,
    Submission,
    TaskResult,
    score_predictions,
)

__all__ = [
    "DEFAULT_KS",
    "Candidate",
    "EvalResult",
    "InputResult",
    "Predictions",
    "Submission",
    "TaskResult",
    "evaluate_model",
    "predict",
    "score_predictions",
    "write_eval_files",
]
