"""Pictures of grids in the standard ARC colours, written as PNG without extra libraries."""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from arc_data._encoding import COLOUR_OFFSET
from arc_data._task import Grid

Image = npt.NDArray[np.uint8]  # [height, width, 3] RGB

# The palette of the ARC-AGI web app, colours 0..9.
ARC_PALETTE: npt.NDArray[np.uint8] = np.array(
    [
        (0x00, 0x00, 0x00),  # 0 black
        (0x00, 0x74, 0xD9),  # 1 blue
        (0xFF, 0x41, 0x36),  # 2 red
        (0x2E, 0xCC, 0x40),  # 3 green
        (0xFF, 0xDC, 0x00),  # 4 yellow
        (0xAA, 0xAA, 0xAA),  # 5 grey
        (0xF0, 0x12, 0xBE),  # 6 magenta
        (0xFF, 0x85, 0x1B),  # 7 orange
        (0x7F, 0xDB, 0xFF),  # 8 light blue
        (0x87, 0x0C, 0x25),  # 9 maroon
    ],
    dtype=np.uint8,
)
_GRID_LINE = np.array((0x55, 0x55, 0x55), dtype=np.uint8)
_BACKGROUND = np.array((0xFF, 0xFF, 0xFF), dtype=np.uint8)
_MISSING = np.array((0xE4, 0xE4, 0xE4), dtype=np.uint8)


def grid_image(grid: Grid, cell: int = 16) -> Image:
    """A grid drawn with `cell`-pixel squares separated by 1-pixel grey lines."""
    height, width = grid.shape
    step = cell + 1
    image = np.empty((height * step + 1, width * step + 1, 3), dtype=np.uint8)
    image[...] = _GRID_LINE
    colours = ARC_PALETTE[grid]
    for r in range(cell):
        for c in range(cell):
            image[1 + r :: step, 1 + c :: step][:height, :width] = colours
    return image


def grid_rows_image(rows: Sequence[Sequence[Grid | None]], cell: int = 16, gap: int = 12) -> Image:
    """Rows of grids side by side (None draws a light-grey placeholder), on white."""
    cells = [[None if g is None else grid_image(g, cell) for g in row] for row in rows]
    placeholder = np.empty((3 * cell, 3 * cell, 3), dtype=np.uint8)
    placeholder[...] = _MISSING
    images = [[placeholder if im is None else im for im in row] for row in cells]
    row_heights = [max((im.shape[0] for im in row), default=0) for row in images]
    row_widths = [sum(im.shape[1] for im in row) + gap * max(len(row) - 1, 0) for row in images]
    total_height = sum(row_heights) + gap * (len(images) + 1)
    total_width = max(row_widths, default=0) + 2 * gap
    canvas = np.empty((total_height, total_width, 3), dtype=np.uint8)
    canvas[...] = _BACKGROUND
    top = gap
    for row, height in zip(images, row_heights, strict=True):
        left = gap
        for im in row:
            canvas[top : top + im.shape[0], left : left + im.shape[1]] = im
            left += im.shape[1] + gap
        top += height + gap
    return canvas


def canvas_grid(tokens: npt.NDArray[np.integer], size: int) -> Grid | None:
    """The grid inside a (possibly translated) token canvas: the bounding box of its
    colour tokens, or None when it holds none."""
    canvas = np.asarray(tokens).reshape(size, size)
    colour = canvas >= COLOUR_OFFSET
    if not colour.any():
        return None
    rows = np.flatnonzero(colour.any(axis=1))
    cols = np.flatnonzero(colour.any(axis=0))
    box = canvas[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return (box.astype(np.int64) - COLOUR_OFFSET).clip(0, 9).astype(np.uint8)


def write_png(path: str | Path, image: Image) -> None:
    """Write an RGB uint8 image as an 8-bit truecolour PNG.

    The file appears complete or not at all: the bytes go to a hidden file next to it,
    renamed into place; on failure that file is removed and the `OSError` names `path`.
    The folder must exist.
    """
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an [height, width, 3] image, got shape {image.shape}")
    height, width, _ = image.shape
    # Each scanline starts with its filter type (0: none).
    raw = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, -1)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + chunk(b"IEND", b"")
    )
    path = Path(path)
    # The name is cut so that the hidden file's stays short (file systems allow 255 bytes).
    partial = path.parent / f".{path.name[:200]}.partial-{os.getpid()}"
    try:
        partial.write_bytes(png)
        os.replace(partial, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno is not None:
            # The hidden file's name would only confuse: report the file asked for.
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
