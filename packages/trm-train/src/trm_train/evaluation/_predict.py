"""Run a TRM over the test split (every supervision step; the last step's canvases and
q_halt) into the `Predictions` the scorer reads."""

from __future__ import annotations

import math
import sys

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist

from arc_data import ArcStore, iter_test_batches
from trm_model import TRM

from .._batch import model_batch
from ._scoring import Predictions


def predict(
    model: TRM,
    store: ArcStore,
    *,
    batch_size: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
) -> Predictions:
    """Predictions of `model` for every example of `store.test`, sorted by example index.

    `batch_size` is the global batch: each of the `world_size` ranks runs its slice of it.
    In evaluation mode the model halts only at `halt_max_steps`, so every sample runs all
    supervision steps and the last step's `preds` and `q_halt` are kept. With
    `world_size > 1` (an initialised torch.distributed group is needed) the ranks'
    predictions are all-gathered: every rank returns the same, complete Predictions.
    Padding rows are dropped. The model's train/eval mode is restored on return.
    `progress` prints a batch counter to stderr.
    """
    if batch_size <= 0:
        raise ValueError(f"predict: batch_size must be positive, got {batch_size}")
    if world_size > 1 and not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            f"predict with world_size {world_size} needs an initialised torch.distributed group"
        )
    was_training = model.training
    model.eval()
    try:
        examples, tokens, q_halt = _predict_local(
            model, store, batch_size, device, rank, world_size, progress
        )
    finally:
        model.train(was_training)
    if world_size > 1:
        examples, tokens, q_halt = _all_gather(examples, tokens, q_halt, device)
    keep = examples >= 0
    # Rank slices interleave the examples; sorting makes the result independent of the
    # number of ranks.
    order = np.argsort(examples[keep], kind="stable")
    return Predictions(examples[keep][order], tokens[keep][order], q_halt[keep][order])


def _predict_local(
    model: TRM,
    store: ArcStore,
    batch_size: int,
    device: torch.device,
    rank: int,
    world_size: int,
    progress: bool,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """This rank's rows, padding rows (example index -1) included."""
    total = math.ceil(store.test.num_examples / batch_size)
    examples: list[npt.NDArray[np.int64]] = []
    tokens: list[npt.NDArray[np.uint8]] = []
    q_halt: list[npt.NDArray[np.float32]] = []
    batches = iter_test_batches(store.test, batch_size, rank=rank, world_size=world_size)
    with torch.inference_mode():
        for number, batch in enumerate(batches, start=1):
            inputs = model_batch(batch, device)
            carry = model.refill(model.initial_carry(inputs), inputs)
            for _ in range(model.config.halt_max_steps):
                out = model(carry)
                carry = out.carry
            examples.append(batch.example_indices)
            tokens.append(out.preds.to(torch.uint8).cpu().numpy())
            q_halt.append(out.q_halt.float().cpu().numpy())
            if progress:
                print(f"\rpredict: batch {number}/{total}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr, flush=True)
    seq_len = store.metadata.seq_len
    return (
        np.concatenate([np.zeros(0, np.int64), *examples]),
        np.concatenate([np.zeros((0, seq_len), np.uint8), *tokens]),
        np.concatenate([np.zeros(0, np.float32), *q_halt]),
    )


def _all_gather(
    examples: npt.NDArray[np.int64],
    tokens: npt.NDArray[np.uint8],
    q_halt: npt.NDArray[np.float32],
    device: torch.device,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """Every rank's rows, concatenated in rank order. Every rank ran the same number of
    equally sized (padded) batches, so the tensors have the same shape on every rank."""
    # NCCL only moves CUDA tensors; gloo only CPU ones.
    where = device if dist.get_backend() == "nccl" else torch.device("cpu")
    gathered = []
    for array in (examples, tokens, q_halt):
        local = torch.from_numpy(np.ascontiguousarray(array)).to(where)
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local)
        gathered.append(torch.cat(parts).cpu().numpy())
    return gathered[0], gathered[1], gathered[2]
