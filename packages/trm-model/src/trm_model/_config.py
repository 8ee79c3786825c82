"""The TRM configuration and its presets."""

from __future__ import annotations

from typing import Literal

import attrs
import torch
from attrs import validators as v

PosEncodings = Literal["rope", "learned", "none"]
AttentionKernel = Literal["sdpa", "math"]
LossKind = Literal["stablemax", "softmax"]
ActMode = Literal["act", "fixed", "none"]
InternalLosses = Literal["differential", "absolute"]
ForwardDtype = Literal["float32", "bfloat16"]
Arch = Literal["trm", "transformer"]

_positive = v.gt(0)
_non_negative = v.ge(0)
_positive_float = v.gt(0.0)
_non_negative_float = v.ge(0.0)
_probability = v.and_(v.ge(0.0), v.le(1.0))


@attrs.frozen(kw_only=True)
class TRMConfig:
    """Architecture, recursion, halting and loss options of a Tiny Recursive Model.

    Field names follow the reference TRM code (``H_cycles``, ``L_cycles``, ``L_layers``,
    ``puzzle_emb_len``, ...) so that published configurations read across unchanged.
    Build one from a preset (:func:`arc`, :func:`sudoku_mlp`, :func:`tiny`) and change
    fields with ``attrs.evolve``.

    ``arch="transformer"`` is the no-recursion baseline (the seed's
    ``transformers_baseline``): the same blocks (``L_layers`` of them, so the same width,
    depth and parameter count as TRM's one network), embeddings, heads, halting and losses,
    but each supervision step applies the blocks once, to the carried state plus the input
    embeddings, instead of ``H_cycles * (L_cycles + 1)`` times. ``H_cycles`` and
    ``L_cycles`` are ignored; it has one cycle per step (one ``internal`` term).
    """

    # "trm": the recursion. "transformer": the blocks once per supervision step (above).
    arch: Arch = attrs.field(default="trm", validator=v.in_(("trm", "transformer")))
    hidden_size: int = attrs.field(validator=_positive)
    num_heads: int = attrs.field(validator=_positive)
    # SwiGLU width = round(expansion * width * 2/3) rounded up to a multiple of 256.
    expansion: float = attrs.field(validator=_positive_float)
    # Blocks of the one network shared by both states (the transformer's blocks).
    L_layers: int = attrs.field(validator=_positive)
    # Recursion per supervision step (ignored by arch "transformer").
    H_cycles: int = attrs.field(validator=_positive)
    L_cycles: int = attrs.field(validator=_positive)
    seq_len: int = attrs.field(validator=_positive)
    vocab_size: int = attrs.field(validator=_positive)
    # Identifier 0 is the blank puzzle (padding slots), so the table has at least one row.
    num_puzzle_identifiers: int = attrs.field(validator=_positive)
    # Positions prepended for the puzzle embedding (its row fills the first, the rest are
    # zero); 0 disables the puzzle embedding.
    puzzle_emb_len: int = attrs.field(default=16, validator=_non_negative)
    pos_encodings: PosEncodings = attrs.field(
        default="rope", validator=v.in_(("rope", "learned", "none"))
    )
    rope_theta: float = attrs.field(default=10000.0, validator=_positive_float)
    # Replace attention by a SwiGLU across the sequence axis (small fixed grids, Sudoku).
    mlp_t: bool = False
    rms_norm_eps: float = attrs.field(default=1e-5, validator=_positive_float)
    # "math" computes attention from matmuls: its backward can be vmapped (Jacobian
    # engines), whereas SDPA's CPU backward has no batching rule.
    attention: AttentionKernel = attrs.field(default="sdpa", validator=v.in_(("sdpa", "math")))
    forward_dtype: ForwardDtype = attrs.field(
        default="float32", validator=v.in_(("float32", "bfloat16"))
    )
    # Applied to each block's output after its last norm (the seed's placement), in
    # training only.
    dropout: float = attrs.field(default=0.0, validator=v.and_(v.ge(0.0), v.lt(1.0)))

    # "act": a Q head decides halting in training (TRM). "fixed": the Q head and its loss
    # are kept but every sample runs exactly `halt_max_steps` steps. "none": the research
    # write-up's no-ACT variant: no Q head and no halting loss, exactly `halt_max_steps`
    # steps, every H cycle read out with gradient through that cycle alone, and a learned
    # `output_logits_init` buffer (the previous logits of a fresh sample).
    act_mode: ActMode = attrs.field(default="act", validator=v.in_(("act", "fixed", "none")))
    # Supervision steps: the ACT maximum, or exactly this many (act_mode fixed or none).
    halt_max_steps: int = attrs.field(default=16, validator=_positive)
    halt_exploration_prob: float = attrs.field(default=0.1, validator=_probability)
    # Learn q_continue from a bootstrapped target (reference `no_ACT_continue=False`).
    q_continue: bool = False

    loss: LossKind = attrs.field(default="stablemax", validator=v.in_(("stablemax", "softmax")))
    # Weight of the halting BCE inside the per-sample `halt` loss term (0.5 in TRM).
    halt_loss_weight: float = attrs.field(default=0.5, validator=_non_negative_float)
    # Loss on logits_t - logits_(t-1) across supervision steps (the write-up's option).
    differential_loss: bool = False
    # Std of the Gaussian noise added to the carried states between supervision steps.
    carry_perturbation: float = attrs.field(default=0.0, validator=_non_negative_float)
    # One extra loss term per H cycle, each with gradient through its own cycle only, on
    # the ACT model (act_mode "none" always has them).
    intermediate_outputs: bool = False
    # The per-cycle terms. "differential" (the write-up's): cycle h scores
    # logits_h - logits_(h-1).detach() (logits_0 = 0), summed over labelled tokens, not
    # divided by their count. "absolute": cycle h scores logits_h itself, normalised per
    # sequence like the LM loss (so the last term equals it).
    internal_losses: InternalLosses = attrs.field(
        default="differential", validator=v.in_(("differential", "absolute"))
    )

    def __attrs_post_init__(self) -> None:
        if self.q_continue and self.act_mode == "none":
            raise ValueError("q_continue needs a Q head: act_mode 'none' has none")
        if self.mlp_t:
            if self.pos_encodings == "rope":
                raise ValueError(
                    "pos_encodings='rope' has no effect with mlp_t=True (there is no attention); "
                    "use 'none' or 'learned'"
                )
            return
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.pos_encodings == "rope" and self.head_dim % 2:
            raise ValueError(f"rope needs an even head dimension, got {self.head_dim}")

    @property
    def has_q_head(self) -> bool:
        """Whether the model has a Q head and a halting loss (act_mode "act" or "fixed")."""
        return self.act_mode != "none"

    @property
    def cycle_outputs(self) -> bool:
        """Whether every H cycle is read out (with gradient) and gives an internal loss."""
        return self.act_mode == "none" or self.intermediate_outputs

    @property
    def cycles(self) -> int:
        """Cycles per supervision step: ``H_cycles``, or 1 for arch "transformer" (one
        pass of the blocks). With ``cycle_outputs`` each gives one ``internal`` term."""
        return 1 if self.arch == "transformer" else self.H_cycles

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def total_seq_len(self) -> int:
        """Positions the network sees: puzzle positions followed by the tokens."""
        return self.puzzle_emb_len + self.seq_len

    @property
    def dtype(self) -> torch.dtype:
        """The forward dtype (parameters stay float32)."""
        return torch.bfloat16 if self.forward_dtype == "bfloat16" else torch.float32


