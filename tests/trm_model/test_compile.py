from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from trm_model import TRM, Batch, TRMConfig

ConfigFactory = Callable[..., TRMConfig]
ModelFactory = Callable[..., TRM]
BatchFactory = Callable[..., Batch]


@pytest.mark.slow
def test_whole_model_compiles_and_matches_eager(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    """Dynamo traces the records; it only breaks the graph at the generator's draws.
    (AOT autograd without inductor: what is tested is the tracing, forward and backward;
    inductor's code generation, about 45 s cold on 2 cores for this graph, is exercised by
    the regions test below.)"""
    config = small_config(dropout=0.1, carry_perturbation=0.01)
    model = make_model(config).train()
    batch = make_batch(config, 3)
    carry = model.refill(model.initial_carry(batch), batch)
    eager = model(carry, generator=torch.Generator().manual_seed(1))
    compiled = torch.compile(model, backend="aot_eager")(
        carry, generator=torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(compiled.logits, eager.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(compiled.losses.lm, eager.losses.lm, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(compiled.carry.z_H, eager.carry.z_H, rtol=1e-4, atol=1e-5)
    assert torch.equal(compiled.carry.halted, eager.carry.halted)
    torch.autograd.backward(compiled.losses.total())
    assert model.lm_head.weight.grad is not None


def _linear_outputs(model: TRM) -> list[Tensor]:
    """Hooks every Linear / Embedding leaf, as the per_sample engine does: the outputs
    they see, in call order."""
    outputs: list[Tensor] = []

    def hook(module: nn.Module, args: Any, output: Tensor) -> None:
        if output.requires_grad:
            outputs.append(output)

    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Embedding):
            module.register_forward_hook(hook)
    return outputs


@pytest.mark.slow  # compiles three small regions: about 50 s on the loaded 2-core box
def test_compiled_regions_match_eager_and_keep_the_leaves_hooked(
    small_config: ConfigFactory, make_model: ModelFactory, make_batch: BatchFactory
) -> None:
    """Outputs and gradients equal eager to float tolerance; the Linear leaves still run
    eagerly (their hooks fire, their outputs take gradients); and after a plain backward
    (which compiles the regions' backward) the graph of the next forward survives several
    backward passes (retain_graph), as Jacobian engines run them."""
    config = small_config(dropout=0.1, H_cycles=2, L_cycles=2)
    batch = make_batch(config, 3)
    models = [make_model(config).train(), make_model(config).train()]
    models[1].compile_regions()
    torch._dynamo.utils.counters.clear()
    runs = []
    for model in models:
        params = [p for p in model.parameters() if p.requires_grad]
        carry = model.refill(model.initial_carry(batch), batch)
        first = model(carry, generator=torch.Generator().manual_seed(1))
        torch.autograd.backward(first.losses.total())
        total_grads = [p.grad for p in params]
        leaves = _linear_outputs(model)
        out = model(carry, generator=torch.Generator().manual_seed(1))
        per_sample = out.losses.lm.sum(1)
        # Every sample's gradient (one backward each through the same graph), and the
        # gradient of the first sample's loss with respect to every hooked leaf output.
        grads = [
            torch.autograd.grad(per_sample[b], params, retain_graph=True, materialize_grads=True)
            for b in range(len(per_sample))
        ]
        leaf_grads = torch.autograd.grad(per_sample[0], leaves, allow_unused=True)
        runs.append((out, [total_grads, *grads], leaf_grads))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 3  # the three regions
    (eager, eager_grads, eager_leaf), (compiled, compiled_grads, compiled_leaf) = runs
    torch.testing.assert_close(compiled.logits, eager.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(compiled.losses.lm, eager.losses.lm, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(compiled.q_halt, eager.q_halt, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(compiled.carry.z_L, eager.carry.z_L, rtol=1e-4, atol=1e-5)
    for backward_compiled, backward_eager in zip(compiled_grads, eager_grads, strict=True):
        for got, expected in zip(backward_compiled, backward_eager, strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    # 1 embedding + 2 layers x 4 linears x (L_cycles + 1) + lm_head + q_head calls.
    assert len(compiled_leaf) == len(eager_leaf) == 1 + 2 * 4 * 3 + 2
    for got_leaf, expected_leaf in zip(compiled_leaf, eager_leaf, strict=True):
        assert (got_leaf is None) == (expected_leaf is None)
        if got_leaf is not None and expected_leaf is not None:
            torch.testing.assert_close(got_leaf, expected_leaf, rtol=1e-4, atol=1e-6)
