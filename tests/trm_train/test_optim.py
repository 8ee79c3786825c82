"""AdamATan2 against its formula, the warm-up/cosine schedule, the EMA."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from trm_train import AdamATan2, ParameterEMA, warmup_cosine
from trm_train.training._schedule import warmup_cosine_scheduler


def _formula_steps(
    p0: list[float], grads: list[list[float]], lr: float, betas: tuple[float, float], wd: float
) -> list[list[float]]:
    """The adam-atan2 0.0.3 kernel's update, scalar by scalar in float64."""
    beta1, beta2 = betas
    p, m, v = list(p0), [0.0] * len(p0), [0.0] * len(p0)
    history = []
    for step, g in enumerate(grads, start=1):
        bc1, bc2 = 1 - beta1**step, 1 - beta2**step
        for i in range(len(p)):
            p[i] *= 1 - lr * wd
            m[i] += (g[i] - m[i]) * (1 - beta1)
            v[i] += (g[i] * g[i] - v[i]) * (1 - beta2)
            p[i] -= (lr / bc1) * math.atan2(m[i], math.sqrt(v[i]) / math.sqrt(bc2))
        history.append(list(p))
    return history


@pytest.mark.parametrize("lr", [0.0, 1e-3, 0.5])
def test_adam_atan2_equals_the_kernel_formula_step_by_step(lr: float) -> None:
    generator = torch.Generator().manual_seed(0)
    p0 = torch.randn(7, generator=generator, dtype=torch.float64)
    grads = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    grads[2, 3] = 0.0  # m = v = 0 at a coordinate must not give NaN
    param = torch.nn.Parameter(p0.clone())
    optimizer = AdamATan2([param], lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    expected = _formula_steps(p0.tolist(), grads.tolist(), lr, (0.9, 0.95), 0.1)
    for step in range(5):
        param.grad = grads[step].clone()
        optimizer.step()
        torch.testing.assert_close(
            param.detach(), torch.tensor(expected[step], dtype=torch.float64)
        )
    if lr == 0.0:
        torch.testing.assert_close(param.detach(), p0)
    assert float(optimizer.state[param]["step"]) == 5.0


def test_adam_atan2_first_step_moves_by_lr_times_sign() -> None:
    # After one step m = (1 - b1) g and sqrt(v / bc2) = |g|: atan2 gives pi/4 * sign(g) / ... exactly
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    optimizer = AdamATan2([param], lr=0.1, betas=(0.9, 0.95), weight_decay=0.0)
    param.grad = torch.tensor([0.5, -4.0, 0.0])
    optimizer.step()
    # bc1 = 0.1, m = 0.1 g, sqrt(v)/sqrt(bc2) = |g|: step = (0.1 / 0.1) * atan2(0.1 g, |g|)
    expected = torch.tensor([1.0 - math.atan2(0.05, 0.5), -2.0 + math.atan2(0.4, 4.0), 3.0])
    torch.testing.assert_close(param.detach(), expected)


def test_adam_atan2_rejects_a_negative_rate() -> None:
    with pytest.raises(ValueError, match="learning rate"):
        AdamATan2([torch.nn.Parameter(torch.zeros(1))], lr=-1.0)


def test_warmup_then_cosine_values() -> None:
    schedule = functools.partial(warmup_cosine, warmup_steps=4, total_steps=14, min_ratio=0.1)
    assert [schedule(s) for s in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert schedule(9) == pytest.approx(0.1 + 0.9 * 0.5)
    assert schedule(14) == pytest.approx(0.1)
    assert schedule(100) == pytest.approx(0.1)
    assert warmup_cosine(50, warmup_steps=0, total_steps=10, min_ratio=1.0) == 1.0


def test_scheduler_gives_the_first_step_a_nonzero_rate() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = AdamATan2([param], lr=1.0)
    scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=4, total_steps=8, min_ratio=1.0)
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_ema_tracks_and_swaps_parameters() -> None:
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    ema = ParameterEMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 4.0]]))
    ema.update()
    with ema.applied():
        torch.testing.assert_close(model.weight.detach(), torch.tensor([[2.0, 3.0]]))
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[3.0, 4.0]]))
