"""Shared factories (as fixtures: test modules are imported by path, not as a package)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest
import torch

from trm_model import IGNORE_LABEL_ID, TRM, Batch, TRMConfig, tiny

ConfigFactory = Callable[..., TRMConfig]
ModelFactory = Callable[..., TRM]
BatchFactory = Callable[..., Batch]


def _small_config(**changes: Any) -> TRMConfig:
    """Small enough for many CPU forwards per test: 16 tokens, hidden 32, 2 puzzle positions."""
    base = attrs.evolve(
        tiny(num_puzzle_identifiers=8), hidden_size=32, seq_len=16, puzzle_emb_len=2
    )
    return attrs.evolve(base, **changes)


def _make_model(config: TRMConfig, seed: int = 0) -> TRM:
    return TRM(config, generator=torch.Generator().manual_seed(seed))


def _make_batch(config: TRMConfig, size: int, seed: int = 0, ignore_tail: int = 0) -> Batch:
    """Random tokens and puzzle ids; the last ``ignore_tail`` labels of each row are ignored."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, config.vocab_size, (size, config.seq_len), generator=generator)
    labels = torch.randint(0, config.vocab_size, (size, config.seq_len), generator=generator)
    if ignore_tail:
        labels[:, -ignore_tail:] = IGNORE_LABEL_ID
    ids = torch.randint(1, config.num_puzzle_identifiers, (size,), generator=generator)
    return Batch(inputs=inputs, labels=labels, puzzle_identifiers=ids)


@pytest.fixture
def small_config() -> ConfigFactory:
    return _small_config


@pytest.fixture
def make_model() -> ModelFactory:
    return _make_model


@pytest.fixture
def make_batch() -> BatchFactory:
    return _make_batch
