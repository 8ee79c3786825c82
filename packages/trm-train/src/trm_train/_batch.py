"""arc-data's numpy batches as trm-model's tensor batches."""

from __future__ import annotations

import torch

import arc_data
import trm_model


def model_batch(batch: arc_data.Batch, device: torch.device) -> trm_model.Batch:
    """The batch's tokens and identifiers as long tensors on `device`."""
    return trm_model.Batch(
        inputs=torch.from_numpy(batch.inputs).to(device, torch.long),
        labels=torch.from_numpy(batch.labels).to(device, torch.long),
        puzzle_identifiers=torch.from_numpy(batch.puzzle_identifiers).to(device, torch.long),
    )
