"""The sections of the run report, in order, each a markdown string from the run's figures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
import torch

import arc_data
import trm_model

from .._config import TrainConfig
from ._figures import Evaluation, fmt, last_tenth, mean, median, number, series, task_scores
from ._plot import CHARTS_EXTRA, SERIES_COLOURS, charts_available, line_chart

_TRAINING_ROWS = (
    ("train/loss", "loss"),
    ("train/accuracy", "token accuracy"),
    ("train/exact_accuracy", "exact accuracy"),
    ("train/q_halt_accuracy", "q-halt accuracy"),
    ("train/steps", "mean supervision steps"),
)
_CHARTS = (
    ("loss", "Training loss", "loss", {"loss": "train/loss"}),
    (
        "accuracy",
        "Accuracy",
        "share",
        # Token accuracy moves long before any sequence is exactly right.
        {
            "train exact accuracy": "train/exact_accuracy",
            "train token accuracy": "train/accuracy",
            "eval pass@2": "eval/pass@2",
        },
    ),
    (
        "gd_cosine",
        "Cosine of the JD update to the mean gradient",
        "cosine",
        {"GD cosine": "jd/cosine_to_mean"},
    ),
)
PICTURES_HELP = (
    "Each picture is one held-out task, one row per test input: the input, the expected "
    "output (a grey box when unknown), then attempt 1 and attempt 2, the two candidates "
    "with the most votes over the augmentations, mapped back to the task's frame (grey when "
    "nothing was predicted; one candidate fills both). A row counts for pass@2 when either "
    "attempt equals the expected output."
)


def headline(config: TrainConfig, rows: list[dict[str, Any]], evaluation: Evaluation | None) -> str:
    objective = config.objective
    how = "plain gradient descent" if objective.split == "sum" else f"{objective.aggregator}"
    steps = fmt(number(rows[-1].get("step")) if rows else 0)
    text = f"Split `{objective.split}` ({how}), {steps} of {fmt(config.loop.steps)} steps trained."
    if evaluation is not None and "pass@2" in evaluation.metrics:
        tasks = fmt(number(evaluation.metrics.get("num_tasks")))
        text += (
            f" pass@2 {fmt(number(evaluation.metrics['pass@2']))} on {tasks} held-out tasks"
            f" (step {evaluation.step});"
        )
    exact = mean([v for _, v in series(last_tenth(rows), "train/exact_accuracy")])
    return text + f" train exact accuracy {fmt(exact)} (last tenth of the steps)."


def _table(header: tuple[str, str], rows: list[tuple[str, str]]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def configuration(config: TrainConfig, rows: list[dict[str, Any]]) -> str:
    model, objective, optim, data, loop = (
        config.model,
        config.objective,
        config.optim,
        config.data,
        config.loop,
    )
    engines = sorted({str(row["jd/engine"]) for row in rows if "jd/engine" in row})
    engine = objective.engine + (f" (used: {', '.join(engines)})" if engines else "")
    table = [
        (
            "split",
            f"`{objective.split}`" + (f", {objective.groups} groups" if objective.groups else ""),
        ),
        ("aggregator", objective.aggregator),
        ("engine", engine),
        (
            "model",
            (
                "transformer baseline (no recursion), "
                if model.arch == "transformer"
                else f"TRM, H_cycles {model.H_cycles}, L_cycles {model.L_cycles}, "
            )
            + ("token-mixing MLP, " if model.mlp_t else f"{model.num_heads} heads, ")
            + f"hidden {model.hidden_size}, L_layers {model.L_layers}, "
            f"act mode {model.act_mode}, halt max steps {model.halt_max_steps}, "
            f"{model.forward_dtype}",
        ),
        ("trainable parameters", fmt(_parameter_count(config))),
        ("puzzle embedding table", f"{fmt(model.num_puzzle_identifiers)} x {model.hidden_size}"),
        ("global batch", f"{data.global_batch_size} x {loop.grad_accum} accumulation"),
        (
            "learning rate",
            f"{optim.lr:g} (warm-up {optim.warmup_steps} steps, "
            f"min ratio {optim.lr_min_ratio:g}); puzzle embedding {optim.puzzle_emb_lr:g}",
        ),
        ("EMA", f"{optim.ema_decay:g}" if optim.ema else "off"),
        (
            "steps",
            f"{fmt(loop.steps)}, evaluation every {loop.eval_every or 'never'}, seed {loop.seed}",
        ),
    ]
    return "## Configuration\n\n" + _table(("setting", "value"), table + _store_rows(data.store))


def _parameter_count(config: TrainConfig) -> int:
    # The puzzle table is a buffer, not a parameter: one row is enough to count the rest.
    shape = attrs.evolve(config.model, num_puzzle_identifiers=1)
    model = trm_model.TRM(shape, generator=torch.Generator().manual_seed(0))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _store_rows(path: Path) -> list[tuple[str, str]]:
    try:
        store = arc_data.open_store(path)
    except (arc_data.ArcDataError, FileNotFoundError) as error:
        return [("store", f"`{path}` (cannot be opened from here: {error})")]
    meta = store.metadata
    attributes = meta.attributes
    skipped = len(attributes.get("skipped_tasks", ()))

    def split(name: str) -> str:
        counts = attributes["counts"][name]
        return (
            f"{fmt(counts['examples'])} examples, {fmt(counts['puzzles'])} task versions, "
            f"{fmt(counts['groups'])} tasks"
        )

    return [
        ("store", f"`{path}`"),
        ("sources", f"{', '.join(meta.sources)}: {', '.join(meta.subsets)}"),
        ("held-out test set", meta.test_set or "none"),
        (
            "tasks",
            f"{fmt(len(meta.tasks))} within {meta.grid_size}x{meta.grid_size} "
            f"({fmt(skipped)} larger ones skipped), {meta.num_aug} augmentations each",
        ),
        ("train split", split("train")),
        ("test split", split("test")),
    ]


def training(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "## Training\n\nNo metrics were logged (`metrics.jsonl` is missing or empty)."
    tail = last_tenth(rows)
    first, last = fmt(number(tail[0].get("step"))), fmt(number(tail[-1].get("step")))
    table = [(name, fmt(mean([v for _, v in series(tail, key)]))) for key, name in _TRAINING_ROWS]
    cosines = [v for _, v in series(rows, "jd/cosine_to_mean")]
    seconds = [v for _, v in series(rows, "train/step_seconds")]
    table += [
        ("GD cosine (mean over the run)", fmt(mean(cosines))),
        ("step time, s (median over the run)", fmt(median(seconds))),
        (
            "examples/s (median over the run)",
            fmt(median([v for _, v in series(rows, "train/examples_per_second")])),
        ),
        ("training time, s (sum of step times)", fmt(sum(seconds) if seconds else None)),
    ]
    return (
        "## Training\n\n"
        f"Means over the last tenth of the logged steps ({first} to {last}) unless noted. "
        "Exact accuracy: share of the sequences that halted with every token right. "
        "GD cosine: cosine between the JD update and the mean gradient (1 is plain "
        "gradient descent; no value when no Gramian was computed).\n\n"
        + _table(("metric", "value"), table)
    )


def evaluation(evaluation: Evaluation | None, run_dir: Path) -> str:
    if evaluation is None:
        return "## Evaluation\n\nNo evaluation yet (no `eval/step-*/metrics.json`)."
    metrics = evaluation.metrics
    ks = sorted(int(key[5:]) for key in metrics if key.startswith("pass@"))
    table = [(f"pass@{k}", fmt(number(metrics[f"pass@{k}"]))) for k in ks]
    names = (
        ("num_tasks", "held-out tasks"),
        ("num_test_inputs", "test inputs"),
        ("num_predictions", "predictions (test inputs x augmentations)"),
        ("mean_candidates", "distinct candidates per test input"),
        ("empty_crops", "predictions with no grid"),
    )
    table += [(name, fmt(number(metrics[key]))) for key, name in names if key in metrics]
    where = Path(os.path.relpath(evaluation.folder, run_dir)).as_posix()
    note = (
        "pass@K: per task, the share of its test inputs whose true output is among the K "
        "candidates with the most votes over the augmentations; the mean over tasks."
        if ks
        else "The test split has no solutions: no score is possible."
    )
    return (
        f"## Evaluation (step {evaluation.step})\n\n"
        f"From [`{where}/metrics.json`]({where}/metrics.json). {note}\n\n"
        + _table(("metric", "value"), table)
    )


def charts(rows: list[dict[str, Any]], run_dir: Path) -> str:
    if not charts_available():
        return f"## Charts\n\nNo charts: drawing them needs matplotlib ({CHARTS_EXTRA})."
    parts = ["## Charts"]
    for name, title, ylabel, keys in _CHARTS:
        lines = {label: series(rows, key) for label, key in keys.items()}
        drawn = {label: points for label, points in lines.items() if points}
        if not drawn:
            parts.append(f"{title}: nothing was logged.")
            continue
        line_chart(lines, run_dir / "report" / f"{name}.png", title=title, ylabel=ylabel)
        xs = [x for points in drawn.values() for x, _ in points]
        ys = [y for points in drawn.values() for _, y in points]
        legend = "; ".join(
            f"{colour}: {label}"
            for label, (colour, _) in zip(lines, SERIES_COLOURS, strict=False)
            if label in drawn
        )
        parts.append(
            f"![{title}](report/{name}.png)\n\n"
            f"{title}: x step {fmt(min(xs))} to {fmt(max(xs))}, "
            f"y {fmt(min(ys))} to {fmt(max(ys))}; {legend}."
        )
    return "\n\n".join(parts)


def predictions(evaluation: Evaluation | None, run_dir: Path, limit: int) -> str:
    if evaluation is None:
        return "## Predictions\n\nNo evaluation yet."
    found = sorted((evaluation.folder / "pictures").glob("*.png"))[:limit]
    if not found:
        return "## Predictions\n\nThe evaluation wrote no pictures."
    scores = task_scores(evaluation.folder / "tasks.json")
    parts = ["## Predictions", PICTURES_HELP]
    for picture in found:
        link = Path(os.path.relpath(picture, run_dir)).as_posix()
        score = scores.get(picture.stem)
        caption = f"Task `{picture.stem}`" + ("" if score is None else f", pass@2 {fmt(score)}")
        parts.append(f"{caption}:\n\n![{picture.stem}]({link})")
    return "\n\n".join(parts)