def arc(num_puzzle_identifiers: int) -> TRMConfig:
    """The published ARC-AGI configuration: 6,829,058 trainable parameters.

    hidden 512, 8 heads, 2 layers, H_cycles 3, L_cycles 4, 30 x 30 canvas, 16 puzzle
    positions, up to 16 supervision steps. The reference trains it in bfloat16 on GPUs:
    ``attrs.evolve(arc(n), forward_dtype="bfloat16")``.
    """
    return TRMConfig(
        hidden_size=512,
        num_heads=8,
        expansion=4.0,
        L_layers=2,
        H_cycles=3,
        L_cycles=4,
        seq_len=900,
        vocab_size=12,
        num_puzzle_identifiers=num_puzzle_identifiers,
    )


def sudoku_mlp(num_puzzle_identifiers: int = 1) -> TRMConfig:
    """The paper's Sudoku-Extreme configuration: token-mixing MLP, no positions, L_cycles 6."""
    return TRMConfig(
        hidden_size=512,
        num_heads=8,
        expansion=4.0,
        L_layers=2,
        H_cycles=3,
        L_cycles=6,
        seq_len=81,
        vocab_size=11,
        num_puzzle_identifiers=num_puzzle_identifiers,
        pos_encodings="none",
        mlp_t=True,
    )


def tiny(num_puzzle_identifiers: int = 16) -> TRMConfig:
    """A CPU-sized model on a 10 x 10 canvas for tests, benchmarks and debugging."""
    return TRMConfig(
        hidden_size=64,
        num_heads=2,
        expansion=4.0,
        L_layers=2,
        H_cycles=2,
        L_cycles=2,
        seq_len=100,
        vocab_size=12,
        num_puzzle_identifiers=num_puzzle_identifiers,
        puzzle_emb_len=4,
        halt_max_steps=4,
    )
