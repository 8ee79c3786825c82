from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from trm_model import TRM, Batch, TRMConfig

ConfigFactory = Callable[..., TRMConfig]
ModelFactory = Callable[..., TRM]
BatchFactory = Callable[..., Batch]


@pytest.mark.slow
def test_whole_model_compiles_and_matches_eager(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    """Dynamo traces the records; it only breaks the graph at the generator's draws."""
    config = small_config(dropout=0.1, carry_perturbation=0.01)
    model = make_model(config).train()
    batch = make_batch(config, 3)
    carry = model.refill(model.initial_carry(batch), batch)
    eager = model(carry, generator=torch.Generator().manual_seed(1))
    compiled = torch.compile(model)(carry, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(compiled.logits, eager.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(compiled.losses.lm, eager.losses.lm, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(compiled.carry.z_H, eager.carry.z_H, rtol=1e-4, atol=1e-5)
    assert torch.equal(compiled.carry.halted, eager.carry.halted)
    torch.autograd.backward(compiled.losses.total())
    assert model.lm_head.weight.grad is not None
