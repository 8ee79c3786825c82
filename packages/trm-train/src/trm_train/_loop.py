"""The training loop, top to bottom: build, maybe resume, step, log, evaluate, checkpoint."""

from __future__ import annotations

import hashlib
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.distributed as dist

from ._checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from ._config import TrainConfig
from ._distributed import Distributed
from ._evaluate import evaluate_trainer
from ._metrics_log import MetricsLog
from ._progress import Progress
from ._step import NonFiniteLossError, train_step
from ._trainer import Trainer, build_trainer


class TrainingError(RuntimeError):
    """The run cannot start or cannot go on; the message says why and what was kept."""


@attrs.frozen
class TrainSummary:
    run_dir: Path
    steps: int
    last_metrics: dict[str, Any]
    eval_metrics: dict[str, Any]


def train(
    config: TrainConfig,
    run_dir: Path,
    runtime: Distributed,
    *,
    resume: bool = False,
    progress: bool = True,
) -> TrainSummary:
    """Train until `config.loop.steps` optimizer steps, from scratch or from the run's
    latest checkpoint (`resume`). Every rank calls this with the same arguments."""
    trainer = build_trainer(config, runtime, resume=resume)
    if resume:
        _resume(trainer, run_dir)
    elif list_checkpoints(run_dir):
        raise TrainingError(f"{run_dir} already holds a run; pass --resume or choose a new --out")
    if runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    log = (
        MetricsLog(run_dir, config.logging, config.to_dict(), keep_through=trainer.step)
        if runtime.is_main
        else None
    )
    bar = Progress(config.loop.steps, start=trainer.step, enabled=progress and runtime.is_main)
    loop = config.loop
    metrics: dict[str, Any] = {}
    eval_metrics: dict[str, Any] = {}
    try:
        while trainer.step < loop.steps:
            try:
                metrics = train_step(trainer)
            except NonFiniteLossError as error:
                raise TrainingError(f"{error}; stopped. {_kept(run_dir)}") from error
            step, last = trainer.step, trainer.step == loop.steps
            if loop.eval_every is not None and (step % loop.eval_every == 0 or last):
                started = time.perf_counter()
                eval_metrics = evaluate_trainer(trainer, run_dir / "eval" / f"step-{step:08d}")
                if eval_metrics:
                    # Wall time of the evaluation, so that curves against time can add it.
                    eval_metrics["eval/seconds"] = time.perf_counter() - started
                metrics.update(eval_metrics)
            if log is not None and (step % config.logging.log_every == 0 or last):
                log.log(step, metrics)
            bar.update(step, metrics)
            if step % loop.checkpoint_every == 0 or last:
                _save(trainer, run_dir)
    finally:
        bar.close()
        if log is not None:
            log.close()
    return TrainSummary(run_dir, trainer.step, metrics, eval_metrics)


def _kept(run_dir: Path) -> str:
    found = list_checkpoints(run_dir)
    if not found:
        return "No checkpoint was written before."
    step, path = found[-1]
    return f"The last good checkpoint is step {step}: {path}"


def _save(trainer: Trainer, run_dir: Path) -> None:
    """Rank 0 writes the shared state and every rank's own part (generators, sampler
    position, carry), gathered, so that a resume on as many ranks is exact."""
    state = trainer.state_dict()
    local = {key: state.pop(key) for key in Trainer.RANK_LOCAL}
    local["weights_digest"] = _weights_digest(trainer)
    runtime = trainer.runtime
    if runtime.enabled:
        gathered: list[Any] = [None] * runtime.world_size
        dist.all_gather_object(gathered, _to_cpu(local))
        state["ranks"] = gathered
    else:
        state["ranks"] = [local]
    digests = {part["weights_digest"] for part in state["ranks"]}
    if len(digests) > 1:
        raise TrainingError(
            f"the ranks' weights differ at step {trainer.step} (a bug, or a nondeterministic "
            f"kernel); not saving. {_kept(run_dir)}"
        )
    if runtime.is_main:
        save_checkpoint(run_dir, trainer.step, state, keep=trainer.config.loop.keep_checkpoints)
    if runtime.enabled:
        dist.barrier()


def _weights_digest(trainer: Trainer) -> str:
    """A hash of the weights and the puzzle table, equal on every rank of a healthy run."""
    digest = hashlib.blake2b(digest_size=16)
    for tensor in [*trainer.model.parameters(), trainer.puzzle_optimizer.table]:
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _resume(trainer: Trainer, run_dir: Path) -> None:
    try:
        step, state = load_checkpoint(run_dir)
    except FileNotFoundError as error:
        raise TrainingError(str(error)) from error
    saved_model = state["config"]["model"]
    ours = trainer.config.to_dict()["model"]
    for key in ("num_puzzle_identifiers", "seq_len"):
        if saved_model[key] != ours[key]:
            raise TrainingError(
                f"{trainer.config.data.store}: {key} is {ours[key]} in the store, "
                f"{saved_model[key]} in the checkpoint of step {step} in {run_dir}"
            )
    ranks = state.pop("ranks")
    world_size = trainer.runtime.world_size
    if len(ranks) == world_size:
        state.update(ranks[trainer.runtime.rank])
    else:
        warnings.warn(
            f"the checkpoint was written by {len(ranks)} ranks, this run has {world_size}: the "
            "ACT carry and the random generators restart, so the run is not bit-exact",
            stacklevel=2,
        )
        state.update({**ranks[0], "carry": None})
        state.pop("generator")
        state.pop("torch_rng")
    trainer.load_state_dict(state)
    if trainer.runtime.is_main:
        print(f"resumed {run_dir} at step {step}", file=sys.stderr)


def _to_cpu(value: Any) -> Any:
    if hasattr(value, "cpu"):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value
