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
import sys

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
    chosen = torch.device("cpu")
    if use_cuda:
        chosen = torch.device("cuda", cuda_device_index(local_rank, torch.cuda.device_count()))
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
            # Binds the group to this rank's GPU: NCCL sets up its communicator there
            # now, and its barrier need not guess the device (it warns when it must).
            device_id=chosen if use_cuda else None,
        )
    return Distributed(rank=rank, world_size=world_size, device=chosen)


def cuda_device_index(local_rank: int, device_count: int) -> int:
    """The GPU of the rank with this LOCAL_RANK among the `device_count` it sees.

    torchrun on a node whose GPUs every rank sees: the rank's own (LOCAL_RANK). Schedulers
    that give each process one GPU (`CUDA_VISIBLE_DEVICES`) leave LOCAL_RANK as is while
    the process sees only device 0; in general ranks share the visible GPUs in turn.
    """
    if device_count < 1:
        raise ValueError("CUDA is available but no GPU is visible (CUDA_VISIBLE_DEVICES?)")
    return local_rank % device_count


def shutdown_distributed(runtime: Distributed) -> None:
    """Leave the process group together: gloo aborts a process ("terminate called without
    an active exception") when a peer tears the group down while it still uses it.

    Called while an exception propagates (a `finally` or `except` of the caller), this rank
    is leaving early and the group may be broken (a collective timed out, a peer died):
    the barrier's own failure is then dropped, so that the first error is the one
    reported, and the process still exits non-zero with it.
    """
    if not (runtime.enabled and dist.is_initialized()):
        return
    failing = sys.exc_info()[1] is not None
    try:
        dist.barrier()
    except RuntimeError:  # gloo and NCCL errors (DistBackendError) derive from it
        if not failing:
            raise
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
