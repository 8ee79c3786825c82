"""Step-time ratios of Jacobian descent against gradient descent, and projector timings.

The model is a tiny TRM-like recursive attention model (hidden 64, 2 heads, two post-norm
blocks shared across H_cycles x (L_cycles + 1) applications, gradient through the last H
cycle only, SwiGLU inner width 256, a halting head, per-sample extra input rows), batch 16,
sequence 100. Each configuration runs one training step (forward + JD backward) `--repeats`
times; the figure is the median step time over the median gradient-descent step time,
measured interleaved with it.

    python tools/bench_jd.py                 # everything
    python tools/bench_jd.py --only iwrm     # one group: iwrm, pixel10, pixel100, projector
    python tools/bench_jd.py --threads 1     # torch threads (the CPU is shared: 1 is steadier)
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jd_splits import BatchedDualConeProjector, JacobianDescent, ObjectiveSet, Split, get_split


@attrs.frozen
class Terms:
    lm: Tensor
    halt: Tensor | None
    internal: None = None
    mask: Tensor | None = None


def _rms_norm(x: Tensor) -> Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        inner = 256 * math.ceil(round(2 / 3 * 4 * hidden) / 256)
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.out = nn.Linear(hidden, hidden, bias=False)
        self.gate_up = nn.Linear(hidden, 2 * inner, bias=False)
        self.down = nn.Linear(inner, hidden, bias=False)

    def forward(self, h: Tensor) -> Tensor:
        batch, length, hidden = h.shape
        q, k, v = self.qkv(h).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hidden // self.heads)
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, hidden)
        h = _rms_norm(h + self.out(attended))
        gate, up = self.gate_up(h).chunk(2, -1)
        return _rms_norm(h + self.down(F.silu(gate) * up))


class TinyTRM(nn.Module):
    def __init__(
        self, vocab: int = 12, hidden: int = 64, h_cycles: int = 3, l_cycles: int = 4
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.blocks = nn.ModuleList(Block(hidden, 2) for _ in range(2))
        self.lm_head = nn.Linear(hidden, vocab, bias=False)
        self.q_head = nn.Linear(hidden, 1)
        self.h_cycles, self.l_cycles = h_cycles, l_cycles
        self.z_init: Tensor
        self.register_buffer("z_init", torch.randn(2, hidden))

    def net(self, h: Tensor, injection: Tensor) -> Tensor:
        h = h + injection
        for block in self.blocks:
            h = block(h)
        return h

    def forward(self, tokens: Tensor, labels: Tensor, rows: Tensor) -> Terms:
        x = self.embed(tokens) + F.pad(rows[:, None, :], (0, 0, 0, tokens.shape[1] - 1))
        z_h, z_l = self.z_init[0].expand_as(x), self.z_init[1].expand_as(x)
        with torch.no_grad():
            for _ in range(self.h_cycles - 1):
                for _ in range(self.l_cycles):
                    z_l = self.net(z_l, z_h + x)
                z_h = self.net(z_h, z_l)
        for _ in range(self.l_cycles):
            z_l = self.net(z_l, z_h + x)
        z_h = self.net(z_h, z_l)
        logits = self.lm_head(z_h)
        valid = labels >= 0
        ce = F.cross_entropy(logits.transpose(1, 2), labels.clamp_min(0), reduction="none")
        lm = torch.where(valid, ce, 0.0) / valid.sum(-1, keepdim=True).clamp_min(1)
        correct = ((logits.argmax(-1) == labels) | ~valid).all(-1)
        q = self.q_head(z_h[:, 0]).squeeze(-1)
        halt = 0.5 * F.binary_cross_entropy_with_logits(q, correct.float(), reduction="none")
        return Terms(lm=lm, halt=halt)


@attrs.define
class Setup:
    model: TinyTRM
    tokens: Tensor
    labels: Tensor
    rows: Tensor


def make_setup(batch: int, length: int, seed: int) -> Setup:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = TinyTRM()
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 12, (batch, length), generator=generator)
    labels = torch.randint(2, 12, (batch, length), generator=generator)
    rows = torch.zeros(batch, 64).requires_grad_()
    return Setup(model, tokens, labels, rows)


def gd_step(setup: Setup) -> None:
    terms = setup.model(setup.tokens, setup.labels, setup.rows)
    assert terms.halt is not None
    torch.autograd.backward([terms.lm.sum() + terms.halt.sum()])


def jd_step(setup: Setup, split: Split, jd: JacobianDescent) -> Callable[[], str]:
    def run() -> str:
        with jd.record():
            terms = setup.model(setup.tokens, setup.labels, setup.rows)
            objectives = split.objectives([terms], step=0)
            return jd.backward(objectives, extra_inputs=[setup.rows]).engine

    return run


def timed(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def ratio(setup: Setup, step: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median JD step time and its ratio to the median GD step time (interleaved)."""
    step()
    gd_step(setup)
    jd_times, gd_times = [], []
    for _ in range(repeats):
        setup.model.zero_grad(set_to_none=True)
        gd_times.append(timed(lambda: gd_step(setup)))
        setup.model.zero_grad(set_to_none=True)
        jd_times.append(timed(step))
    jd_median = statistics.median(jd_times)
    return jd_median, jd_median / statistics.median(gd_times)


