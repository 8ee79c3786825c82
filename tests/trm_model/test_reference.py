"""Loading checkpoints written by the reference TRM code."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from trm_model import TRM, TRMConfig, load_reference_state_dict, to_reference_state_dict
from trm_model._layers import swiglu_width

ConfigFactory = Callable[..., TRMConfig]


def _reference_checkpoint(config: TRMConfig, seed: int = 0) -> dict[str, Tensor]:
    """A state dict laid out as the reference ACTLossHead saves it (bfloat16 initial states)."""
    generator = torch.Generator().manual_seed(seed)
    hidden, vocab = config.hidden_size, config.vocab_size
    inner = swiglu_width(hidden, config.expansion)

    def rand(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator)

    state = {
        "model.inner.H_init": rand(hidden).bfloat16(),
        "model.inner.L_init": rand(hidden).bfloat16(),
        "model.inner.embed_tokens.embedding_weight": rand(vocab, hidden),
        "model.inner.lm_head.weight": rand(vocab, hidden),
        "model.inner.q_head.weight": rand(2, hidden),
        "model.inner.q_head.bias": rand(2),
        "model.inner.puzzle_emb.weights": rand(config.num_puzzle_identifiers, hidden),
    }
    if config.pos_encodings == "learned":
        state["model.inner.embed_pos.embedding_weight"] = rand(config.total_seq_len, hidden)
    for i in range(config.L_layers):
        layer = f"model.inner.L_level.layers.{i}."
        state[layer + "self_attn.qkv_proj.weight"] = rand(3 * hidden, hidden)
        state[layer + "self_attn.o_proj.weight"] = rand(hidden, hidden)
        state[layer + "mlp.gate_up_proj.weight"] = rand(2 * inner, hidden)
        state[layer + "mlp.down_proj.weight"] = rand(hidden, inner)
    return state


@pytest.mark.parametrize("pos_encodings", ["rope", "learned"])
def test_round_trip_of_a_reference_state_dict(
    pos_encodings: str, small_config: ConfigFactory
) -> None:
    config = small_config(pos_encodings=pos_encodings)
    state = _reference_checkpoint(config)
    model = load_reference_state_dict(state, config)
    qkv = model.state_dict()["net.layers.1.self_attn.qkv_proj.weight"]
    assert torch.equal(qkv, state["model.inner.L_level.layers.1.self_attn.qkv_proj.weight"])
    assert torch.equal(
        model.embed_tokens.weight, state["model.inner.embed_tokens.embedding_weight"]
    )
    assert model.puzzle_emb is not None
    assert torch.equal(model.puzzle_emb, state["model.inner.puzzle_emb.weights"])
    assert model.H_init.dtype == torch.float32
    assert torch.equal(model.H_init, state["model.inner.H_init"].float())
    exported = to_reference_state_dict(model)
    assert exported.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(exported[key], value.float()), key


def test_compiled_checkpoints_are_accepted(small_config: ConfigFactory) -> None:
    config = small_config()
    state = _reference_checkpoint(config)
    compiled = {"_orig_mod." + key: value for key, value in state.items()}
    a, b = load_reference_state_dict(state, config), load_reference_state_dict(compiled, config)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_our_own_export_loads_back(small_config: ConfigFactory) -> None:
    config = small_config()
    model = TRM(config, generator=torch.Generator().manual_seed(4))
    loaded = load_reference_state_dict(to_reference_state_dict(model), config)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_wrong_shape_is_named_with_both_shapes(small_config: ConfigFactory) -> None:
    config = small_config()
    state = _reference_checkpoint(config)
    key = "model.inner.L_level.layers.0.self_attn.o_proj.weight"
    state[key] = torch.zeros(32, 16)
    with pytest.raises(
        ValueError, match=rf"{key} has shape \[32, 16\], the config expects \[32, 32\]"
    ):
        load_reference_state_dict(state, config)


def test_missing_and_unexpected_keys_are_listed(small_config: ConfigFactory) -> None:
    config = small_config()
    state = _reference_checkpoint(config)
    del state["model.inner.lm_head.weight"]
    state["model.inner.L_level.layers.2.mlp.down_proj.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as error:
        load_reference_state_dict(state, config)
    message = str(error.value)
    assert "missing key model.inner.lm_head.weight" in message
    assert "unexpected key model.inner.L_level.layers.2.mlp.down_proj.weight" in message


def test_puzzle_identifier_count_mismatch_names_both_counts(small_config: ConfigFactory) -> None:
    config = small_config(num_puzzle_identifiers=8)
    state = _reference_checkpoint(small_config(num_puzzle_identifiers=5))
    with pytest.raises(
        ValueError, match=r"has 5 puzzle identifiers \(.*\) but config.num_puzzle_identifiers is 8"
    ):
        load_reference_state_dict(state, config)
