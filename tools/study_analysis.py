"""The study's statistics, tables and plots, computed from the run records alone.

Each arm is compared with `sum` (gradient descent) seed by seed: the paired differences
over seeds get a 95% percentile-bootstrap confidence interval, and a difference is called
real only when that interval excludes 0. Equal-time figures read each run at the
training seconds its own seed's `sum` run needed for all its steps, time being steps x
the arm's seconds per step: its timing probe's (every arm timed under the same
conditions, after the grid), else the median over its seeds of each run's median.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from study_protocol import ARMS, CONTROLS

Record = dict[str, Any]
BOOTSTRAP_SAMPLES = 10_000
EQUAL_TIME_METRICS = ("pass@1 at GD time", "LM loss at GD time")
LOW_COSINE = 0.9
LOW_COSINE_SHARE = f"GD cosine < {LOW_COSINE:g}"


def load_records(records_dir: Path) -> list[Record]:
    return [json.loads(path.read_text()) for path in sorted(records_dir.glob("*.json"))]


def _finite(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _mean_or_inf(values: list[float | None]) -> float:
    """The mean; inf when a value is missing (a non-finite loss: the run diverged)."""
    finite = [v for v in values if v is not None]
    return statistics.fmean(finite) if len(finite) == len(values) else math.inf


def lm_losses(record: Record) -> list[float | None]:
    """The per-step LM loss: the term every split shares (the total `loss` adds the
    halting loss for ACT splits and none for `stack_*`), so it compares across arms."""
    losses: list[float | None] = record["train"].get("lm_loss", record["train"]["loss"])
    return losses


def loss_auc(record: Record, fraction: float = 1.0, key: str = "lm_loss") -> float:
    """Mean training loss (`lm_loss`, or the total `loss` each run minimises) over the
    first `fraction` of the steps; inf once it diverged."""
    curve = lm_losses(record) if key == "lm_loss" else record["train"][key]
    losses = curve[: max(1, round(fraction * record["steps"]))]
    return _mean_or_inf(losses)


def tuned_sgd_lr(
    records_dir: Path, family: str, arm: str, seed: int, lrs: tuple[float, ...]
) -> float | None:
    """The SGD rate of the first seed's sweep with the lowest training-loss AUC over the
    first half of the steps; None until every rate of the sweep has a record."""
    sweep = {
        r["lr"]: loss_auc(r, 0.5, key="loss")
        for r in load_records(records_dir)
        if (r["family"], r["optimizer"], r["arm"], r["seed"]) == (family, "sgd", arm, seed)
        and r["lr"] in lrs
    }
    if not set(lrs) <= set(sweep):
        return None
    best: float = min(sweep, key=lambda lr: (sweep[lr], lr))
    return best


def load_probes(timing_dir: Path) -> dict[tuple[str, str, str], float]:
    """(family, optimizer, arm) -> seconds per step measured by the arm's timing probe."""
    probes = [json.loads(path.read_text()) for path in sorted(timing_dir.glob("*.json"))]
    return {(p["family"], p["optimizer"], p["arm"]): p["seconds_per_step"] for p in probes}


def run_step_time(record: Record) -> float:
    return statistics.median(_finite(record["train"]["step_seconds"]))


def step_time(record: Record) -> float:
    """Seconds per step of the run's arm, set by `cells` (its probe's, or the median over
    the arm's seeds of each run's median), else the run's own. Time is steps x this, so
    that a load on the shared machine during some runs does not move them along the axis."""
    pooled: float | None = record.get("arm_step_seconds")
    return pooled if pooled is not None else run_step_time(record)


