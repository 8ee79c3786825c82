"""Write the ARC-GEN-small tasks that pass a size rule as a new Kaggle-combined prefix.

The rule reads only the train pairs (never the held-out ones), so it can be fixed before
any held-out score is seen: keep a task when every one of its train outputs fits
`--max-output` x `--max-output`. The calibration (docs/calibration.md) uses 6, which keeps
29 of the 100 tasks. The files are derived data: write them outside the repository or
under an ignored folder such as `data/`.

    python tools/arc_gen_subset.py --max-output 6 --out data/arc-gen-out6
    arc-data build --source kaggle:data/arc-gen-out6 --subsets gen10 --test-set gen10 \
        --num-aug 0 --max-grid 10 --output data/arc-gen-out6.zarr
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared/data/arc-gen-small/arc-gen"
SUBSET = "gen10"


def fits(grid: list[list[int]], side: int) -> bool:
    return len(grid) <= side and all(len(row) <= side for row in grid)


def select(challenges: dict[str, Any], max_output: int) -> list[str]:
    """Task ids whose every train output fits max_output x max_output, sorted."""
    return sorted(
        task_id
        for task_id, task in challenges.items()
        if all(fits(pair["output"], max_output) for pair in task["train"])
    )


@click.command()
@click.option(
    "--source",
    type=click.Path(path_type=Path),
    default=DEFAULT_SOURCE,
    show_default=True,
    help="Kaggle prefix of ARC-GEN-small (files PREFIX_gen10_challenges/solutions.json).",
)
@click.option(
    "--max-output",
    type=click.IntRange(1, 30),
    required=True,
    help="Keep tasks whose train outputs all fit this side.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Prefix to write (OUT_gen10_challenges.json and OUT_gen10_solutions.json).",
)
def main(source: Path, max_output: int, out: Path) -> None:
    """Keep the ARC-GEN-small tasks whose train outputs fit a size; write them as a new
    Kaggle prefix for `arc-data build --source kaggle:OUT`."""
    files = {kind: Path(f"{source}_{SUBSET}_{kind}.json") for kind in ("challenges", "solutions")}
    for path in files.values():
        if not path.is_file():
            raise click.UsageError(f"no such file: {path} (is --source the ARC-GEN-small prefix?)")
    challenges = json.loads(files["challenges"].read_text())
    solutions = json.loads(files["solutions"].read_text())
    kept = select(challenges, max_output)
    if not kept:
        raise click.UsageError(f"no task of {files['challenges']} has outputs within {max_output}")
    out.parent.mkdir(parents=True, exist_ok=True)
    for kind, data in (("challenges", challenges), ("solutions", solutions)):
        target = Path(f"{out}_{SUBSET}_{kind}.json")
        partial = target.with_suffix(".json.partial")
        partial.write_text(json.dumps({task_id: data[task_id] for task_id in kept}))
        partial.replace(target)
    click.echo(f"kept {len(kept)} of {len(challenges)} tasks: {', '.join(kept)}", err=True)


if __name__ == "__main__":
    sys.exit(main())
