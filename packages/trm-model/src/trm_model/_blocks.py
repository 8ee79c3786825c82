"""The post-norm block and the block stack shared by both recursive states."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ._attention import Attention, Rope
from ._config import TRMConfig
from ._layers import SwiGLU, add_rms_norm, dropout


class Block(nn.Module):
    """``h = norm(h + mix(h)); h = dropout(norm(h + mlp(h)))``, mix = attention or token
    MLP. Dropout on the block's output after its last norm is the write-up's placement.

    Dropout acts here, between leaf modules, never inside a module owning parameters:
    Jacobian engines re-run the leaf modules and must see the same function.
    """

    def __init__(self, config: TRMConfig) -> None:
        super().__init__()
        self.eps = config.rms_norm_eps
        self.dropout_p = config.dropout
        self.self_attn = (
            None
            if config.mlp_t
            else Attention(config.hidden_size, config.num_heads, config.attention)
        )
        # The token MLP mixes positions: it acts on [B, hidden, positions], and its norm
        # (as in the reference) runs over the position axis.
        self.mlp_t = SwiGLU(config.total_seq_len, config.expansion) if config.mlp_t else None
        self.mlp = SwiGLU(config.hidden_size, config.expansion)
        # A plain function attribute: `TRM.compile_regions` swaps in its compiled version.
        self.add_norm: Callable[[Tensor, Tensor, float], Tensor] = add_rms_norm

    def _drop(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        if not self.training or self.dropout_p == 0.0:
            return x
        assert generator is not None, "TRM.forward requires a generator for dropout"
        return dropout(x, self.dropout_p, generator)

    def forward(self, h: Tensor, rope: Rope | None, generator: torch.Generator | None) -> Tensor:
        if self.mlp_t is not None:
            h_t = h.transpose(1, 2)
            h = self.add_norm(h_t, self.mlp_t(h_t), self.eps).transpose(1, 2)
        else:
            assert self.self_attn is not None
            h = self.add_norm(h, self.self_attn(h, rope), self.eps)
        return self._drop(self.add_norm(h, self.mlp(h), self.eps), generator)


class BlockStack(nn.Module):
    """``net(h, injection) = blocks(h + injection)``: the one network of TRM."""

    def __init__(self, config: TRMConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(config) for _ in range(config.L_layers))

    def forward(
        self, h: Tensor, injection: Tensor, rope: Rope | None, generator: torch.Generator | None
    ) -> Tensor:
        h = h + injection
        for layer in self.layers:
            h = layer(h, rope, generator)
        return h
