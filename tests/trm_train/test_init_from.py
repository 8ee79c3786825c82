"""Initial weights for fine-tuning (`load_initial_weights`): reference checkpoints, our
checkpoints and run directories, the tolerated differences and the rejected ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import torch
from torch import Tensor

import trm_model
from trm_train import load_initial_weights
from trm_train._checkpoint import save_checkpoint


def _config(num_puzzles: int = 8, **changes: Any) -> trm_model.TRMConfig:
    """16 tokens, hidden 32, 2 puzzle positions: a few milliseconds to build."""
    base = attrs.evolve(trm_model.tiny(num_puzzles), hidden_size=32, seq_len=16, puzzle_emb_len=2)
    return attrs.evolve(base, **changes)


def _model(config: trm_model.TRMConfig, seed: int) -> trm_model.TRM:
    model = trm_model.TRM(config, generator=torch.Generator().manual_seed(seed))
    # The initialisation zeroes the table: random rows show that they are carried over.
    assert model.puzzle_emb is not None
    model.puzzle_emb.copy_(
        torch.randn(model.puzzle_emb.shape, generator=torch.Generator().manual_seed(seed))
    )
    return model


def _save(state: dict[str, Any], path: Path) -> Path:
    torch.save(state, path)
    return path


def _snapshot(model: trm_model.TRM) -> dict[str, Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()}


def _assert_weights(model: trm_model.TRM, expected: dict[str, Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def _run_state(model: trm_model.TRM, step: int) -> dict[str, Any]:
    """A checkpoint as the trainer writes it; the sampler's numpy array is something only
    the trusted (not weights-only) checkpoint reader accepts."""
    return {
        "step": step,
        "model": model.state_dict(),
        "optimizer": {"state": {}, "param_groups": []},
        "sampler": {"plan_weights": np.ones(3)},
    }


@pytest.mark.parametrize("compiled", [False, True])
def test_a_reference_checkpoint_loads_every_weight(compiled: bool, tmp_path: Path) -> None:
    source, target = _model(_config(), seed=1), _model(_config(), seed=2)
    state = trm_model.to_reference_state_dict(source)
    # The reference keeps its initial states in bfloat16; 0.5 is exact in both dtypes.
    state["model.inner.H_init"] = torch.full((32,), 0.5, dtype=torch.bfloat16)
    if compiled:
        state = {f"_orig_mod.{key}": value for key, value in state.items()}
    assert not torch.equal(source.lm_head.weight, target.lm_head.weight)

    warnings = load_initial_weights(target, _save(state, tmp_path / "reference.pt"))

    assert warnings == []
    expected = _snapshot(source)
    expected["H_init"] = torch.full((32,), 0.5)
    _assert_weights(target, expected)
    assert target.H_init.dtype == torch.float32


def test_another_number_of_puzzles_starts_every_row_from_the_mean(tmp_path: Path) -> None:
    source, target = _model(_config(5), seed=1), _model(_config(9), seed=2)
    assert source.puzzle_emb is not None
    # Row i, column j holds i + 10 j: the mean of rows 0..4 is 2 + 10 j.
    rows, columns = torch.arange(5.0).unsqueeze(1), torch.arange(32.0).unsqueeze(0)
    source.puzzle_emb.copy_(rows + 10 * columns)
    path = _save(trm_model.to_reference_state_dict(source), tmp_path / "reference.pt")

    warnings = load_initial_weights(target, path)

    assert len(warnings) == 1
    assert "5 rows" in warnings[0] and "the model's 9" in warnings[0]
    mean_row = torch.tensor([2.0 + 10 * j for j in range(32)])
    expected = _snapshot(source)
    expected["puzzle_emb"] = mean_row.expand(9, 32)
    _assert_weights(target, expected)


def test_an_act_checkpoint_into_a_model_without_q_head(tmp_path: Path) -> None:
    source = _model(_config(act_mode="act"), seed=1)
    target = _model(_config(act_mode="none"), seed=2)
    assert target.output_logits_init is not None
    fresh_logits_init = target.output_logits_init.clone()
    path = _save(trm_model.to_reference_state_dict(source), tmp_path / "act.pt")

    warnings = load_initial_weights(target, path)

    assert len(warnings) == 2
    assert "model.inner.q_head.bias, model.inner.q_head.weight) is dropped" in warnings[0]
    assert "no model.inner.output_logits_init" in warnings[1] and "keeps" in warnings[1]
    expected = {k: v for k, v in _snapshot(source).items() if not k.startswith("q_head.")}
    expected["output_logits_init"] = fresh_logits_init
    _assert_weights(target, expected)


def test_an_output_logits_init_the_model_lacks_is_dropped(tmp_path: Path) -> None:
    source, target = _model(_config(), seed=1), _model(_config(), seed=2)
    state = trm_model.to_reference_state_dict(source)
    state["model.inner.output_logits_init"] = torch.zeros(12)

    warnings = load_initial_weights(target, _save(state, tmp_path / "extra.pt"))

    assert len(warnings) == 1
    assert "model.inner.output_logits_init is dropped" in warnings[0]
    _assert_weights(target, _snapshot(source))


def test_a_checkpoint_without_q_head_into_a_model_with_one_is_rejected(tmp_path: Path) -> None:
    source = _model(_config(act_mode="none"), seed=1)
    target = _model(_config(act_mode="fixed"), seed=2)
    before = _snapshot(target)
    path = _save(trm_model.to_reference_state_dict(source), tmp_path / "no-act.pt")

    with pytest.raises(ValueError, match="no Q head") as raised:
        load_initial_weights(target, path)

    message = str(raised.value)
    assert str(path) in message
    assert "(model.inner.q_head.bias, model.inner.q_head.weight)" in message
    assert "act_mode 'fixed'" in message and "untrained" in message
    _assert_weights(target, before)


def test_our_checkpoint_file_and_run_directory(tmp_path: Path) -> None:
    early, late = _model(_config(), seed=1), _model(_config(), seed=2)
    run = tmp_path / "run"
    early_file = save_checkpoint(run, 3, _run_state(early, 3), keep=2)
    save_checkpoint(run, 7, _run_state(late, 7), keep=2)

    target = _model(_config(), seed=3)
    assert load_initial_weights(target, run) == []
    _assert_weights(target, _snapshot(late))

    assert load_initial_weights(target, early_file) == []
    _assert_weights(target, _snapshot(early))


def test_our_checkpoint_copied_out_of_its_run(tmp_path: Path) -> None:
    source, target = _model(_config(), seed=1), _model(_config(), seed=2)
    plain = _save({"step": 3, "model": source.state_dict()}, tmp_path / "plain.pt")

    assert load_initial_weights(target, plain) == []
    _assert_weights(target, _snapshot(source))

    # With objects beyond tensors only the run's own reader (in its folder) may unpickle it.
    full = _save(_run_state(source, 3), tmp_path / "full.pt")
    with pytest.raises(ValueError, match="run's checkpoints folder") as raised:
        load_initial_weights(target, full)
    assert str(full) in str(raised.value)


def test_another_hidden_size_names_every_mis_shaped_key(tmp_path: Path) -> None:
    source = _model(_config(hidden_size=64), seed=1)
    target = _model(_config(), seed=2)
    path = _save(trm_model.to_reference_state_dict(source), tmp_path / "wide.pt")

    with pytest.raises(ValueError) as raised:
        load_initial_weights(target, path)

    lines = str(raised.value).splitlines()
    assert lines[0] == f"{path}: the checkpoint does not match the model:"
    assert "  model.inner.lm_head.weight has shape [12, 64], the model expects [12, 32]" in lines
    assert "  model.inner.puzzle_emb.weights has shape [8, 64], the model expects [8, 32]" in lines
    assert "  model.inner.H_init has shape [64], the model expects [32]" in lines


def test_missing_and_unexpected_keys_are_all_named(tmp_path: Path) -> None:
    source, target = _model(_config(), seed=1), _model(_config(), seed=2)
    before = _snapshot(target)
    state = trm_model.to_reference_state_dict(source)
    del state["model.inner.lm_head.weight"], state["model.inner.L_init"]
    state["model.inner.extra.weight"] = torch.zeros(3)
    path = _save(state, tmp_path / "odd.pt")

    with pytest.raises(ValueError) as raised:
        load_initial_weights(target, path)

    assert str(raised.value).splitlines() == [
        f"{path}: the checkpoint does not match the model:",
        "  unexpected key model.inner.extra.weight",
        "  missing key model.inner.L_init",
        "  missing key model.inner.lm_head.weight",
    ]
    _assert_weights(target, before)


def test_our_layout_names_keys_as_our_checkpoint_does(tmp_path: Path) -> None:
    source, target = _model(_config(), seed=1), _model(_config(), seed=2)
    weights = source.state_dict()
    del weights["lm_head.weight"]
    run = tmp_path / "run"
    file = save_checkpoint(run, 5, {"step": 5, "model": weights}, keep=1)

    with pytest.raises(ValueError) as raised:
        load_initial_weights(target, run)

    assert str(raised.value).splitlines() == [
        f"{file}: the checkpoint does not match the model:",
        "  missing key lm_head.weight",
    ]


def test_unreadable_paths_are_named(tmp_path: Path) -> None:
    model = _model(_config(), seed=1)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    empty = tmp_path / "empty"
    empty.mkdir()

    for path in (garbage, tmp_path / "absent.pt", empty):
        with pytest.raises(ValueError) as raised:
            load_initial_weights(model, path)
        assert str(raised.value).startswith(f"{path}: ")
