from __future__ import annotations

import pytest
import torch

from trm_model import SparseSignSGD


def test_only_the_rows_in_the_batch_move_by_sign_and_decay() -> None:
    table = torch.arange(15, dtype=torch.float32).view(5, 3)
    original = table.clone()
    optimizer = SparseSignSGD(table, lr=0.1, weight_decay=0.5)
    ids = torch.tensor([1, 3, 1])
    grads = torch.tensor([[1.0, -2.0, 0.5], [-3.0, 0.0, 4.0], [-2.0, 1.0, 0.5]])
    optimizer.step(ids, grads)
    decay = 1 - 0.1 * 0.5
    # id 1: summed gradient [-1, -1, 1]; id 3: [-3, 0, 4] (sign 0 -> decay only).
    expected = original.clone()
    expected[1] = original[1] * decay - 0.1 * torch.tensor([-1.0, -1.0, 1.0])
    expected[3] = original[3] * decay - 0.1 * torch.tensor([-1.0, 0.0, 1.0])
    torch.testing.assert_close(table, expected)


def test_learning_rate_is_settable_between_steps() -> None:
    table = torch.zeros(2, 1)
    optimizer = SparseSignSGD(table, lr=0.0, weight_decay=0.1)
    optimizer.step(torch.tensor([0]), torch.ones(1, 1))
    assert table[0, 0] == 0.0
    optimizer.lr = 0.5
    optimizer.step(torch.tensor([0]), torch.ones(1, 1))
    assert table[0, 0] == -0.5


def test_gradient_shape_is_checked() -> None:
    optimizer = SparseSignSGD(torch.zeros(4, 3), lr=0.1, weight_decay=0.0)
    with pytest.raises(ValueError, match=r"grads must be \[2, 3\]"):
        optimizer.step(torch.tensor([0, 1]), torch.zeros(2, 4))
