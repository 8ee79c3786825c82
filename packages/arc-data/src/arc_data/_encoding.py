"""Token encoding of grids on a square canvas, and the evaluator's crop back to a grid.

PAD = 0, EOS = 1, colour c = c + 2. A grid of r x c is written at an offset (r0, c0) of an
S x S canvas; EOS fills the row just below the grid (over its columns) and the column just
right of it (over its rows) where these fall inside the canvas; the rest is PAD. The
canvas is flattened row-major. In labels, PAD becomes IGNORE_LABEL.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from arc_data._errors import ArcDataError
from arc_data._task import Grid

PAD = 0
EOS = 1
COLOUR_OFFSET = 2
VOCAB_SIZE = 12
IGNORE_LABEL = -100

Tokens = npt.NDArray[np.uint8]


def encode_grid(grid: Grid, size: int, offset: tuple[int, int] = (0, 0)) -> Tokens:
    """The flattened `size * size` canvas holding `grid` at `offset`."""
    canvas = np.zeros((size, size), dtype=np.uint8)
    place_grid(canvas, grid, *offset)
    return canvas.reshape(-1)


def place_grid(canvas: npt.NDArray[np.uint8], grid: Grid, row: int, col: int) -> None:
    """Write `grid`'s tokens and its EOS border into a zeroed `canvas` at (row, col)."""
    height, width = grid.shape
    size = canvas.shape[0]
    if row < 0 or col < 0 or row + height > size or col + width > size:
        raise ArcDataError(
            f"a {height}x{width} grid at offset ({row}, {col}) does not fit a {size}x{size} canvas"
        )
    canvas[row : row + height, col : col + width] = grid + COLOUR_OFFSET
    if row + height < size:
        canvas[row + height, col : col + width] = EOS
    if col + width < size:
        canvas[row : row + height, col + width] = EOS


def crop_shapes(tokens: npt.NDArray[np.integer], size: int) -> npt.NDArray[np.int64]:
    """Shapes `[N, 2]` of the grids the evaluator reads off `N` flattened canvases.

    The grid is the largest-area top-left rectangle of colour tokens, found by scanning
    rows: a row's width stops at its first non-colour token (and never exceeds the
    previous rows' width); ties keep the fewest rows. An all-PAD canvas gives 0 x 0.
    """
    canvases = np.asarray(tokens).reshape(-1, size, size)
    is_colour = (canvases >= COLOUR_OFFSET) & (canvases < VOCAB_SIZE)
    # Length of each row's leading run of colour tokens.
    runs = np.where(is_colour.all(axis=2), size, np.argmin(is_colour, axis=2))
    widths = np.minimum.accumulate(runs, axis=1)
    areas = widths * np.arange(1, size + 1)
    best = np.argmax(areas, axis=1)
    rows = np.where(areas.max(axis=1) > 0, best + 1, 0)
    cols = np.where(rows > 0, widths[np.arange(len(best)), best], 0)
    return np.stack([rows, cols], axis=1).astype(np.int64)


def decode_grid(tokens: npt.NDArray[np.integer], size: int) -> Grid:
    """The grid a flattened canvas holds, cropped by `crop_shapes` (colours 0..9)."""
    ((rows, cols),) = crop_shapes(tokens, size)
    canvas = np.asarray(tokens).reshape(size, size)
    return (canvas[:rows, :cols] - COLOUR_OFFSET).astype(np.uint8)
