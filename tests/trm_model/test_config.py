from __future__ import annotations

from typing import Any

import attrs
import pytest
import torch

from trm_model import TRM, TRMConfig, arc, sudoku_mlp, tiny
from trm_model._layers import swiglu_width


def _trainable(config: TRMConfig) -> int:
    model = TRM(config, generator=torch.Generator().manual_seed(0))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_arc_has_the_published_parameter_count() -> None:
    assert _trainable(arc(num_puzzle_identifiers=1)) == 6_829_058


def test_sudoku_mlp_parameter_count() -> None:
    # Per block: token MLP over 97 positions (inner 512) 2*512*97 + 512*97, channel MLP
    # (inner 1536) 3*1536*512; plus 2 token embeddings/heads of 11 x 512 and the Q head.
    per_block = 3 * 512 * 97 + 3 * 1536 * 512
    assert _trainable(sudoku_mlp()) == 2 * per_block + 2 * 11 * 512 + 2 * 512 + 2


def test_learned_positions_add_one_table() -> None:
    rope = tiny()
    learned = attrs.evolve(rope, pos_encodings="learned")
    assert _trainable(learned) - _trainable(rope) == rope.total_seq_len * rope.hidden_size


def test_puzzle_table_is_a_buffer_not_a_parameter() -> None:
    model = TRM(tiny(num_puzzle_identifiers=5), generator=torch.Generator().manual_seed(0))
    assert model.puzzle_emb is not None
    assert model.puzzle_emb.shape == (5, 64)
    assert not model.puzzle_emb.requires_grad
    assert "puzzle_emb" in model.state_dict()
    assert all(p.data_ptr() != model.puzzle_emb.data_ptr() for p in model.parameters())


@pytest.mark.parametrize(
    ("width", "expansion", "inner"),
    [(512, 4.0, 1536), (128, 4.0, 512), (97, 4.0, 512), (64, 2.0, 256)],
)
def test_swiglu_width_rounds_up_to_256(width: int, expansion: float, inner: int) -> None:
    assert swiglu_width(width, expansion) == inner


def test_presets_are_valid_and_distinct() -> None:
    assert arc(10).H_cycles == 3 and arc(10).L_cycles == 4 and arc(10).total_seq_len == 916
    assert sudoku_mlp().mlp_t and sudoku_mlp().L_cycles == 6
    assert tiny().seq_len == 100 and tiny().hidden_size == 64
    assert arc(10).dtype == torch.float32
    assert attrs.evolve(arc(10), forward_dtype="bfloat16").dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_heads": 3}, "not divisible"),
        ({"hidden_size": 6, "num_heads": 2}, "even head dimension"),
        ({"mlp_t": True}, "no effect with mlp_t"),
        ({"halt_exploration_prob": 1.5}, "halt_exploration_prob"),
        ({"dropout": 1.0}, "dropout"),
        ({"pos_encodings": "sinusoidal"}, "pos_encodings"),
        ({"num_puzzle_identifiers": 0}, "num_puzzle_identifiers"),
    ],
)
def test_invalid_configs_are_rejected(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        attrs.evolve(tiny(), **changes)


def test_config_is_frozen() -> None:
    config = tiny()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.hidden_size = 8  # type: ignore[misc]
