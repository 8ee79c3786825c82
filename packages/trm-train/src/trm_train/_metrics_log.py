"""Metrics: always `metrics.jsonl` in the run directory, plus W&B when it works.

W&B runs offline by default (no network needed; `wandb sync` uploads later). Any W&B
failure, at start or while logging, prints one warning and training goes on.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Literal

import attrs

WandbMode = Literal["online", "offline", "disabled"]


@attrs.frozen
class LoggingConfig:
    wandb: WandbMode = "offline"
    wandb_project: str = "trm-jd"
    run_name: str | None = None
    log_every: int = 1


class MetricsLog:
    """One JSON object per logged step in `metrics.jsonl`; the same to W&B."""

    def __init__(
        self,
        run_dir: Path,
        config: LoggingConfig,
        run_config: dict[str, Any],
        *,
        keep_through: int = 0,
    ) -> None:
        """`keep_through`: the step the run (re)starts from; rows logged after it (by a run
        killed after its last checkpoint, or an older run in the directory) are dropped,
        so that each step appears once."""
        self.path = run_dir / "metrics.jsonl"
        run_dir.mkdir(parents=True, exist_ok=True)
        kept = [row for row in read_metrics(run_dir) if row["step"] <= keep_through]
        self.path.write_text("".join(json.dumps(row) + "\n" for row in kept), encoding="utf-8")
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._wandb: Any = None
        if config.wandb != "disabled":
            self._wandb = _start_wandb(run_dir, config, run_config)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record, allow_nan=True) + "\n")
        self._file.flush()
        if self._wandb is not None:
            try:
                self._wandb.log(record, step=step)
            except Exception as error:  # W&B must never stop training.
                warnings.warn(f"W&B logging failed, continuing without it: {error}", stacklevel=2)
                self._wandb = None

    def close(self) -> None:
        self._file.close()
        if self._wandb is not None:
            try:
                self._wandb.finish()
            except Exception as error:
                warnings.warn(f"W&B finish failed: {error}", stacklevel=2)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _start_wandb(run_dir: Path, config: LoggingConfig, run_config: dict[str, Any]) -> Any:
    try:
        import wandb

        return wandb.init(
            project=config.wandb_project,
            name=config.run_name or run_dir.name,
            dir=str(run_dir),
            mode=config.wandb,
            config=run_config,
            resume="allow",
            id=_run_id(run_dir),
            settings=wandb.Settings(silent=True, console="off"),
        )
    except Exception as error:
        warnings.warn(f"W&B could not start ({error}); logging to metrics.jsonl only", stacklevel=2)
        return None


def _run_id(run_dir: Path) -> str:
    """A stable W&B id per run directory, so a resumed run continues the same W&B run."""
    id_file = run_dir / "wandb-run-id"
    if id_file.is_file():
        return id_file.read_text().strip()
    import secrets

    run_id = secrets.token_hex(4)
    id_file.write_text(run_id)
    return run_id


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
