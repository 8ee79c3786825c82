from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arc_data import EOS, PAD, crop_shapes, decode_grid, encode_grid


def reference_crop_shape(tokens: npt.NDArray[np.integer], size: int) -> tuple[int, int]:
    """The evaluator's crop as written in the reference TRM code (a scalar loop)."""
    grid = np.asarray(tokens).reshape(size, size)
    max_area, best = 0, (0, 0)
    num_c = size
    for num_r in range(1, size + 1):
        for c in range(1, num_c + 1):
            x = grid[num_r - 1, c - 1]
            if x < 2 or x > 11:
                num_c = c - 1
                break
        area = num_r * num_c
        if area > max_area:
            max_area, best = area, (num_r, num_c)
    return best


def test_encode_places_grid_and_eos_border() -> None:
    grid = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)
    canvas = encode_grid(grid, 5, offset=(1, 1)).reshape(5, 5)
    expected = np.array(
        [
            [0, 0, 0, 0, 0],
            [0, 3, 4, 5, 1],
            [0, 6, 7, 8, 1],
            [0, 1, 1, 1, 0],
            [0, 0, 0, 0, 0],
        ]
    )
    np.testing.assert_array_equal(canvas, expected)


def test_eos_falls_off_a_full_canvas() -> None:
    grid = np.full((30, 30), 9, dtype=np.uint8)
    tokens = encode_grid(grid, 30)
    assert not (tokens == EOS).any() and not (tokens == PAD).any()
    np.testing.assert_array_equal(decode_grid(tokens, 30), grid)


def test_eos_only_below_when_grid_spans_the_width() -> None:
    grid = np.zeros((2, 4), dtype=np.uint8)
    canvas = encode_grid(grid, 4).reshape(4, 4)
    np.testing.assert_array_equal(canvas[2], [EOS] * 4)
    np.testing.assert_array_equal(canvas[3], [PAD] * 4)


def test_grid_outside_canvas_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode_grid(np.zeros((3, 3), dtype=np.uint8), 4, offset=(2, 0))


@given(
    height=st.integers(1, 30),
    width=st.integers(1, 30),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=200, deadline=None)
def test_round_trip(height: int, width: int, seed: int) -> None:
    grid = np.random.default_rng(seed).integers(0, 10, (height, width)).astype(np.uint8)
    np.testing.assert_array_equal(decode_grid(encode_grid(grid, 30), 30), grid)


def test_crop_one_by_one() -> None:
    grid = np.array([[7]], dtype=np.uint8)
    np.testing.assert_array_equal(decode_grid(encode_grid(grid, 30), 30), grid)


def test_crop_without_eos_stops_at_pad() -> None:
    canvas = np.zeros((30, 30), dtype=np.int64)
    canvas[:3, :4] = 5  # colour 3, no EOS anywhere
    assert decode_grid(canvas.reshape(-1), 30).shape == (3, 4)


def test_crop_ignores_garbage_after_eos() -> None:
    canvas = encode_grid(np.full((2, 2), 4, dtype=np.uint8), 30).reshape(30, 30).astype(np.int64)
    canvas[0, 3:10] = 6  # colours right of the EOS column
    canvas[5:8, :] = 9  # colours below the EOS row, after an empty row
    np.testing.assert_array_equal(decode_grid(canvas.reshape(-1), 30), np.full((2, 2), 4))


def test_crop_of_all_pad_is_empty() -> None:
    assert decode_grid(np.zeros(900, dtype=np.int64), 30).shape == (0, 0)


def test_crop_keeps_the_largest_area_with_shrinking_width() -> None:
    canvas = np.zeros((4, 4), dtype=np.int64)
    canvas[0, :3] = 2  # width 3
    canvas[1:4, :1] = 2  # then width 1 for three rows: area 4 > 3
    assert tuple(crop_shapes(canvas.reshape(1, -1), 4)[0]) == (4, 1)


@given(seed=st.integers(0, 2**32 - 1), density=st.floats(0.5, 1.0))
@settings(max_examples=300, deadline=None)
def test_vectorised_crop_equals_the_reference_loop(seed: int, density: float) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 12))
    # Mostly colour tokens near the top-left, with PAD/EOS/garbage sprinkled in.
    tokens = np.where(
        rng.random((5, size * size)) < density,
        rng.integers(2, 12, (5, size * size)),
        rng.integers(0, 14, (5, size * size)),
    )
    shapes = crop_shapes(tokens, size)
    for row, shape in zip(tokens, shapes, strict=True):
        assert tuple(shape) == reference_crop_shape(row, size)
