"""Regional compilation: the pieces of every block between its linear layers, compiled.

Whole-model ``torch.compile`` folds every ``nn.Linear`` / ``nn.Embedding`` call into its
graphs: their forward hooks no longer fire and their outputs are no tensors of the
autograd graph, which Jacobian engines that hook those leaves (jd-splits' ``per_sample``)
need. Compiling only what lies between the leaves keeps them eager, and one small graph
per region (shared by every block and cycle) compiles in about 30 s on the 2-core CPU
box where the unrolled recursion takes 2-3 minutes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch._functorch.config
from torch import Tensor, nn

from ._attention import Attention, attention_core
from ._blocks import Block
from ._layers import SwiGLU, add_rms_norm, swiglu_activation

Region = Callable[..., Tensor]


def compile_regions(
    model: nn.Module, *, mode: str | None = None, dynamic: bool | None = None
) -> None:
    """Swap, in place, the region functions of every `Attention`, `SwiGLU` and `Block` of
    ``model`` for compiled ones (see `TRM.compile_regions`)."""
    # Jacobian engines backpropagate several times through one graph (autojac, sequential,
    # per_sample with pixel groups: retain_graph=True), which a compiled backward with
    # donated buffers (saved activations it overwrites) refuses. The flag is read when a
    # backward compiles, lazily at its first call, so no narrower scope would cover it.
    torch._functorch.config.donated_buffer = False

    def compiled(fn: Region) -> Region:
        return torch.compile(fn, fullgraph=True, mode=mode, dynamic=dynamic)

    core = compiled(attention_core)
    activation = compiled(swiglu_activation)
    add_norm = compiled(add_rms_norm)
    for module in model.modules():
        if isinstance(module, Attention):
            module.core = core
        elif isinstance(module, SwiGLU):
            module.activation = activation
        elif isinstance(module, Block):
            module.add_norm = add_norm
