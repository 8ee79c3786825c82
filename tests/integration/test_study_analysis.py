"""tools/study_analysis.py on hand-made run records: every metric against a hand-computed
value, the paired bootstrap, the SGD rate choice and the equal-time reading."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


@pytest.fixture(scope="module")
def analysis() -> ModuleType:
    sys.path.insert(0, str(TOOLS))
    try:
        return importlib.import_module("study_analysis")
    finally:
        sys.path.remove(str(TOOLS))


def record(
    arm: str,
    seed: int,
    losses: list[float | None],
    step_seconds: float,
    evals: list[tuple[int, float, list[str]]],
    *,
    optimizer: str = "adam_atan2",
    lr: float | None = None,
) -> dict[str, Any]:
    steps = len(losses)
    return {
        "family": "f",
        "optimizer": optimizer,
        "arm": arm,
        "split": arm,
        "seed": seed,
        "lr": lr,
        "steps": steps,
        "items": 4,
        "train": {
            "loss": losses,
            "step_seconds": [step_seconds] * steps,
            "gd_cosine": [1.0 if arm == "sum" else 0.5] * steps,
            "conflict_share": [0.0 if arm == "sum" else 0.25] * steps,
        },
        "evals": [
            {
                "step": step,
                "train_seconds": step * step_seconds,
                "pass@1": score,
                "pass@2": score,
                "solved": solved,
            }
            for step, score, solved in evals
        ],
    }


def test_metrics_of_one_run_against_hand_computed_values(analysis: ModuleType) -> None:
    gd = record("sum", 0, [4.0, 3.0, 2.0, 1.0], 1.0, [(2, 0.2, ["a"]), (4, 0.4, ["b"])])
    jd = record("jd", 0, [4.0, 2.0, 2.0, 0.0], 2.0, [(2, 0.1, ["a"]), (4, 0.6, ["a", "c"])])
    jd["train"]["gd_cosine"] = [1.0, 0.5, 0.5, 0.0]
    metrics = analysis.run_metrics(jd, gd)
    assert metrics["pass@1"] == 0.6
    assert metrics["LM loss AUC"] == 2.0  # (4 + 2 + 2 + 0) / 4
    assert metrics["never solved"] == 0.5  # a and c of 4 items
    assert metrics["steps to half GD"] == 4  # half of GD's 0.4 is reached at step 4
    # GD took 4 s; in 4 s the JD run did 2 steps: its step-2 evaluation and the mean loss
    # of the last tenth (one step) of those 2 steps.
    assert metrics["pass@1 at GD time"] == 0.1
    assert metrics["LM loss at GD time"] == 2.0
    assert (metrics["GD cosine"], metrics["conflict share"], metrics["step s"]) == (0.5, 0.25, 2.0)
    assert metrics["GD cosine < 0.9"] == 0.75
    assert analysis.run_metrics(gd, gd)["never solved"] == 0.5  # a, b


def test_a_diverged_run_has_infinite_loss_auc(analysis: ModuleType) -> None:
    run = record("sum", 0, [4.0, None, None, None], 1.0, [(4, 0.0, [])])
    assert analysis.loss_auc(run) == math.inf
    assert analysis.loss_auc(run, 0.25) == 4.0


def test_bootstrap_interval(analysis: ModuleType) -> None:
    mean, low, high = analysis.bootstrap_ci([1.0, 1.0, 1.0])
    assert (mean, low, high) == (1.0, 1.0, 1.0)
    mean, low, high = analysis.bootstrap_ci([0.0, 1.0, 2.0, 3.0, 4.0])
    assert mean == 2.0 and 0.0 <= low < 2.0 < high <= 4.0
    # The resampled means are averages of 5 draws: the interval sits well inside [0, 4].
    assert 0.6 < low < 1.2 and 2.8 < high < 3.4
    assert analysis.bootstrap_ci([0.0, 1.0, 2.0, 3.0, 4.0]) == (mean, low, high)  # seeded


def test_paired_comparison_calls_a_constant_gain_real(analysis: ModuleType) -> None:
    arms: dict[str, list[dict[str, Any]]] = {"sum": [], "jd": []}
    for seed, base in enumerate((0.2, 0.3, 0.25, 0.35, 0.3)):
        arms["sum"].append(record("sum", seed, [1.0] * 4, 1.0, [(4, base, [])]))
        arms["jd"].append(record("jd", seed, [1.0] * 4, 1.0, [(4, base + 0.1, [])]))
    table = analysis.compare(arms)
    entry = table["jd"]["pass@1"]
    assert entry["pairs"] == 5
    assert entry["delta"] == pytest.approx(0.1)
    assert entry["delta_ci"][0] == pytest.approx(0.1) and entry["delta_ci"][1] == pytest.approx(0.1)
    assert table["sum"]["pass@1"]["delta"] == 0.0


def test_a_jd_arm_is_compared_with_its_gd_control_seed_by_seed(analysis: ModuleType) -> None:
    # Seed by seed the JD arm solves 0.05 more than its control and its loss is 0.1 lower;
    # `sum` scores differ from both, so a comparison through `sum` would not give these.
    arm, control = "stack_supervisions_and_iwrm", "stack_supervisions_and_sum"
    arms: dict[str, list[dict[str, Any]]] = {"sum": [], arm: [], control: []}
    for seed, base in enumerate((0.1, 0.3, 0.2)):
        arms["sum"].append(record("sum", seed, [2.0] * 4, 1.0, [(4, 0.5, ["a", "b"])]))
        arms[control].append(record(control, seed, [1.0 + base] * 4, 1.0, [(4, base, ["a"])]))
        arms[arm].append(
            record(arm, seed, [0.9 + base] * 4, 1.0, [(4, base + 0.05, ["a", "b", "c"])])
        )
    arms[arm].append(record(arm, 7, [0.5] * 4, 1.0, [(4, 0.9, [])]))  # no control: unpaired
    arms[control].reverse()  # pairs are made by seed, not by position
    table = analysis.compare_to_controls(arms)
    assert list(table) == [arm]
    score, loss, never = (table[arm][m] for m in ("pass@1", "LM loss AUC", "never solved"))
    assert score["control"] == control and score["pairs"] == 3
    assert score["delta"] == pytest.approx(0.05) and loss["delta"] == pytest.approx(-0.1)
    assert score["delta_ci"] == pytest.approx((0.05, 0.05))
    # 3 of 4 items solved against 1 of 4: the never-solved share drops by a half.
    assert never["delta"] == pytest.approx(-0.5)


def test_sgd_rate_is_the_lowest_first_half_auc_once_the_sweep_is_complete(
    analysis: ModuleType, tmp_path: Path
) -> None:
    losses: dict[float, list[float | None]] = {
        0.01: [3.0, 3.0, 0.0, 0.0],
        0.1: [2.0, 2.0, 5.0, 5.0],
        1.0: [9.0, None, None, None],
    }
    for lr, curve in losses.items():
        run = record("sum", 0, curve, 1.0, [(4, 0.0, [])], optimizer="sgd", lr=lr)
        (tmp_path / f"{lr}.json").write_text(json.dumps(run))
    # The first half decides (0.1: 2.0 < 0.01: 3.0), even though 0.01 ends lower.
    assert analysis.tuned_sgd_lr(tmp_path, "f", "sum", 0, (0.01, 0.1, 1.0)) == 0.1
    assert analysis.tuned_sgd_lr(tmp_path, "f", "sum", 0, (0.01, 0.1, 1.0, 3.0)) is None
    assert analysis.tuned_sgd_lr(tmp_path, "f", "iwrm", 0, (0.01,)) is None


def test_equal_time_uses_the_arms_median_step_time(analysis: ModuleType) -> None:
    # Seed 1's JD run was slowed by other work on the machine (4 s/step instead of 2):
    # the arm's step time is the median over seeds of each run's median, so seed 1 is
    # read at the same 2 s/step as the others.
    arms: dict[str, list[dict[str, Any]]] = {"sum": [], "jd": []}
    for seed, jd_seconds in enumerate((2.0, 4.0, 2.0)):
        evals: list[tuple[int, float, list[str]]] = [(2, 0.1, []), (4, 0.5, [])]
        arms["sum"].append(record("sum", seed, [1.0] * 4, 1.0, evals))
        arms["jd"].append(record("jd", seed, [1.0] * 4, jd_seconds, evals))
    grouped = analysis.cells([r for runs in arms.values() for r in runs])
    table = analysis.compare(grouped["f", "adam_atan2"])
    # GD's 4 steps take 4 s, in which the JD arm does 2 steps: its step-2 evaluation.
    assert table["jd"]["pass@1 at GD time"]["values"] == [0.1, 0.1, 0.1]
    assert table["jd"]["step s"]["values"] == [2.0, 4.0, 2.0]  # each run's own median


def test_equal_time_uses_the_arms_timing_probe_when_there_is_one(
    analysis: ModuleType, tmp_path: Path
) -> None:
    # Every JD run was slowed (3 s/step); its probe, timed on a quiet machine, says 1.5 s:
    # GD's 4 s then hold 2 JD steps (the step-2 evaluation), not 1 (none yet: 0).
    runs = []
    for seed in range(3):
        evals: list[tuple[int, float, list[str]]] = [(2, 0.1, []), (4, 0.5, [])]
        runs.append(record("sum", seed, [1.0] * 4, 1.0, evals))
        runs.append(record("jd", seed, [1.0] * 4, 3.0, evals))
    probe = {"family": "f", "optimizer": "adam_atan2", "arm": "jd", "seconds_per_step": 1.5}
    (tmp_path / "f-adam_atan2-jd-probe.json").write_text(json.dumps(probe))
    probes = analysis.load_probes(tmp_path)
    assert probes == {("f", "adam_atan2", "jd"): 1.5}
    table = analysis.compare(analysis.cells(runs, probes)["f", "adam_atan2"])
    assert table["jd"]["pass@1 at GD time"]["values"] == [0.1, 0.1, 0.1]
    # `sum` has no probe here: its axis is its runs' 1 s/step.
    assert [r["step_time_source"] for r in runs] == ["runs", "probe"] * 3
    # Without the probe, the runs' own 3 s/step: no JD evaluation within GD's 4 s.
    pooled = analysis.compare(analysis.cells(runs)["f", "adam_atan2"])
    assert pooled["jd"]["pass@1 at GD time"]["values"] == [0.0, 0.0, 0.0]


def test_tables_compare_lm_losses_while_sgd_tuning_reads_the_total_loss(
    analysis: ModuleType, tmp_path: Path
) -> None:
    run = record("sum", 0, [3.0, 3.0, 3.0, 3.0], 1.0, [(4, 0.0, [])], optimizer="sgd", lr=0.1)
    run["train"]["lm_loss"] = [2.0, 1.0, 1.0, 0.0]  # the total adds a halting loss of 1-3
    assert analysis.run_metrics(run, run)["LM loss AUC"] == 1.0
    assert analysis.loss_auc(run, 0.5, key="loss") == 3.0
    (tmp_path / "run.json").write_text(json.dumps(run))
    assert analysis.tuned_sgd_lr(tmp_path, "f", "sum", 0, (0.1,)) == 0.1
