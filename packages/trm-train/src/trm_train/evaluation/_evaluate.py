"""Evaluation of a model on a store's test split: predict on every rank, score and write
on rank 0. `trm-eval` runs it on a checkpoint, the training loop on the run's weights."""

from __future__ import annotations

from pathlib import Path

import arc_data
import trm_model

from .._distributed import Distributed
from ._eval_files import write_eval_files
from ._predict import predict
from ._scoring import EvalResult, score_predictions


def evaluate_model(
    model: trm_model.TRM,
    store: arc_data.ArcStore,
    runtime: Distributed,
    *,
    batch_size: int,
    out_dir: Path | None,
    num_pictures: int = 10,
    progress: bool = False,
) -> EvalResult | None:
    """Every rank predicts its slice (`batch_size` per rank) and rank 0 scores and writes
    the submission, per-task results and pictures to `out_dir`. The result on rank 0,
    None elsewhere."""
    predictions = predict(
        model,
        store,
        batch_size=batch_size * runtime.world_size,
        device=runtime.device,
        rank=runtime.rank,
        world_size=runtime.world_size,
        progress=progress and runtime.is_main,
    )
    if not runtime.is_main:
        return None
    result = score_predictions(store, predictions)
    if out_dir is not None:
        write_eval_files(result, store, out_dir, num_pictures=num_pictures)
    return result
