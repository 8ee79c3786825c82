"""JD under DistributedDataParallel: two gloo ranks on the CPU, in subprocesses."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

WORKER = textwrap.dedent(
    """
    import sys
    import torch
    import torch.distributed as dist
    from torch import nn
    from jd_splits import JacobianDescent, ObjectiveSet

    rank, world, store, engines = int(sys.argv[1]), 2, sys.argv[2], sys.argv[3].split(",")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)

    def make_model():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).double()

    def shard(r):
        g = torch.Generator().manual_seed(10 + r)
        # Rank 1 holds a single sample: one objective, the plain-backward path, while rank 0
        # aggregates six. Both must enter the same all-reduce.
        size = 6 if r == 0 else 1
        x = torch.randn(size, 3, generator=g, dtype=torch.float64)
        y = torch.randn(size, 2, generator=g, dtype=torch.float64)
        rows = torch.randn(size, 2, generator=g, dtype=torch.float64).requires_grad_()
        return x, y, rows

    def losses(module, x, y, rows):
        return ((module(x) + rows - y) ** 2).sum(1)

    def local_update(r):
        model = make_model()
        x, y, rows = shard(r)
        jd = JacobianDescent(model, engine="sequential")
        with jd.record():
            jd.backward(ObjectiveSet.per_instance(losses(model, x, y, rows)), extra_inputs=[rows])
        return [p.grad for p in model.parameters()], rows.grad

    def check(engine):
        model = nn.parallel.DistributedDataParallel(make_model())
        x, y, rows = shard(rank)
        jd = JacobianDescent(model, engine=engine)
        with jd.record():
            diagnostics = jd.backward(
                ObjectiveSet.per_instance(losses(model, x, y, rows)), extra_inputs=[rows]
            )
        assert diagnostics.num_objectives == (6 if rank == 0 else 1), diagnostics
        expected = [sum(g) / world for g in zip(*(local_update(r)[0] for r in range(world)))]
        for got, want in zip(model.parameters(), expected):
            torch.testing.assert_close(got.grad, want)
        # Extra inputs are not reduced: each rank keeps its own rows' update.
        torch.testing.assert_close(rows.grad, local_update(rank)[1])
        # Outside record() the forward would not run under no_sync(): refused.
        try:
            jd.backward(ObjectiveSet.from_vector(losses(model, x, y, rows).sum()[None]))
        except RuntimeError as error:
            assert "record" in str(error)
        else:
            raise AssertionError("backward outside record() under DDP was accepted")
        # A second step works the same (DDP's reducer was kept out of the first).
        model.zero_grad()
        with jd.record():
            jd.backward(ObjectiveSet.per_instance(losses(model, x, y, rows)))
        for got, want in zip(model.parameters(), expected):
            torch.testing.assert_close(got.grad, want)
        print("ok", engine, flush=True)

    for engine in engines:
        check(engine)
    dist.destroy_process_group()
    """
)


ENGINES = ("auto", "autogram", "autojac")


@pytest.fixture(scope="module")
def worker_outputs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[int, str]]:
    """One two-rank launch checks every engine in turn (each with its own DDP model and
    JacobianDescent): a launch's cost is mostly importing torch, not the check."""
    folder = tmp_path_factory.mktemp("ddp")
    script = folder / "worker.py"
    script.write_text(WORKER)
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), str(folder / "store"), ",".join(ENGINES)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    try:
        outputs = [worker.communicate(timeout=180)[0] for worker in workers]
    finally:  # a hung rank must not outlive the test
        for worker in workers:
            worker.kill()
    return [(worker.returncode, output) for worker, output in zip(workers, outputs, strict=True)]


@pytest.mark.parametrize("engine", ENGINES)
def test_ranks_average_their_jd_updates(engine: str, worker_outputs: list[tuple[int, str]]) -> None:
    for returncode, output in worker_outputs:
        # A failing engine stops the launch: the engines after it report no "ok" either.
        assert f"ok {engine}" in output.splitlines(), output
        assert returncode == 0, output
