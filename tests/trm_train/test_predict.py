"""predict(): a tiny TRM over the test split of a small store, alone and on two gloo ranks."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import torch

import arc_data
import trm_model
from trm_train import Predictions, predict

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """These models are tiny: a second intra-op thread only adds waits on a busy 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tasks() -> dict[str, Any]:
    rng = np.random.default_rng(0)

    def grid(height: int, width: int) -> list[list[int]]:
        return rng.integers(0, 10, (height, width)).tolist()  # type: ignore[no-any-return]

    return {
        task_id: {
            "train": [{"input": grid(3, 4), "output": grid(4, 3)} for _ in range(2)],
            "test": [{"input": grid(3, 4), "output": grid(4, 3)} for _ in range(tests)],
        }
        for task_id, tests in (("a", 1), ("b", 2), ("c", 1))
    }


@pytest.fixture
def store(make_store: Any) -> arc_data.ArcStore:
    """4 test inputs x 4 versions = 16 test examples on a 10 x 10 canvas."""
    built: arc_data.ArcStore = make_store(_tasks(), num_aug=3, max_grid=10)
    assert built.test.num_examples == 16
    return built


def _model(store: arc_data.ArcStore) -> trm_model.TRM:
    """A tiny TRM whose q_halt and puzzle embeddings vary (both start constant)."""
    generator = torch.Generator().manual_seed(0)
    model = trm_model.TRM(
        trm_model.tiny(store.metadata.num_puzzle_identifiers), generator=generator
    )
    with torch.no_grad():
        assert model.q_head is not None
        model.q_head.weight.normal_(generator=generator)
        assert model.puzzle_emb is not None
        model.puzzle_emb.normal_(generator=generator)
    return model


def _by_hand(model: trm_model.TRM, store: arc_data.ArcStore, steps: int) -> Predictions:
    """The whole split in one batch, `steps` supervision steps, in eval mode."""
    examples = np.arange(store.test.num_examples)
    batch = arc_data.make_batch(store.test, examples)
    model_batch = trm_model.Batch(
        inputs=torch.from_numpy(batch.inputs).long(),
        labels=torch.from_numpy(batch.labels).long(),
        puzzle_identifiers=torch.from_numpy(batch.puzzle_identifiers).long(),
    )
    model.eval()
    with torch.no_grad():
        carry = model.refill(model.initial_carry(model_batch), model_batch)
        for _ in range(steps):
            out = model(carry)
            carry = out.carry
    return Predictions(examples, out.preds.numpy(), out.q_halt.numpy())


def _assert_same(got: Predictions, want: Predictions) -> None:
    np.testing.assert_array_equal(got.example_indices, want.example_indices)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_allclose(got.q_halt, want.q_halt, rtol=1e-5, atol=1e-5)


def test_predict_runs_every_supervision_step_and_drops_padding(
    store: arc_data.ArcStore, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model(store)
    model.train()
    # 16 examples in batches of 7: the last batch holds 5 padding rows.
    got = predict(model, store, batch_size=7, device=CPU, progress=True)
    assert model.training  # the mode is restored
    assert capsys.readouterr().err == "".join(f"\rpredict: batch {i}/3" for i in (1, 2, 3)) + "\n"
    assert got.tokens.shape == (16, 100) and got.tokens.dtype == np.uint8
    assert got.q_halt.shape == (16,) and got.q_halt.dtype == np.float32
    np.testing.assert_array_equal(got.example_indices, np.arange(16))
    assert got.tokens.max() < arc_data.VOCAB_SIZE

    steps = model.config.halt_max_steps
    _assert_same(got, _by_hand(model, store, steps))
    # One step fewer gives other halting logits: predict ran them all.
    assert not np.allclose(got.q_halt, _by_hand(model, store, steps - 1).q_halt, atol=1e-3)
    assert len(np.unique(got.q_halt)) == 16


def test_predictions_do_not_depend_on_the_batch_size(store: arc_data.ArcStore) -> None:
    model = _model(store).eval()
    _assert_same(
        predict(model, store, batch_size=4, device=CPU),
        predict(model, store, batch_size=7, device=CPU),
    )
    assert not model.training


def test_bad_arguments_are_refused(store: arc_data.ArcStore) -> None:
    with pytest.raises(RuntimeError, match="world_size 2 needs an initialised"):
        predict(_model(store), store, batch_size=4, device=CPU, rank=0, world_size=2)
    with pytest.raises(ValueError, match="batch_size must be positive, got 0"):
        predict(_model(store), store, batch_size=0, device=CPU)


WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    import torch.distributed as dist
    import arc_data
    import trm_model
    from trm_train import predict

    rank, store_path, state_path, init_file, out = sys.argv[1:]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=int(rank), world_size=2)
    store = arc_data.open_store(store_path)
    config = trm_model.tiny(store.metadata.num_puzzle_identifiers)
    model = trm_model.TRM(config, generator=torch.Generator().manual_seed(1))
    model.load_state_dict(torch.load(state_path))
    # A global batch of 6: 3 rows per rank; rank 1's last slice is 1 example and 2 pads.
    got = predict(model, store, batch_size=6, device=torch.device("cpu"), rank=int(rank),
                  world_size=2)
    np.savez(out, example_indices=got.example_indices, tokens=got.tokens, q_halt=got.q_halt)
    dist.barrier()  # gloo aborts a rank whose peer destroys the group under it
    dist.destroy_process_group()
    """
)


def test_two_ranks_gather_the_single_process_predictions(
    store: arc_data.ArcStore, tmp_path: Path
) -> None:
    model = _model(store).eval()
    torch.save(model.state_dict(), tmp_path / "state.pt")
    args = [str(store.path), str(tmp_path / "state.pt"), str(tmp_path / "init")]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(rank), *args, str(tmp_path / f"rank{rank}.npz")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    for worker in workers:
        output, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0, output
    want = predict(model, store, batch_size=4, device=CPU)
    for rank in range(2):
        saved = np.load(tmp_path / f"rank{rank}.npz")
        # Every rank returns the complete, sorted predictions.
        _assert_same(Predictions(saved["example_indices"], saved["tokens"], saved["q_halt"]), want)


def test_a_no_act_model_predicts_after_exactly_halt_max_steps(store: arc_data.ArcStore) -> None:
    config = attrs.evolve(
        trm_model.tiny(store.metadata.num_puzzle_identifiers), act_mode="none", halt_max_steps=3
    )
    model = trm_model.TRM(config, generator=torch.Generator().manual_seed(1))
    calls: list[int] = []
    model.lm_head.register_forward_hook(lambda *_: calls.append(1))
    got = predict(model, store, batch_size=8, device=CPU)
    # 2 batches x 3 supervision steps x one readout per H cycle.
    assert len(calls) == 2 * 3 * config.H_cycles
    _assert_same(got, _by_hand(model, store, 3))
    assert not got.q_halt.any()  # no Q head: every vote has the same confidence
