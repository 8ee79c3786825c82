"""Recording the calls of a model's nn.Linear / nn.Embedding leaves with forward hooks."""

from __future__ import annotations

from typing import Any

import attrs
import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


def per_sample_problems(model: nn.Module) -> list[str]:
    """Why the `per_sample` engine cannot handle `model` (empty when it can)."""
    problems = []
    for name, module in model.named_modules():
        if not any(p.requires_grad for p in module.parameters(recurse=False)):
            continue
        label = f"{name or '<model>'} ({type(module).__name__})"
        if isinstance(module, nn.Linear):
            continue
        if isinstance(module, nn.Embedding):
            if module.max_norm is not None or module.scale_grad_by_freq or module.sparse:
                problems.append(f"{label}: max_norm, scale_grad_by_freq and sparse are unsupported")
            continue
        problems.append(f"{label} owns trainable parameters but is not nn.Linear or nn.Embedding")
    return problems


@attrs.frozen
class Call:
    module: nn.Linear | nn.Embedding
    input: Tensor
    output: Tensor
    versions: tuple[int, int]


class CallRecorder:
    """Records the grad-enabled calls of the model's Linear and Embedding leaves while
    attached (forward hooks; nothing is added to the autograd graph)."""

    def __init__(self, model: nn.Module) -> None:
        self._modules = [
            module
            for module in model.modules()
            if isinstance(module, nn.Linear | nn.Embedding)
            and any(p.requires_grad for p in module.parameters(recurse=False))
        ]
        self._handles: list[RemovableHandle] = []
        self.calls: list[Call] = []

    def attach(self) -> None:
        self.calls = []
        self._handles = [
            module.register_forward_hook(self._hook, with_kwargs=True) for module in self._modules
        ]

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.calls = []

    def _hook(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        if not (torch.is_grad_enabled() and isinstance(output, Tensor) and output.requires_grad):
            return
        value = args[0] if args else kwargs["input"]
        assert isinstance(module, nn.Linear | nn.Embedding)
        self.calls.append(Call(module, value, output, (value._version, output._version)))
