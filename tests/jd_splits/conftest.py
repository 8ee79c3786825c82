"""Loss-term records and a small TRM-shaped model (shared weights applied several times, a
per-sample extra input) for the jd-splits tests."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import attrs
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn


@attrs.frozen
class Terms:
    lm: Tensor
    halt: Tensor | None = None
    internal: Sequence[Tensor] | None = None
    mask: Tensor | None = None


TermsFactory = Callable[..., Terms]


@pytest.fixture
def terms_class() -> type[Terms]:
    return Terms


@pytest.fixture
def make_terms() -> TermsFactory:
    """Random positive loss terms; `zero_positions` columns of `lm` (and of the internal
    losses) are exactly zero, like ignored pixels."""

    def factory(
        batch: int = 4,
        positions: int = 6,
        internal: int = 0,
        *,
        halt: bool = True,
        zero_positions: int = 0,
        mask: Tensor | None = None,
        seed: int = 0,
    ) -> Terms:
        generator = torch.Generator().manual_seed(seed)

        def losses() -> Tensor:
            values = torch.rand(batch, positions, generator=generator, dtype=torch.float64) + 0.1
            values[:, positions - zero_positions :] = 0
            return values.requires_grad_()

        return Terms(
            lm=losses(),
            halt=(
                torch.rand(batch, generator=generator, dtype=torch.float64) + 0.1
            ).requires_grad_()
            if halt
            else None,
            internal=[losses() for _ in range(internal)] or None,
            mask=mask,
        )

    return factory


def _rms_norm(x: Tensor) -> Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)


class Block(nn.Module):
    """Post-norm attention + SwiGLU block with plain-math attention."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.out = nn.Linear(hidden, hidden, bias=False)
        self.gate_up = nn.Linear(hidden, 4 * hidden, bias=False)
        self.down = nn.Linear(2 * hidden, hidden)

    def forward(self, h: Tensor) -> Tensor:
        batch, length, hidden = h.shape
        q, k, v = self.qkv(h).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hidden // self.heads)
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, hidden)
        h = _rms_norm(h + self.out(attended))
        gate, up = self.gate_up(h).chunk(2, -1)
        return _rms_norm(h + self.down(F.silu(gate) * up))


class TinyRecursive(nn.Module):
    """TRM in miniature: one shared two-block network applied `cycles * (inner + 1)` times,
    gradient through the last cycle only, a per-sample extra input (like puzzle-embedding
    rows) at position 0, per-token losses, a halting head and per-cycle internal losses."""

    def __init__(self, vocab: int = 6, hidden: int = 16, cycles: int = 2, inner: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.blocks = nn.ModuleList(Block(hidden, 2) for _ in range(2))
        self.lm_head = nn.Linear(hidden, vocab, bias=False)
        self.q_head = nn.Linear(hidden, 1)
        self.cycles, self.inner = cycles, inner
        self.z_init: Tensor
        self.register_buffer("z_init", torch.randn(2, hidden))

    def net(self, h: Tensor, injection: Tensor) -> Tensor:
        h = h + injection
        for block in self.blocks:
            h = block(h)
        return h

    def forward(
        self, tokens: Tensor, labels: Tensor, rows: Tensor, *, internal: bool = False
    ) -> Terms:
        x = self.embed(tokens) + F.pad(rows[:, None, :], (0, 0, 0, tokens.shape[1] - 1))
        z_h = self.z_init[0].expand_as(x)
        z_l = self.z_init[1].expand_as(x)
        losses = []
        for cycle in range(self.cycles):
            with torch.set_grad_enabled(cycle == self.cycles - 1 and torch.is_grad_enabled()):
                for _ in range(self.inner):
                    z_l = self.net(z_l, z_h + x)
                z_h = self.net(z_h, z_l)
            # Like TRM's intermediate outputs: each has a gradient through the head.
            if internal or cycle == self.cycles - 1:
                logits = self.lm_head(z_h)
                losses.append(self._lm(logits, labels))
        valid = labels >= 0
        correct = ((logits.argmax(-1) == labels) | ~valid).all(-1)
        q = self.q_head(z_h[:, 0]).squeeze(-1)
        halt = 0.5 * F.binary_cross_entropy_with_logits(q, correct.to(q.dtype), reduction="none")
        return Terms(
            lm=losses[-1], halt=halt, internal=losses if internal else None, mask=valid.any(-1)
        )

    @staticmethod
    def _lm(logits: Tensor, labels: Tensor) -> Tensor:
        valid = labels >= 0
        ce = F.cross_entropy(logits.transpose(1, 2), labels.clamp_min(0), reduction="none")
        ce = torch.where(valid, ce, 0.0)
        return ce / valid.sum(-1, keepdim=True).clamp_min(1)


@attrs.frozen
class Batch:
    tokens: Tensor
    labels: Tensor
    rows: Tensor


ModelFactory = Callable[..., tuple[TinyRecursive, Batch]]


@pytest.fixture
def tiny_model() -> ModelFactory:
    """A seeded `TinyRecursive` and a batch: `ignored` trailing positions carry no label."""

    def factory(
        batch: int = 4, length: int = 6, *, ignored: int = 1, seed: int = 0
    ) -> tuple[TinyRecursive, Batch]:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = TinyRecursive().double()
        generator = torch.Generator().manual_seed(seed + 1)
        tokens = torch.randint(0, 6, (batch, length), generator=generator)
        labels = torch.randint(0, 6, (batch, length), generator=generator)
        labels[:, length - ignored :] = -100
        rows = torch.randn(batch, 16, generator=generator, dtype=torch.float64).requires_grad_()
        return model, Batch(tokens, labels, rows)

    return factory
