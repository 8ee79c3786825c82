"""Time one TRM training step (forward + backward of one supervision step).

Defaults are the issue's reference point: hidden 128, 2 heads, 2 layers, H 3, L 4,
900 tokens + 16 puzzle positions, batch 8, float32. The reference TRM code took 4.3 s
per step on the 2-core development box.

    python tools/bench_model.py
    python tools/bench_model.py --attention math --repeats 5
    python tools/bench_model.py --compile
"""

from __future__ import annotations

import argparse
import statistics
import time

import attrs
import torch

from trm_model import TRM, Batch, arc


def main() -> None:
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
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the model (warm-up compiles)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
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
    model = TRM(config, generator=generator).train()
    step = torch.compile(model) if args.compile else model
    batch = Batch(
        inputs=torch.randint(
            0, config.vocab_size, (args.batch, config.seq_len), generator=generator
        ),
        labels=torch.randint(
            0, config.vocab_size, (args.batch, config.seq_len), generator=generator
        ),
        puzzle_identifiers=torch.arange(1, args.batch + 1),
    )
    carry = model.initial_carry(batch)

    times = []
    for i in range(args.warmup + args.repeats):
        start = time.perf_counter()
        carry = model.refill(carry, batch)
        assert model.puzzle_emb is not None
        rows = model.puzzle_emb[carry.batch.puzzle_identifiers].requires_grad_()
        out = step(carry, rows, generator=generator)
        torch.autograd.backward(out.losses.total())
        elapsed = time.perf_counter() - start
        model.zero_grad(set_to_none=True)
        carry = out.carry
        if i >= args.warmup:
            times.append(elapsed)

    print(
        f"hidden {config.hidden_size}, heads {config.num_heads}, layers {config.L_layers}, "
        f"H {config.H_cycles}, L {config.L_cycles}, seq {config.seq_len} + "
        f"{config.puzzle_emb_len}, batch {args.batch}, {config.forward_dtype}, "
        f"{config.attention}, {'compiled' if args.compile else 'eager'}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"training step (forward + backward): median {statistics.median(times):.3f} s, "
        f"min {min(times):.3f} s over {len(times)} runs"
    )


if __name__ == "__main__":
    main()
