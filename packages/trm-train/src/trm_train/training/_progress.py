"""The training progress bar: loss, exact accuracy and GD cosine on one line."""

from __future__ import annotations

import math
import sys
from typing import Any

import click


def describe(metrics: dict[str, Any]) -> str:
    cosine = metrics.get("jd/cosine_to_mean", math.nan)
    parts = [
        f"loss {metrics.get('train/loss', math.nan):.4f}",
        f"exact {metrics.get('train/exact_accuracy', math.nan):.3f}",
        "cos -" if not math.isfinite(cosine) else f"cos {cosine:.3f}",
        f"{metrics.get('train/examples_per_second', math.nan):.0f} ex/s",
    ]
    if "eval/pass@2" in metrics:
        parts.append(f"pass@2 {metrics['eval/pass@2']:.3f}")
    return " | ".join(parts)


class Progress:
    """A click progress bar on a terminal; elsewhere (logs, CI) one plain line about
    every tenth of the run."""

    def __init__(self, total: int, *, start: int, enabled: bool) -> None:
        self._enabled = enabled
        self._total = total
        self._last_line = start
        self._tty = sys.stderr.isatty()
        self._bar: Any = None
        if enabled and self._tty:
            self._bar = click.progressbar(
                length=total, label="training", file=sys.stderr, show_pos=True
            )
            self._bar.__enter__()
            self._bar.update(start)

    def update(self, step: int, metrics: dict[str, Any]) -> None:
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.label = describe(metrics)
            self._bar.update(step - self._bar.pos)
        elif step - self._last_line >= max(1, self._total // 10) or step == self._total:
            self._last_line = step
            print(f"step {step}/{self._total} | {describe(metrics)}", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
