"""Does JD help TRM? Train every split family at equal optimizer steps over several seeds
on one store, then write a markdown table (mean ± std over seeds) and GD-cosine traces.

    python tools/study.py --store runs/compact.zarr --steps 200 --seeds 0,1,2 \
        --out docs/study/table.md

Runs land in `--runs-dir/<split>-seed<k>`; finished ones (a checkpoint at `--steps`) are
read back instead of retrained, so an interrupted study continues where it stopped (the
run it was in starts over).
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import click

import arc_data
from trm_train import (
    Distributed,
    LoggingConfig,
    TrainConfig,
    line_chart,
    list_checkpoints,
    read_metrics,
    tiny,
    train,
)

# The families of the write-up; pixel-wise ones are grouped into --groups buckets.
SPLITS = (
    "sum",
    "lm_loss_vs_q_halt_loss",
    "iwrm_q_halt_in",
    "pixelwise_q_halt_in",
    "iwrm_pixelwise_q_halt_in",
    "stack_internal_losses",
    "stack_internal_and_sum",
    "stack_supervisions",
    "stack_supervisions_and_iwrm",
)
COLUMNS = (
    "pass@1",
    "pass@2",
    "train exact",
    "train token acc",
    "train loss",
    "GD cosine",
    "step s",
)


def study_config(
    store: Path, split: str, *, seed: int, steps: int, batch_size: int, groups: int
) -> TrainConfig:
    meta = arc_data.open_store(store).metadata
    config = tiny(meta.num_puzzle_identifiers, meta.seq_len, store, split)
    objective = attrs.evolve(config.objective, groups=groups if "pixelwise" in split else None)
    return attrs.evolve(
        config,
        objective=objective,
        data=attrs.evolve(config.data, global_batch_size=batch_size),
        loop=attrs.evolve(
            config.loop, steps=steps, seed=seed, eval_every=steps, checkpoint_every=steps
        ),
        logging=LoggingConfig(wandb="disabled"),
    )


def summarise(run_dir: Path) -> dict[str, Any]:
    """The figures of one finished run, from its metrics.jsonl: evaluation at the last
    step; training accuracy and loss averaged over the last fifth of the steps."""
    rows = read_metrics(run_dir)
    tail = rows[-max(1, len(rows) // 5) :]
    exact = [r["train/exact_accuracy"] for r in tail if "train/exact_accuracy" in r]
    tokens = [r["train/accuracy"] for r in tail if "train/accuracy" in r]
    cosines = [r["jd/cosine_to_mean"] for r in rows if _finite(r.get("jd/cosine_to_mean"))]
    return {
        "pass@1": rows[-1].get("eval/pass@1", math.nan),
        "pass@2": rows[-1].get("eval/pass@2", math.nan),
        "train exact": statistics.fmean(exact) if exact else math.nan,
        "train token acc": statistics.fmean(tokens) if tokens else math.nan,
        "train loss": statistics.fmean(r["train/loss"] for r in tail),
        "GD cosine": statistics.fmean(cosines) if cosines else math.nan,
        "step s": statistics.median(r["train/step_seconds"] for r in rows),
        "cosine trace": [
            (r["step"], r["jd/cosine_to_mean"]) for r in rows if _finite(r.get("jd/cosine_to_mean"))
        ],
    }


def cosine_traces(
    results: dict[str, list[dict[str, Any]]], limit: int = 6
) -> tuple[dict[str, list[tuple[float, float]]], list[str]]:
    """Seed 0's GD-cosine traces to plot: the `limit` most bent among the splits whose JD
    update ever left the mean gradient (all traces when none did), and the splits that
    stayed at 1."""
    traces = {s: runs[0]["cosine trace"] for s, runs in results.items() if runs[0]["cosine trace"]}
    bent = [s for s, t in traces.items() if min(c for _, c in t) < 1 - 1e-6]
    ranked = sorted(bent, key=lambda s: statistics.fmean(c for _, c in traces[s]))
    plotted = ranked[:limit] or list(traces)[:limit]
    return {s: traces[s] for s in plotted}, [s for s in traces if s not in bent]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _cell(values: list[float], digits: int) -> str:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "n/a"
    spread = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {spread:.{digits}f}"


def results_table(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| split | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for split, runs in results.items():
        cells = [_cell([run[c] for run in runs], 4 if c == "GD cosine" else 3) for c in COLUMNS]
        lines.append(f"| `{split}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@click.command()
@click.option(
    "--store",
    type=click.Path(path_type=Path, exists=True),
    required=True,
    help="A store built by `arc-data build` (the compact 10 x 10 one).",
)
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--seeds", default="0,1,2", show_default=True, help="Comma-separated seeds.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option(
    "--groups",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Buckets of the pixel-wise splits.",
)
@click.option("--splits", default=",".join(SPLITS), show_default=True)
@click.option(
    "--runs-dir", type=click.Path(path_type=Path), default=Path("runs/study"), show_default=True
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("docs/study/table.md"),
    show_default=True,
    help="The markdown table; the plot goes beside it.",
)
def main(
    store: Path,
    steps: int,
    seeds: str,
    batch_size: int,
    groups: int,
    splits: str,
    runs_dir: Path,
    out: Path,
) -> None:
    """Train each split for each seed at equal steps; write the table and the traces."""
    seed_list = [int(s) for s in seeds.split(",")]
    results: dict[str, list[dict[str, Any]]] = {}
    start = time.perf_counter()
    # Seed-major, so that a study cut short still has every split at the first seeds.
    for seed in seed_list:
        for split in splits.split(","):
            run_dir = runs_dir / f"{split}-seed{seed}"
            if not any(step == steps for step, _ in list_checkpoints(run_dir)):
                print(
                    f"[{time.perf_counter() - start:6.0f} s] {split} seed {seed}", file=sys.stderr
                )
                config = study_config(
                    store, split, seed=seed, steps=steps, batch_size=batch_size, groups=groups
                )
                # Runs save only at their last step: anything else there is an unfinished
                # or differently sized run, trained again from scratch.
                shutil.rmtree(run_dir, ignore_errors=True)
                train(config, run_dir, Distributed(), progress=False)
            results.setdefault(split, []).append(summarise(run_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    plot = out.with_name(out.stem + "-gd-cosine.png")
    plotted, flat = cosine_traces(results)
    line_chart(plotted, plot, title="GD cosine (seed 0)", ylabel="cosine(JD update, mean gradient)")
    raw = {
        split: [{k: v for k, v in run.items() if k != "cosine trace"} for run in runs]
        for split, runs in results.items()
    }
    (out.with_suffix(".json")).write_text(json.dumps(raw, indent=2) + "\n")
    command = " ".join(["python tools/study.py", *sys.argv[1:]])
    caption = (
        f"GD cosine per step, seed 0: {', '.join(f'`{s}`' for s in plotted)}"
        + (f"; {', '.join(f'`{s}`' for s in flat)} stayed at 1" if flat else "")
        + "."
    )
    out.write_text(
        f"<!-- generated by: {command} -->\n\n{results_table(results)}\n\n"
        f"![GD cosine]({plot.name})\n\n{caption}\n"
    )
    print(f"wrote {out} in {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
