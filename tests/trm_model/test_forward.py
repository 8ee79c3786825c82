"""The model against a second, plain-tensor derivation of TRM's forward from its weights."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from trm_model import TRM, Batch, StepOutput, TRMConfig

ConfigFactory = Callable[..., TRMConfig]
ModelFactory = Callable[..., TRM]
BatchFactory = Callable[..., Batch]


def _norm(h: Tensor, eps: float) -> Tensor:
    return h / torch.sqrt((h * h).mean(-1, keepdim=True) + eps)


def _swiglu(w: dict[str, Tensor], prefix: str, h: Tensor) -> Tensor:
    gate_up = h @ w[prefix + "gate_up_proj.weight"].T
    inner = gate_up.shape[-1] // 2
    return (F.silu(gate_up[..., :inner]) * gate_up[..., inner:]) @ w[prefix + "down_proj.weight"].T


def _rope(x: Tensor, theta: float) -> Tensor:
    """x: [B, S, heads, D]; pairs (i, i + D/2) rotate by position * theta^(-2i/D)."""
    length, dim = x.shape[1], x.shape[-1]
    freqs = theta ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    angle = torch.arange(length, dtype=torch.float32)[:, None] * freqs[None, :]
    cos, sin = angle.cos()[:, None, :], angle.sin()[:, None, :]
    x1, x2 = x[..., : dim // 2], x[..., dim // 2 :]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def _attention(w: dict[str, Tensor], prefix: str, h: Tensor, config: TRMConfig) -> Tensor:
    batch, length, _ = h.shape
    heads = config.num_heads
    qkv = (h @ w[prefix + "qkv_proj.weight"].T).view(batch, length, 3 * heads, -1)
    q, k, v = qkv[:, :, :heads], qkv[:, :, heads : 2 * heads], qkv[:, :, 2 * heads :]
    if config.pos_encodings == "rope":
        q, k = _rope(q, config.rope_theta), _rope(k, config.rope_theta)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(batch, length, -1)
    return out @ w[prefix + "o_proj.weight"].T


def _net(w: dict[str, Tensor], config: TRMConfig, h: Tensor, injection: Tensor) -> Tensor:
    h = h + injection
    eps = config.rms_norm_eps
    for i in range(config.L_layers):
        prefix = f"net.layers.{i}."
        if config.mlp_t:
            # Mixes positions; its norm runs over the position axis.
            h_t = h.transpose(1, 2)
            h = _norm(h_t + _swiglu(w, prefix + "mlp_t.", h_t), eps).transpose(1, 2)
        else:
            h = _norm(h + _attention(w, prefix + "self_attn.", h, config), eps)
        h = _norm(h + _swiglu(w, prefix + "mlp.", h), eps)
    return h


def _reference_step(model: TRM, batch: Batch) -> tuple[Tensor, Tensor]:
    """Logits and q_halt of a first supervision step, from the weights alone."""
    config = model.config
    w = dict(model.state_dict())
    size, hidden = batch.inputs.shape[0], config.hidden_size
    puzzle = torch.zeros(size, config.puzzle_emb_len * hidden)
    puzzle[:, :hidden] = w["puzzle_emb"][batch.puzzle_identifiers]
    x = torch.cat(
        (puzzle.view(size, config.puzzle_emb_len, hidden), w["embed_tokens.weight"][batch.inputs]),
        dim=1,
    )
    if config.pos_encodings == "learned":
        x = (x + w["embed_pos.weight"]) / math.sqrt(2)
    x = x * math.sqrt(hidden)
    z_H = w["H_init"].expand(size, config.total_seq_len, hidden)
    z_L = w["L_init"].expand(size, config.total_seq_len, hidden)
    for _ in range(config.H_cycles):
        for _ in range(config.L_cycles):
            z_L = _net(w, config, z_L, z_H + x)
        z_H = _net(w, config, z_H, z_L)
    logits = z_H[:, config.puzzle_emb_len :] @ w["lm_head.weight"].T
    q_halt = z_H[:, 0] @ w["q_head.weight"][0] + w["q_head.bias"][0]
    return logits, q_halt


def _model_step(model: TRM, batch: Batch) -> StepOutput:
    model.eval()
    carry = model.refill(model.initial_carry(batch), batch)
    with torch.no_grad():
        return model(carry)


def _randomise_heads(model: TRM) -> None:
    """Non-zero puzzle rows and Q head so that their paths are checked too."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        assert model.puzzle_emb is not None and model.q_head is not None
        model.puzzle_emb.copy_(torch.randn(model.puzzle_emb.shape, generator=generator))
        model.q_head.weight.copy_(0.1 * torch.randn(model.q_head.weight.shape, generator=generator))


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"attention": "math"},
        {"pos_encodings": "learned"},
        {"pos_encodings": "none"},
        {"mlp_t": True, "pos_encodings": "none"},
        {"H_cycles": 1, "L_cycles": 1, "L_layers": 1},
    ],
    ids=["rope-sdpa", "rope-math", "learned", "none", "mlp_t", "one-cycle"],
)
def test_forward_matches_plain_derivation(
    changes: dict[str, object],
    small_config: ConfigFactory,
    make_model: ModelFactory,
    make_batch: BatchFactory,
) -> None:
    config = small_config(**changes)
    model = make_model(config)
    _randomise_heads(model)
    batch = make_batch(config, 3)
    out = _model_step(model, batch)
    logits, q_halt = _reference_step(model, batch)
    torch.testing.assert_close(out.logits, logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.q_halt, q_halt, rtol=1e-4, atol=1e-4)


def test_bfloat16_forward_tracks_float32(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    config = small_config()
    batch = make_batch(config, 3)
    full = _model_step(make_model(config), batch)
    bf16_model = make_model(small_config(forward_dtype="bfloat16"))
    half = _model_step(bf16_model, batch)
    assert half.logits.dtype == torch.bfloat16
    assert half.carry.z_H.dtype == torch.bfloat16
    assert half.q_halt.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in bf16_model.parameters())
    assert torch.isfinite(half.losses.lm).all()
    # bfloat16 keeps ~3 significant digits; after 6 network passes the logits still agree.
    cosine = F.cosine_similarity(half.logits.float().flatten(), full.logits.flatten(), dim=0)
    assert cosine > 0.99