def reference_sequential(setup: Setup, split: Split) -> Callable[[], None]:
    """The reference implementation: one backward per objective, then UPGrad on J."""
    jd = JacobianDescent(setup.model, engine="sequential")

    def run() -> None:
        with jd.record():
            terms = setup.model(setup.tokens, setup.labels, setup.rows)
            jd.backward(split.objectives([terms], step=0), extra_inputs=[setup.rows])

    return run


def bench_splits(args: argparse.Namespace) -> None:
    setup = make_setup(args.batch, args.length, seed=0)
    groups = {
        "iwrm": (get_split("iwrm_q_halt_in"), 1.5),
        "pixel10": (get_split("pixelwise_q_halt_in", groups=10), 3.0),
        "pixel100": (get_split("pixelwise_q_halt_in"), 10.0),
    }
    gd = statistics.median(timed(lambda: gd_step(setup)) for _ in range(args.repeats))
    print(f"GD step: {gd * 1e3:.0f} ms (batch {args.batch}, sequence {args.length})")
    for name, (split, target) in groups.items():
        if args.only not in (None, name):
            continue
        engines = ["auto", "autogram", "autojac"] if name == "iwrm" else ["auto", "autojac"]
        for engine in engines:
            jd = JacobianDescent(setup.model, engine=engine, split=split)  # type: ignore[arg-type]
            step = jd_step(setup, split, jd)
            used = step()
            seconds, factor = ratio(setup, step, args.repeats)
            print(
                f"{name:9s} {engine:9s} -> {used:10s} {seconds * 1e3:8.0f} ms  {factor:6.2f}x GD  (target <= {target}x)"
            )
        if args.reference:
            seconds, factor = ratio(
                setup, reference_sequential(setup, split), max(2, args.repeats // 3)
            )
            print(
                f"{name:9s} reference (one backward per objective) {seconds * 1e3:8.0f} ms  {factor:6.2f}x GD"
            )


def iwrm_gramian(batch: int) -> Tensor:
    """The Gramian of per-sample gradients of the bench model (a realistic IWRM Gramian)."""
    setup = make_setup(batch, 100, seed=1)
    captured: dict[str, Tensor] = {}

    class Capture(BatchedDualConeProjector):
        def __call__(self, U: Tensor, G: Tensor) -> Tensor:
            captured["G"] = G.detach().clone()
            return super().__call__(U, G)

    from jd_splits import make_aggregator

    jd = JacobianDescent(setup.model, aggregator=make_aggregator("upgrad", projector=Capture()))
    with jd.record():
        terms = setup.model(setup.tokens, setup.labels, setup.rows)
        assert terms.halt is not None
        jd.backward(ObjectiveSet.per_instance(terms.lm.sum(1) + terms.halt))
    return captured["G"].double()


def random_gramian(m: int, kind: str, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    if kind == "low_rank":
        jacobian = torch.randn(m, m // 4, generator=generator, dtype=torch.float64)
    else:
        jacobian = torch.randn(m, 4 * m, generator=generator, dtype=torch.float64)
    if kind == "mild":
        # A shared direction strong enough that about 10% of the pairs conflict.
        shift = (1.28 / (4 * m) ** 0.5) ** 0.5
        jacobian += shift * torch.randn(1, 4 * m, generator=generator, dtype=torch.float64)
    return jacobian @ jacobian.T


def bench_projector(args: argparse.Namespace) -> None:
    projector = BatchedDualConeProjector()
    targets = {256: 0.05, 1024: 2.0}
    for m, target in targets.items():
        cases = {
            "iwrm (bench model)": iwrm_gramian(m),
            "mild conflicts": random_gramian(m, "mild", m),
            "gaussian random": random_gramian(m, "gaussian", m),
            "rank m/4 random": random_gramian(m, "low_rank", m),
        }
        for name, gramian in cases.items():
            U = torch.eye(m, dtype=torch.float64) / m
            conflicts = float((gramian < 0).double().mean())
            times = []
            for _ in range(args.projector_repeats):
                start = time.perf_counter()
                projector(U, gramian)
                times.append(time.perf_counter() - start)
            print(
                f"projector m={m:5d} {name:20s} conflicts {conflicts:5.1%}  "
                f"{statistics.median(times) * 1e3:9.1f} ms  (target <= {target * 1e3:.0f} ms)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["iwrm", "pixel10", "pixel100", "projector"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--projector-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--reference", action="store_true", help="also time one backward per objective"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.only != "projector":
        bench_splits(args)
    if args.only in (None, "projector"):
        bench_projector(args)


if __name__ == "__main__":
    main()
