"""The Tiny Recursive Model: embeddings, recursion, ACT step and loss head."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ._attention import Rope, rotary_cos_sin
from ._blocks import BlockStack
from ._compile import compile_regions
from ._config import TRMConfig
from ._halting import adaptive_halting, next_halted, q_continue_target
from ._layers import CastedEmbedding, CastedLinear, trunc_normal_
from ._loss_head import loss_head
from ._records import Batch, Carry, StepOutput

# Learned positions are added to the embeddings, then scaled by 1/sqrt(2) to keep the
# forward variance (the reference's constant, kept bit for bit).
_LEARNED_POS_SCALE = 0.707106781


class TRM(nn.Module):
    """Tiny Recursive Model with its ACT wrapper and loss head.

    One call runs one supervision step on every slot of a :class:`Carry`::

        carry = model.initial_carry(batch)        # every slot empty (halted)
        carry = model.refill(carry, batch)        # halted slots take the batch's samples
        out = model(carry, generator=generator)   # one supervision step
        carry = out.carry                         # detached; refill it with the next batch

    The forward is pure: it writes no buffer and draws its randomness (dropout, halting
    exploration, carry perturbation) only from ``generator``, so the same inputs and
    generator state give the same outputs, and each sample's outputs depend on its own
    inputs only. The puzzle embedding table ``puzzle_emb`` is a buffer: to train it, pass
    ``puzzle_rows = model.puzzle_emb[carry.batch.puzzle_identifiers].requires_grad_()``
    and hand ``puzzle_rows.grad`` to :class:`SparseSignSGD`.

    Parameters are created on ``generator.device`` and drawn from ``generator``.

    With ``config.arch == "transformer"`` it is the no-recursion baseline: the same modules
    (so the same parameters and state-dict keys), but one step computes
    ``z_H = blocks(z_H + x)`` once (``x``: the input embeddings), reads the logits and Q
    values from that ``z_H`` and carries it (detached) to the next step, as the seed's
    ``transformers_baseline`` does. ``z_L`` rides along unused (fresh slots get ``L_init``),
    so the carry keeps TRM's layout.
    """

    H_init: Tensor
    L_init: Tensor
    output_logits_init: Tensor | None
    puzzle_emb: Tensor | None
    rope_cos: Tensor | None
    rope_sin: Tensor | None

    def __init__(self, config: TRMConfig, *, generator: torch.Generator) -> None:
        super().__init__()
        self.config = config
        hidden, dtype = config.hidden_size, config.dtype
        # Built on the meta device so that construction draws nothing from the global RNG.
        with torch.device("meta"):
            self.embed_tokens = CastedEmbedding(config.vocab_size, hidden, dtype=dtype)
            self.embed_pos = (
                CastedEmbedding(config.total_seq_len, hidden, dtype=dtype)
                if config.pos_encodings == "learned"
                else None
            )
            self.net = BlockStack(config)
            self.lm_head = CastedLinear(hidden, config.vocab_size, bias=False)
            self.q_head = CastedLinear(hidden, 2, bias=True) if config.has_q_head else None
        device = generator.device
        self.to_empty(device=device)
        self.register_buffer("H_init", torch.empty(hidden, device=device))
        self.register_buffer("L_init", torch.empty(hidden, device=device))
        self.register_buffer(
            "output_logits_init",
            None if config.has_q_head else torch.empty(config.vocab_size, device=device),
        )
        self.register_buffer(
            "puzzle_emb",
            torch.empty(config.num_puzzle_identifiers, hidden, device=device)
            if config.puzzle_emb_len
            else None,
        )
        rope = (
            rotary_cos_sin(config.head_dim, config.total_seq_len, config.rope_theta, device)
            if config.pos_encodings == "rope"
            else (None, None)
        )
        self.register_buffer("rope_cos", rope[0], persistent=False)
        self.register_buffer("rope_sin", rope[1], persistent=False)
        self.init_weights(generator)

    def init_weights(self, generator: torch.Generator) -> None:
        """TRM's initialisation, every draw from ``generator``.

        Linears: truncated normal, std 1/sqrt(fan_in); token (and learned position)
        embeddings: std 1/sqrt(hidden); Q head: zero weight, bias -5 (halt rarely at
        first); initial states and ``output_logits_init``: truncated normal, std 1;
        puzzle embeddings: zero.
        """
        for module in self.modules():
            if isinstance(module, CastedLinear):
                module.reset_parameters_from(generator)
        embed_std = self.config.hidden_size**-0.5
        trunc_normal_(self.embed_tokens.weight, std=embed_std, generator=generator)
        if self.embed_pos is not None:
            trunc_normal_(self.embed_pos.weight, std=embed_std, generator=generator)
        trunc_normal_(self.H_init, std=1.0, generator=generator)
        trunc_normal_(self.L_init, std=1.0, generator=generator)
        if self.output_logits_init is not None:
            trunc_normal_(self.output_logits_init, std=1.0, generator=generator)
        with torch.no_grad():
            if self.q_head is not None:
                self.q_head.weight.zero_()
                assert self.q_head.bias is not None
                self.q_head.bias.fill_(-5.0)
            if self.puzzle_emb is not None:
                self.puzzle_emb.zero_()

    def compile_regions(self, *, mode: str | None = None, dynamic: bool | None = None) -> None:
        """Compile, in place, what every block computes between its linear layers: the
        attention core (rotary, attention), the residual + RMS norms and the SwiGLU
        activation, each ``torch.compile(fn, fullgraph=True, mode=mode, dynamic=dynamic)``
        shared by all blocks and compiled at its first call.

        Every ``nn.Linear`` / ``nn.Embedding`` leaf still runs eagerly, so forward hooks on
        them fire and their outputs stay tensors of the autograd graph: jd-splits'
        ``per_sample`` engine works, and so do the engines that backpropagate several
        times (``autojac``, ``sequential``). torchjd's autogram does not: it vmaps the
        backward, which torch refuses for compiled backward functions. Sets
        ``torch._functorch.config.donated_buffer = False`` for the process: a compiled
        backward that reuses its saved activations' memory refuses a second pass.
        """
        compile_regions(self, mode=mode, dynamic=dynamic)

    def initial_carry(self, batch: Batch) -> Carry:
        """A carry shaped like ``batch`` whose slots are all empty (halted)."""
        cfg = self.config
        size, device = batch.inputs.shape[0], batch.inputs.device
        state = torch.zeros(
            size, cfg.total_seq_len, cfg.hidden_size, dtype=cfg.dtype, device=device
        )
        return Carry(
            z_H=state,
            z_L=state,
            steps=torch.zeros(size, dtype=torch.int32, device=device),
            halted=torch.ones(size, dtype=torch.bool, device=device),
            batch=Batch(
                inputs=torch.zeros_like(batch.inputs),
                labels=torch.zeros_like(batch.labels),
                puzzle_identifiers=torch.zeros_like(batch.puzzle_identifiers),
            ),
            prev_logits=(
                torch.zeros(size, cfg.seq_len, cfg.vocab_size, dtype=cfg.dtype, device=device)
                if cfg.differential_loss
                else None
            ),
        )

    def refill(self, carry: Carry, batch: Batch) -> Carry:
        """Give each halted slot the sample of ``batch`` in its row, fresh states, step 0
        and, for the differential loss, the fresh previous logits (``output_logits_init``
        in act_mode "none", else 0)."""
        halted = carry.halted
        rows = halted.view(-1, 1, 1)
        dtype = self.config.dtype
        fresh_logits = 0.0 if self.output_logits_init is None else self.output_logits_init.to(dtype)
        return Carry(
            z_H=torch.where(rows, self.H_init.to(dtype), carry.z_H),
            z_L=torch.where(rows, self.L_init.to(dtype), carry.z_L),
            steps=torch.where(halted, 0, carry.steps),
            halted=torch.zeros_like(halted),
            batch=carry.batch.replace_rows(halted, batch),
            prev_logits=(
                None
                if carry.prev_logits is None
                else torch.where(rows, fresh_logits, carry.prev_logits)
            ),
        )

    def _draws_random(self) -> bool:
        cfg = self.config
        explores = adaptive_halting(cfg, self.training) and cfg.halt_exploration_prob > 0
        return self.training and (cfg.dropout > 0 or cfg.carry_perturbation > 0 or explores)

    def _input_embeddings(self, batch: Batch, puzzle_rows: Tensor | None) -> Tensor:
        cfg = self.config
        x: Tensor = self.embed_tokens(batch.inputs)
        if self.puzzle_emb is not None:
            rows = self.puzzle_emb[batch.puzzle_identifiers] if puzzle_rows is None else puzzle_rows
            padding = x.new_zeros(x.shape[0], cfg.puzzle_emb_len - 1, cfg.hidden_size)
            x = torch.cat((rows.to(x.dtype).unsqueeze(1), padding, x), dim=1)
        elif puzzle_rows is not None:
            raise ValueError("puzzle_rows given but the config has no puzzle embedding")
        if self.embed_pos is not None:
            positions = torch.arange(cfg.total_seq_len, device=x.device).expand(x.shape[0], -1)
            x = _LEARNED_POS_SCALE * (x + self.embed_pos(positions))
        return x * math.sqrt(cfg.hidden_size)

    def _cycle(
        self,
        z_H: Tensor,
        z_L: Tensor,
        x: Tensor,
        rope: Rope | None,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        """One H cycle: L_cycles updates of z_L from (z_L, z_H, x), then z_H from (z_H, z_L).

        Arch "transformer": the blocks once over (z_H + x); z_L is returned unchanged.
        """
        if self.config.arch == "transformer":
            return self.net(z_H, x, rope, generator), z_L
        for _ in range(self.config.L_cycles):
            z_L = self.net(z_L, z_H + x, rope, generator)
        z_H = self.net(z_H, z_L, rope, generator)
        return z_H, z_L

    def _logits(self, z_H: Tensor) -> Tensor:
        logits: Tensor = self.lm_head(z_H[:, self.config.puzzle_emb_len :])
        return logits

    def _q(self, z_H: Tensor) -> tuple[Tensor, Tensor]:
        if self.q_head is None:
            # No Q head: 0 for every sample, so that votes rank by count alone.
            zeros = z_H.new_zeros(z_H.shape[0], dtype=torch.float32)
            return zeros, zeros
        q: Tensor = self.q_head(z_H[:, 0])
        q_halt, q_continue = q.float().unbind(-1)
        return q_halt, q_continue

    def forward(
        self,
        carry: Carry,
        puzzle_rows: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> StepOutput:
        """One supervision step on every slot of ``carry`` (refill it first).

        ``puzzle_rows``: ``[B, hidden]`` puzzle embeddings of the slots' samples; read
        from the table (without gradient to it) when omitted. ``generator`` is required
        when training draws random numbers (dropout, exploration, perturbation).
        """
        cfg = self.config
        if generator is None and self._draws_random():
            raise ValueError(
                "this training step draws random numbers (dropout, halting exploration or "
                "carry perturbation): pass generator=torch.Generator(...)"
            )
        rope = (
            None
            if self.rope_cos is None or self.rope_sin is None
            else (self.rope_cos, self.rope_sin)
        )
        x = self._input_embeddings(carry.batch, puzzle_rows)
        z_H, z_L = carry.z_H, carry.z_L
        cycle_logits: list[Tensor] | None = None
        if cfg.cycle_outputs:
            # Every cycle is read out, with gradient through that cycle alone.
            cycle_logits = []
            for _ in range(cfg.cycles):
                z_H, z_L = self._cycle(z_H.detach(), z_L.detach(), x, rope, generator)
                cycle_logits.append(self._logits(z_H))
            logits = cycle_logits[-1]
        else:
            with torch.no_grad():
                for _ in range(cfg.cycles - 1):
                    z_H, z_L = self._cycle(z_H, z_L, x, rope, generator)
            z_H, z_L = self._cycle(z_H, z_L, x, rope, generator)
            logits = self._logits(z_H)
        q_halt, q_continue = self._q(z_H)

        with torch.no_grad():
            z_H, z_L = z_H.detach(), z_L.detach()
            steps = carry.steps + 1
            halted = next_halted(
                cfg, steps, q_halt, q_continue, training=self.training, generator=generator
            )
            target = None
            if cfg.q_continue and adaptive_halting(cfg, self.training):
                # Q values of the next step on the same samples (no replay buffer, no target
                # network: the batch's many parallel slots play that role, as in TRM).
                next_z_H, next_z_L = z_H, z_L
                for _ in range(cfg.cycles):
                    next_z_H, next_z_L = self._cycle(next_z_H, next_z_L, x, rope, generator)
                target = q_continue_target(steps >= cfg.halt_max_steps, *self._q(next_z_H))
            if self.training and cfg.carry_perturbation > 0:
                assert generator is not None
                z_H = self._perturb(z_H, generator)
                if cfg.arch == "trm":  # the transformer's z_L is unused: left as it is
                    z_L = self._perturb(z_L, generator)

        losses, metrics, preds = loss_head(
            cfg,
            labels=carry.batch.labels,
            logits=logits,
            cycle_logits=cycle_logits,
            prev_logits=carry.prev_logits,
            q_halt=q_halt,
            q_continue=q_continue,
            q_continue_target=target,
            halted=halted,
            steps=steps,
        )
        new_carry = Carry(
            z_H=z_H,
            z_L=z_L,
            steps=steps,
            halted=halted,
            batch=carry.batch,
            prev_logits=None if carry.prev_logits is None else logits.detach(),
        )
        return StepOutput(
            carry=new_carry,
            logits=logits,
            preds=preds,
            q_halt=q_halt,
            q_continue=q_continue,
            losses=losses,
            metrics=metrics,
        )

    def _perturb(self, z: Tensor, generator: torch.Generator) -> Tensor:
        noise = torch.randn(z.shape, generator=generator, device=z.device)
        return z + (self.config.carry_perturbation * noise).to(z.dtype)

    if TYPE_CHECKING:

        def __call__(
            self,
            carry: Carry,
            puzzle_rows: Tensor | None = None,
            *,
            generator: torch.Generator | None = None,
        ) -> StepOutput: ...
