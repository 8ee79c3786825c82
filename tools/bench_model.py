"""Time one TRM training step (forward + backward of one supervision step).

Defaults are the issue's reference point: hidden 128, 2 heads, 2 layers, H 3, L 4,
900 tokens + 16 puzzle positions, batch 8, float32. The reference TRM code took 4.3 s
per step on the 2-core development box.

    python tools/bench_model.py
    python tools/bench_model.py --attention math --repeats 5
    python tools/bench_model.py --compile                      # regions (as --compile trains)
    python tools/bench_model.py --compare-compile --repeats 5  # compiled / eager, interleaved
    python tools/bench_model.py --compare-compile --compile-kind both --split iwrm_q_halt_in

`--compile-kind`: `regions` is `TRM.compile_regions()` (what `trm_train --compile` runs:
every linear layer eager, the pieces between them compiled), `whole` is
`torch.compile(model)`. `--split` (with `--aggregator`, `--engine`) makes the step a JD step
of jd-splits (forward under `jd.record()`, `jd.backward`) instead of one plain backward
of the summed loss; `whole` is refused with engines that hook the linear layers.

`--compare-compile` builds one model per side from the same seed, warms every side up
(compiling there), then runs the sides in turn and prints each side's median and the ratio
compiled / eager of the medians, of wall-clock and of CPU time: on a shared CPU,
interleaving spreads the load of other processes over the sides alike, and with one torch
thread the process's CPU time leaves out the time it waited for a core.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import attrs
import torch

from jd_splits import JacobianDescent, Split, get_split
from trm_model import TRM, Batch, Carry, StepOutput, TRMConfig, arc

Forward = Callable[..., StepOutput]


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--h-cycles", type=int, default=3)
    parser.add_argument("--l-cycles", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=900)
    parser.add_argument("--puzzle-emb-len", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--attention", choices=("sdpa", "math"), default="sdpa")
    parser.add_argument("--compile", action="store_true", help="time the compiled step only")
    parser.add_argument(
        "--compare-compile",
        action="store_true",
        help="time eager and compiled steps interleaved; print the ratio of their medians",
    )
    parser.add_argument("--compile-kind", choices=("regions", "whole", "both"), default="regions")
    parser.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile mode (default, max-autotune-no-cudagraphs, ...)",
    )
    parser.add_argument("--split", default=None, help="a JD step on this jd-splits split")
    parser.add_argument("--aggregator", default="upgrad")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args()


@attrs.define
class _Side:
    """One way of running the step: its own model (same seed), carry and generator."""

    name: str
    model: TRM
    forward: Forward
    carry: Carry
    jd: JacobianDescent | None
    split: Split | None
    generator: torch.Generator = attrs.Factory(lambda: torch.Generator().manual_seed(1))
    times: list[float] = attrs.Factory(list)
    cpu_times: list[float] = attrs.Factory(list)


def _side(name: str, config: TRMConfig, batch: Batch, args: argparse.Namespace) -> _Side:
    model = TRM(config, generator=torch.Generator().manual_seed(0)).train()
    forward: Forward = model
    if name == "regions":
        model.compile_regions(mode=args.compile_mode)
    elif name == "whole":
        forward = torch.compile(model, mode=args.compile_mode)
    jd, split = None, None
    if args.split is not None:
        split = get_split(args.split)
        jd = JacobianDescent(model, aggregator=args.aggregator, engine=args.engine, split=split)
        if name == "whole" and jd.uses_hooks:
            engines = ", ".join(sorted(jd.hooked_engines))
            raise SystemExit(f"whole-model compile hides the linear layers from {engines}")
    return _Side(name, model, forward, model.initial_carry(batch), jd, split)


def _step(side: _Side, batch: Batch, index: int) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one step (forward + backward)."""
    model = side.model
    start, cpu_start = time.perf_counter(), time.process_time()
    carry = model.refill(side.carry, batch)
    assert model.puzzle_emb is not None
    rows = model.puzzle_emb[carry.batch.puzzle_identifiers].requires_grad_()
    if side.jd is None or side.split is None:
        out = side.forward(carry, rows, generator=side.generator)
        torch.autograd.backward(out.losses.total())
    else:
        with side.jd.record():
            out = side.forward(carry, rows, generator=side.generator)
            objectives = side.split.objectives([out.losses], step=index)
            side.jd.backward(objectives, extra_inputs=[rows], scale=1 / len(rows))
    elapsed = time.perf_counter() - start, time.process_time() - cpu_start
    model.zero_grad(set_to_none=True)
    side.carry = out.carry
    return elapsed


def main() -> None:
    args = _parse()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    config = attrs.evolve(
        arc(num_puzzle_identifiers=args.batch + 1),
        hidden_size=args.hidden,
        num_heads=args.heads,
        L_layers=args.layers,
        H_cycles=args.h_cycles,
        L_cycles=args.l_cycles,
        seq_len=args.seq_len,
        puzzle_emb_len=args.puzzle_emb_len,
        forward_dtype=args.dtype,
        attention=args.attention,
    )
    generator = torch.Generator().manual_seed(0)
    batch = Batch(
        inputs=torch.randint(
            0, config.vocab_size, (args.batch, config.seq_len), generator=generator
        ),
        labels=torch.randint(
            0, config.vocab_size, (args.batch, config.seq_len), generator=generator
        ),
        puzzle_identifiers=torch.arange(1, args.batch + 1),
    )
    kinds = ["regions", "whole"] if args.compile_kind == "both" else [args.compile_kind]
    names = (["eager"] if not args.compile else []) + (
        kinds if args.compile or args.compare_compile else []
    )
    sides = [_side(name, config, batch, args) for name in names]

    for side in sides:
        start = time.perf_counter()
        for i in range(args.warmup):
            _step(side, batch, i)
        print(f"{side.name}: warm-up ({args.warmup} steps) {time.perf_counter() - start:.1f} s")
    for i in range(args.repeats):
        for side in sides:
            wall, cpu = _step(side, batch, args.warmup + i)
            side.times.append(wall)
            side.cpu_times.append(cpu)

    step = "plain step (sum loss)" if args.split is None else f"JD step ({args.split}, "
    if args.split is not None:
        step += f"{args.aggregator}, engine {args.engine})"
    print(
        f"hidden {config.hidden_size}, heads {config.num_heads}, layers {config.L_layers}, "
        f"H {config.H_cycles}, L {config.L_cycles}, seq {config.seq_len} + "
        f"{config.puzzle_emb_len}, batch {args.batch}, {config.forward_dtype}, "
        f"{config.attention}, compile mode {args.compile_mode or 'default'}, "
        f"{torch.get_num_threads()} threads; {step}"
    )
    for side in sides:
        print(
            f"{side.name}: median {statistics.median(side.times):.3f} s wall "
            f"({statistics.median(side.cpu_times):.3f} s CPU), min {min(side.times):.3f} s "
            f"over {len(side.times)} runs"
        )
    if sides[0].name == "eager":
        wall, cpu = statistics.median(sides[0].times), statistics.median(sides[0].cpu_times)
        for side in sides[1:]:
            print(
                f"{side.name} / eager (medians): {statistics.median(side.times) / wall:.2f}x "
                f"wall, {statistics.median(side.cpu_times) / cpu:.2f}x CPU"
            )


if __name__ == "__main__":
    main()
