from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trm_model import IGNORE_LABEL_ID, softmax_cross_entropy, stablemax_cross_entropy


def test_stablemax_matches_hand_computed_values() -> None:
    # s([2, -1, 0]) = [3, 1/2, 1], sum 4.5.
    logits = torch.tensor([[2.0, -1.0, 0.0]] * 4)
    labels = torch.tensor([0, 1, 2, IGNORE_LABEL_ID])
    loss = stablemax_cross_entropy(logits, labels)
    assert loss.dtype == torch.float64
    expected = torch.tensor([math.log(1.5), math.log(9.0), math.log(4.5), 0.0], dtype=torch.float64)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)


def test_stablemax_gradient_is_exact_and_finite_at_the_pole() -> None:
    # At x = 1 the discarded branch 1/(1-x) has its pole; the gradient must stay finite.
    # s = [2, 1], S = 3: d/dx0 = -(1/2 - 1/3) = -1/6, d/dx1 = 1/3.
    logits = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    torch.autograd.backward(stablemax_cross_entropy(logits, torch.tensor(0)))
    assert logits.grad is not None
    torch.testing.assert_close(logits.grad, torch.tensor([-1 / 6, 1 / 3], dtype=torch.float64))


def test_stablemax_negative_branch_gradient() -> None:
    # s = [1/(1 - (-1)), 1] = [1/2, 1], S = 3/2, label 1: loss = -log(1) + log(S).
    # d/dx0 = (1/S) * ds0/dx0 = (2/3) * 1/(1-x)^2 = (2/3)(1/4) = 1/6.
    logits = torch.tensor([-1.0, 0.0], dtype=torch.float64, requires_grad=True)
    loss = stablemax_cross_entropy(logits, torch.tensor(1))
    torch.testing.assert_close(loss, torch.tensor(math.log(1.5), dtype=torch.float64))
    torch.autograd.backward(loss)
    assert logits.grad is not None
    torch.testing.assert_close(logits.grad, torch.tensor([1 / 6, -1 / 3], dtype=torch.float64))


@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7)])
def test_softmax_cross_entropy_matches_torch(shape: tuple[int, ...]) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(*shape, generator=generator)
    labels = torch.randint(0, 7, shape[:-1], generator=generator)
    labels.view(-1)[0] = IGNORE_LABEL_ID
    loss = softmax_cross_entropy(logits, labels)
    expected = F.cross_entropy(
        logits.reshape(-1, 7), labels.reshape(-1), ignore_index=IGNORE_LABEL_ID, reduction="none"
    ).view(labels.shape)
    torch.testing.assert_close(loss, expected)
    assert loss.view(-1)[0] == 0.0
