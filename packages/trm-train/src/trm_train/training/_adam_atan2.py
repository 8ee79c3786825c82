"""AdamATan2: Adam with `atan2(m, sqrt(v))` in place of `m / (sqrt(v) + eps)`.

The update is exactly the one of the fused CUDA kernel of the PyPI package `adam-atan2`
(0.0.3), per parameter and step:

    step += 1; bc1 = 1 - beta1**step; bc2 = 1 - beta2**step
    p *= 1 - lr * wd                                   (decoupled decay, first)
    m = lerp(m, g, 1 - beta1); v = lerp(v, g * g, 1 - beta2)
    p -= (lr / bc1) * atan2(m, sqrt(v) / sqrt(bc2))

`make_adam_atan2` returns the fused kernel when the parameters live on CUDA and the
package imports, and this pure-PyTorch version otherwise. Both keep the same state
(`step` as a float32 scalar tensor on the parameter's device, `exp_avg`, `exp_avg_sq`),
so checkpoints move between them; loading a state puts every `step` back there
(`steps_on_parameter_devices`). A learning rate of 0 is allowed (schedules start there).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer


class AdamATan2(Optimizer):
    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 1e-2,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"invalid learning rate {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}")
        if not weight_decay >= 0.0:
            raise ValueError(f"invalid weight decay {weight_decay}")
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})
        self.register_load_state_dict_post_hook(steps_on_parameter_devices)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, weight_decay = float(group["lr"]), float(group["weight_decay"])
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise RuntimeError("AdamATan2 does not support sparse gradients")
                state = self.state[param]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(
                        param, memory_format=torch.preserve_format
                    )
                state["step"] += 1
                _update(param, param.grad, state, lr, beta1, beta2, weight_decay)
        return loss


def _update(
    param: torch.Tensor,
    grad: torch.Tensor,
    state: dict[str, torch.Tensor],
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
) -> None:
    # Scalars in double precision, as the kernel computes them, then applied in the
    # parameter's math type (float32 for float32 and bfloat16 parameters).
    step = float(state["step"])
    step_size = lr / (1 - math.pow(beta1, step))
    bias_correction2_sqrt = math.sqrt(1 - math.pow(beta2, step))
    compute_dtype = torch.float32 if param.dtype in (torch.bfloat16, torch.float16) else param.dtype
    p = param.to(compute_dtype)
    g = grad.to(compute_dtype)
    exp_avg = state["exp_avg"].to(compute_dtype)
    exp_avg_sq = state["exp_avg_sq"].to(compute_dtype)
    p.mul_(1 - lr * weight_decay)
    exp_avg.lerp_(g, 1 - beta1)
    exp_avg_sq.lerp_(g * g, 1 - beta2)
    p.sub_(step_size * torch.atan2(exp_avg, exp_avg_sq.sqrt() / bias_correction2_sqrt))
    param.copy_(p)
    state["exp_avg"].copy_(exp_avg)
    state["exp_avg_sq"].copy_(exp_avg_sq)


def make_adam_atan2(
    params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
    *,
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
    device: torch.device,
) -> Optimizer:
    """The fused `adam_atan2.AdamATan2` on CUDA when it imports, else `AdamATan2`."""
    if device.type == "cuda":
        try:
            fused = importlib.import_module("adam_atan2")
        except ImportError:
            pass
        else:
            optimizer: Optimizer = fused.AdamATan2(
                params, lr=lr, betas=betas, weight_decay=weight_decay
            )
            optimizer.register_load_state_dict_post_hook(steps_on_parameter_devices)
            return optimizer
    return AdamATan2(params, lr=lr, betas=betas, weight_decay=weight_decay)


def steps_on_parameter_devices(optimizer: Optimizer) -> None:
    """Move every `state["step"]` to its parameter's device as float32, where AdamATan2
    keeps it: the fused kernel reads the count through a device pointer.

    `Optimizer.load_state_dict` moves the other state to the parameter's device but leaves
    `step` where it was loaded (the CPU, for checkpoints read with `map_location="cpu"`)
    unless the group is `fused` or `capturable`, which the kernel's groups are not: a
    resumed GPU run would hand the kernel a host address. A load-state-dict post hook of
    both AdamATan2 versions."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param)
            if state and isinstance(state.get("step"), torch.Tensor):
                state["step"] = state["step"].to(device=param.device, dtype=torch.float32)
