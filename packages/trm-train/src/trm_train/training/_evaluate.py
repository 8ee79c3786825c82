"""Evaluation during training: the run's EMA weights, scored like `trm-eval` scores them."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

from ..evaluation import evaluate_model
from ._trainer import Trainer


def evaluate_trainer(trainer: Trainer, out_dir: Path | None) -> dict[str, Any]:
    """The EMA weights of a run in progress on its store's test split: `eval/` metrics on
    rank 0, an empty dict elsewhere and when the store holds no test split."""
    if trainer.store.test.num_examples == 0:
        return {}
    averaged = trainer.ema.applied() if trainer.ema is not None else nullcontext()
    with averaged:
        result = evaluate_model(
            trainer.model,
            trainer.store,
            trainer.runtime,
            batch_size=trainer.config.loop.eval_batch_size,
            out_dir=out_dir,
        )
    if result is None:
        return {}
    return {f"eval/{key}": value for key, value in result.metrics.items()}