def at_seconds(record: Record, budget: float) -> tuple[float, float]:
    """(held-out pass@1, training loss) of a run read at `budget` training seconds: its
    last evaluation within the budget (0 before the first), and the mean loss of the
    last tenth of the steps done by then."""
    done = min(record["steps"], math.floor(budget / step_time(record) * 1.001))
    scores = [e["pass@1"] for e in record["evals"] if e["step"] <= done]
    window = lm_losses(record)[max(0, done - max(1, done // 10)) : max(1, done)]
    loss = _mean_or_inf(window)
    return (scores[-1] if scores else 0.0), loss


def never_solved(record: Record) -> float:
    """Share of the items (tasks, or Sudoku puzzles) no evaluation of the run solved."""
    solved = set().union(*(set(e["solved"]) for e in record["evals"]))
    return 1.0 - len(solved) / int(record["items"])


def steps_to(record: Record, score: float) -> int | None:
    """First evaluated step whose pass@1 reaches `score`."""
    return next((e["step"] for e in record["evals"] if e["pass@1"] >= score), None)


def truncate(record: Record, steps: int) -> Record:
    """The run as it stood at `steps`: its first steps and the evaluations up to there
    (the same as a shorter run of the same seed, under a constant learning rate)."""
    if not any(e["step"] == steps for e in record["evals"]):
        raise ValueError(f"{record['arm']} seed {record['seed']} has no evaluation at {steps}")
    train = {name: values[:steps] for name, values in record["train"].items()}
    evals = [e for e in record["evals"] if e["step"] <= steps]
    return {**record, "steps": steps, "train": train, "evals": evals}


def run_metrics(record: Record, gd: Record) -> dict[str, float]:
    """Every metric of one run against `gd`, the same seed's `sum` run of the same
    optimizer: equal-step figures against `gd` cut at this run's length, equal-time ones
    at the seconds `gd` took for all its steps."""
    held_at_gd_time, loss_at_gd_time = at_seconds(record, gd["steps"] * step_time(gd))
    gd_final = truncate(gd, record["steps"])["evals"][-1]["pass@1"]
    reached = steps_to(record, gd_final / 2) if gd_final > 0 else None
    train = record["train"]
    return {
        "pass@1": record["evals"][-1]["pass@1"],
        "pass@2": record["evals"][-1]["pass@2"],
        "LM loss AUC": loss_auc(record),
        "never solved": never_solved(record),
        "steps to half GD": math.nan if reached is None else float(reached),
        "pass@1 at GD time": held_at_gd_time,
        "LM loss at GD time": loss_at_gd_time,
        "GD cosine": statistics.fmean(_finite(train["gd_cosine"]) or [math.nan]),
        "conflict share": statistics.fmean(_finite(train["conflict_share"]) or [math.nan]),
        # The write-up saw the cosine "almost always 1" with rare dips: how rare here.
        LOW_COSINE_SHARE: statistics.fmean(
            [c < LOW_COSINE for c in _finite(train["gd_cosine"])] or [math.nan]
        ),
        "step s": run_step_time(record),
    }


def reference_metrics(gd: Record, steps: int) -> dict[str, float]:
    """GD's side of a pair with a run of `steps` steps: its equal-step figures at that
    step, its equal-time figures at the end of its run."""
    return {
        **run_metrics(truncate(gd, steps), gd),
        **{k: v for k, v in run_metrics(gd, gd).items() if k in EQUAL_TIME_METRICS},
    }


def bootstrap_ci(values: list[float], seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95% percentile-bootstrap interval of the mean of `values`."""
    data = np.asarray(values, dtype=float)
    if len(data) < 2:
        return float(data.mean()), math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), (BOOTSTRAP_SAMPLES, len(data)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(data.mean()), float(low), float(high)


def cells(
    records: list[Record], probes: dict[tuple[str, str, str], float] | None = None
) -> dict[tuple[str, str], dict[str, list[Record]]]:
    """(family, optimizer) -> arm -> records sorted by seed; SGD keeps the tuned rate's
    runs (the other rates are the sweep, reported apart). Each record gets the seconds per
    step of its arm's time axis (`arm_step_seconds`) and where they came from."""
    grouped: dict[tuple[str, str], dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in sorted(records, key=lambda r: r["seed"]):
        grouped[r["family"], r["optimizer"]][r["arm"]].append(r)
    for (_, optimizer), arms in grouped.items():
        if optimizer != "sgd":
            continue
        for arm, runs in arms.items():
            first = runs[0]["seed"]
            rates = {r["lr"]: loss_auc(r, 0.5, key="loss") for r in runs if r["seed"] == first}
            best = min(rates, key=lambda lr: (rates[lr], lr))
            arms[arm] = [r for r in runs if r["lr"] == best]
    for (family, optimizer), arms in grouped.items():
        for arm, runs in arms.items():
            probe = (probes or {}).get((family, optimizer, arm))
            seconds = probe if probe is not None else statistics.median(map(run_step_time, runs))
            for r in runs:
                r["arm_step_seconds"] = seconds
                r["step_time_source"] = "probe" if probe is not None else "runs"
    return grouped


def compare(arms: dict[str, list[Record]]) -> dict[str, dict[str, dict[str, Any]]]:
    """arm -> metric -> {"values", "mean", "ci", "delta", "delta_ci", "pairs"}: each arm
    against `sum` over the seeds both have."""
    gd_by_seed = {r["seed"]: r for r in arms.get("sum", [])}
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for arm, runs in arms.items():
        paired = [(r, gd_by_seed[r["seed"]]) for r in runs if r["seed"] in gd_by_seed]
        if not paired:
            continue
        metrics = [run_metrics(r, gd) for r, gd in paired]
        gd_metrics = [reference_metrics(gd, r["steps"]) for r, gd in paired]
        table[arm] = {}
        for name in metrics[0]:
            values = [m[name] for m in metrics]
            pairs = [
                (m[name], g[name])
                for m, g in zip(metrics, gd_metrics, strict=True)
                if math.isfinite(m[name]) and math.isfinite(g[name])
            ]
            mean, low, high = bootstrap_ci(_finite(list(values)) or [math.nan])
            delta = bootstrap_ci([a - b for a, b in pairs] or [math.nan])
            table[arm][name] = {
                "values": values,
                "mean": mean,
                "ci": (low, high),
                "delta": delta[0],
                "delta_ci": delta[1:],
                "pairs": len(pairs),
            }
    return table


def compare_to_controls(arms: dict[str, list[Record]]) -> dict[str, dict[str, dict[str, Any]]]:
    """JD arm -> metric -> {"control", "delta", "delta_ci", "pairs"}: the arm minus its GD
    control (CONTROLS: the same objectives and model, averaged) seed by seed, at equal
    steps, each run's metrics taken against its own seed's `sum` run as in `compare`.
    Separates what UPGrad does from what the split's loss and model do."""
    gd_by_seed = {r["seed"]: r for r in arms.get("sum", [])}
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for arm, control in CONTROLS.items():
        controls = {r["seed"]: r for r in arms.get(control, [])}
        for r in arms.get(arm, []):
            if r["seed"] in controls and r["steps"] != controls[r["seed"]]["steps"]:
                raise ValueError(f"{arm} and {control} ran different steps for seed {r['seed']}")
        paired = [
            (
                run_metrics(r, gd_by_seed[r["seed"]]),
                run_metrics(controls[r["seed"]], gd_by_seed[r["seed"]]),
            )
            for r in arms.get(arm, [])
            if r["seed"] in controls and r["seed"] in gd_by_seed
        ]
        if not paired:
            continue
        table[arm] = {}
        for name in paired[0][0]:
            differences = [a[name] - b[name] for a, b in paired if math.isfinite(a[name] - b[name])]
            delta = bootstrap_ci(differences or [math.nan])
            table[arm][name] = {
                "control": control,
                "delta": delta[0],
                "delta_ci": delta[1:],
                "pairs": len(differences),
            }
    return table


def arm_order(names: list[str]) -> list[str]:
    known = [a.name for a in ARMS]
    return sorted(names, key=lambda n: known.index(n) if n in known else len(known))
