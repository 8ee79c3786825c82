"""The training loop, top to bottom: build, maybe resume, step, log, evaluate, checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.distributed as dist

from .._checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from .._config import TrainConfig
from .._distributed import Distributed
from .._metrics_log import MetricsLog
from .._run import record_store
from ._build import build_trainer
from ._evaluate import evaluate_trainer
from ._progress import Progress
from ._step import NonFiniteLossError, train_step
from ._trainer import Trainer


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
    latest checkpoint (`resume`). Every rank calls this with the same arguments.

    A run that cannot start raises (ValueError for its configuration) before its folder is
    written, and one that fails before training a step leaves the folder as it found it;
    a failure on the way raises TrainingError naming the step and the last good checkpoint.
    """
    if not resume and list_checkpoints(run_dir):
        raise TrainingError(f"{run_dir} already holds a run; pass --resume or choose a new --out")
    with deterministic_algorithms(config.loop.deterministic):
        return _train(config, run_dir, runtime, resume=resume, progress=progress)


def _train(
    config: TrainConfig, run_dir: Path, runtime: Distributed, *, resume: bool, progress: bool
) -> TrainSummary:
    config = record_store(config, run_dir)
    trainer = build_trainer(config, runtime, resume=resume)
    # Plans the first epoch now (the first step would): a global batch larger than the
    # split is refused here, before the run folder is written.
    trainer.sampler.batches_in_epoch()
    if resume:
        step = _resume(trainer, run_dir)
        if step >= config.loop.steps:
            raise ValueError(
                f"{run_dir}: the checkpoint of step {step} leaves nothing to train for "
                f"--steps {config.loop.steps}; give --steps above {step}"
            )
        if runtime.is_main:
            print(f"resumed {run_dir} at step {step}", file=sys.stderr)
    first_step = trainer.step
    before = _Folder.of(run_dir) if runtime.is_main else None
    try:
        return _run(trainer, run_dir, progress=progress)
    except BaseException:
        if before is not None and trainer.step == first_step:
            before.restore(run_dir)
        raise


# cuBLAS's deterministic workspace setting (see PyTorch's reproducibility notes).
CUBLAS_WORKSPACE_CONFIG = ":4096:8"


def prepare_deterministic() -> None:
    """Ask cuBLAS for its deterministic workspace. It reads the variable when it starts,
    at the first matrix product on the GPU, so call this before any CUDA work; a value
    the user set is kept."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)


@contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """With `enabled` (`--deterministic`), PyTorch's deterministic algorithms while the
    block runs (an op without one raises, naming itself); PyTorch's previous setting
    comes back after, so that one run does not change the rest of the process."""
    if not enabled:
        yield
        return
    prepare_deterministic()
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def _run(trainer: Trainer, run_dir: Path, *, progress: bool) -> TrainSummary:
    """Write the run's config, then step, log, evaluate and checkpoint to the end."""
    config, runtime = trainer.config, trainer.runtime
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
    # What the loop is doing, for the message when it fails.
    doing = f"training step {trainer.step + 1}"
    try:
        while trainer.step < loop.steps:
            doing = f"training step {trainer.step + 1}"
            try:
                metrics = train_step(trainer)
            except NonFiniteLossError as error:
                raise TrainingError(f"{error}; stopped. {_kept(run_dir)}") from error
            step, last = trainer.step, trainer.step == loop.steps
            if loop.eval_every is not None and (step % loop.eval_every == 0 or last):
                doing = f"the evaluation at step {step}"
                started = time.perf_counter()
                eval_metrics = evaluate_trainer(trainer, run_dir / "eval" / f"step-{step:08d}")
                if eval_metrics:
                    # Wall time of the evaluation, so that curves against time can add it.
                    eval_metrics["eval/seconds"] = time.perf_counter() - started
                metrics.update(eval_metrics)
            doing = f"logging step {step}"
            if log is not None and (step % config.logging.log_every == 0 or last):
                log.log(step, metrics)
            bar.update(step, metrics)
            if step % loop.checkpoint_every == 0 or last:
                doing = f"the checkpoint of step {step}"
                _save(trainer, run_dir)
    except TrainingError:
        raise
    except (ValueError, RuntimeError, OSError) as error:
        # Not a usage error: the configuration was accepted, the run broke on the way.
        raise TrainingError(
            f"{doing} failed ({type(error).__name__}: {error}). {_kept(run_dir)}"
        ) from error
    finally:
        bar.close()
        if log is not None:
            log.close()
    return TrainSummary(run_dir, trainer.step, metrics, eval_metrics)


@attrs.frozen
class _Folder:
    """What a run folder held before this invocation wrote to it, so that a start that
    trained nothing can be undone without touching what was there before."""

    # The outermost folder this invocation will create (run_dir or a missing parent).
    created: Path | None
    entries: frozenset[str]
    config: bytes | None

    @classmethod
    def of(cls, run_dir: Path) -> _Folder:
        if not run_dir.is_dir():
            created = run_dir
            while not created.parent.exists() and created.parent != created:
                created = created.parent
            return cls(None if created.exists() else created, frozenset(), None)
        config = run_dir / "config.json"
        return cls(
            None,
            frozenset(path.name for path in run_dir.iterdir()),
            config.read_bytes() if config.is_file() else None,
        )

    def restore(self, run_dir: Path) -> None:
        """Remove what was added and put the previous config.json back; best effort, so
        that the error that got us here is the one reported."""
        try:
            if self.created is not None:
                shutil.rmtree(self.created, ignore_errors=True)
                return
            if not run_dir.is_dir():
                return
            for path in run_dir.iterdir():
                if path.name not in self.entries:
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
            if self.config is not None:
                (run_dir / "config.json").write_bytes(self.config)
        except OSError as error:
            warnings.warn(f"{run_dir}: could not undo the failed start ({error})", stacklevel=2)


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
    local = {key: state.pop(key) for key in Trainer.RANK_LOCAL if key in state}
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


def _resume(trainer: Trainer, run_dir: Path) -> int:
    """Load the run's latest checkpoint into `trainer`; return its step."""
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
        for key in ("generator", "torch_rng", "cuda_rng"):
            state.pop(key, None)
    trainer.load_state_dict(state)
    return step


def _to_cpu(value: Any) -> Any:
    if hasattr(value, "cpu"):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value
