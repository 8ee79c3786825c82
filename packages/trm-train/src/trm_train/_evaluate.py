"""Evaluation of a run in progress: the EMA weights on the store's test split."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

from ._eval_files import write_eval_files
from ._predict import predict
from ._scoring import score_predictions
from ._trainer import Trainer


def evaluate_trainer(trainer: Trainer, out_dir: Path | None) -> dict[str, Any]:
    """Predict the test split on every rank (each its slice), score on rank 0, write the
    submission, per-task results and pictures to `out_dir`; `eval/` metrics on rank 0,
    an empty dict elsewhere and when the store holds no test split."""
    store, runtime = trainer.store, trainer.runtime
    if store.test.num_examples == 0:
        return {}
    averaged = trainer.ema.applied() if trainer.ema is not None else nullcontext()
    with averaged:
        predictions = predict(
            trainer.model,
            store,
            batch_size=trainer.config.loop.eval_batch_size * runtime.world_size,
            device=runtime.device,
            rank=runtime.rank,
            world_size=runtime.world_size,
        )
    if not runtime.is_main:
        return {}
    result = score_predictions(store, predictions)
    if out_dir is not None:
        write_eval_files(result, store, out_dir)
    return {f"eval/{key}": value for key, value in result.metrics.items()}
