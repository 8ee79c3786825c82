"""Process-group setup and the collectives the loop needs besides JD's own.

Launched by `torchrun`, every rank trains on its slice of the global batch; the ranks'
JD updates are averaged inside `jd_splits.JacobianDescent` (the model is wrapped in
`DistributedDataParallel`, whose `no_sync` keeps its own reducer out of it). Here: the
all-gather of the puzzle-embedding rows (every rank applies the same sparse update),
the sum of the logged metrics, and joining/leaving the group.

Collectives carry a timeout: a rank that dies or hangs makes the others fail instead of
waiting forever, and torchrun then stops the job with a non-zero exit code.
"""

from __future__ import annotations

import datetime
import os

import attrs
import torch
import torch.distributed as dist
from torch import Tensor


@attrs.frozen
class Distributed:
    rank: int = 0
    world_size: int = 1
    device: torch.device = attrs.field(factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str, *, timeout_s: float = 300.0) -> Distributed:
    """Join the torchrun process group if launched by torchrun, and pick the device.

    `device` is "auto" (CUDA when available), "cpu" or "cuda".
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but CUDA is not available")
    chosen = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return Distributed(rank=rank, world_size=world_size, device=chosen)


def shutdown_distributed(runtime: Distributed) -> None:
    """Leave the process group together: gloo aborts a process ("terminate called without
    an active exception") when a peer tears the group down while it still uses it."""
    if runtime.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_gather_rows(ids: Tensor, grads: Tensor, runtime: Distributed) -> tuple[Tensor, Tensor]:
    """Every rank's (puzzle identifiers, row gradients), concatenated in rank order."""
    if not runtime.enabled:
        return ids, grads
    all_ids = [torch.empty_like(ids) for _ in range(runtime.world_size)]
    all_grads = [torch.empty_like(grads) for _ in range(runtime.world_size)]
    dist.all_gather(all_ids, ids.contiguous())
    dist.all_gather(all_grads, grads.contiguous())
    return torch.cat(all_ids), torch.cat(all_grads)


def all_reduce_sum(values: Tensor, runtime: Distributed) -> Tensor:
    if runtime.enabled:
        values = values.clone()
        dist.all_reduce(values)
    return values
