"""Line charts for the run report: matplotlib when it is installed, else a plain picture.

The fallback draws the axes, a light grid and the lines, but no text (drawing text
would need a font); the report states the ranges and which colour is which, so both
renderers draw each series in the same colour.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from arc_data import write_png

Renderer = Literal["auto", "matplotlib", "numpy"]
RENDERERS: tuple[Renderer, ...] = ("auto", "matplotlib", "numpy")
Points = list[tuple[float, float]]

# matplotlib's default colour cycle (tab10), by name, so the report can say which is which.
SERIES_COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("blue", (0x1F, 0x77, 0xB4)),
    ("orange", (0xFF, 0x7F, 0x0E)),
    ("green", (0x2C, 0xA0, 0x2C)),
    ("red", (0xD6, 0x27, 0x28)),
    ("purple", (0x94, 0x67, 0xBD)),
    ("brown", (0x8C, 0x56, 0x4B)),
)

_WIDTH, _HEIGHT, _MARGIN = 640, 360, 24
_AXIS = (0x33, 0x33, 0x33)
_GRID = (0xE0, 0xE0, 0xE0)


def line_chart(
    series: dict[str, Points],
    path: Path,
    *,
    title: str,
    ylabel: str,
    xlabel: str = "step",
    renderer: Renderer = "auto",
) -> None:
    """Write a PNG with one line per series ((x, y) points; non-finite ones are left
    out), coloured as `SERIES_COLOURS` in order. `renderer` "auto" uses matplotlib when
    it is installed (the `report` extra), else the text-free fallback."""
    if len(series) > len(SERIES_COLOURS):
        raise ValueError(f"at most {len(SERIES_COLOURS)} series per chart, got {len(series)}")
    if renderer not in RENDERERS:
        raise ValueError(f"unknown renderer {renderer!r}; choose from {', '.join(RENDERERS)}")
    clean = {name: finite_points(points) for name, points in series.items()}
    if renderer == "auto":
        renderer = "matplotlib" if importlib.util.find_spec("matplotlib") else "numpy"
    if renderer == "matplotlib":
        _matplotlib_chart(clean, path, title=title, xlabel=xlabel, ylabel=ylabel)
    else:
        write_png(path, _numpy_chart(clean))


def finite_points(points: Points) -> Points:
    return [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]


def _matplotlib_chart(
    series: dict[str, Points], path: Path, *, title: str, xlabel: str, ylabel: str
) -> None:
    # The object API, not pyplot: no global backend or figure state is touched.
    from matplotlib.figure import Figure  # type: ignore[import-not-found, unused-ignore]

    figure = Figure(figsize=(6.4, 3.6), dpi=100)
    axes = figure.subplots()
    for (name, points), (_, rgb) in zip(series.items(), SERIES_COLOURS, strict=False):
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        colour = "#{:02x}{:02x}{:02x}".format(*rgb)
        # A lone point would draw no line.
        marker = "o" if len(points) == 1 else None
        axes.plot(xs, ys, color=colour, label=name, marker=marker, linewidth=1.2)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    if any(series.values()):
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")


def _numpy_chart(series: dict[str, Points]) -> npt.NDArray[np.uint8]:
    image = np.full((_HEIGHT, _WIDTH, 3), 255, dtype=np.uint8)
    left, right, top, bottom = _MARGIN, _WIDTH - _MARGIN, _MARGIN, _HEIGHT - _MARGIN
    for quarter in range(4):
        image[top + quarter * (bottom - top) // 4, left : right + 1] = _GRID
    image[top : bottom + 1, left] = _AXIS
    image[bottom, left : right + 1] = _AXIS
    every = [point for points in series.values() for point in points]
    if not every:
        return image
    x_low, x_high = _span([x for x, _ in every])
    y_low, y_high = _span([y for _, y in every])
    for points, (_, rgb) in zip(series.values(), SERIES_COLOURS, strict=False):
        if not points:
            continue
        values = np.asarray(points, dtype=np.float64)
        xs = left + (values[:, 0] - x_low) / (x_high - x_low) * (right - left)
        ys = bottom - (values[:, 1] - y_low) / (y_high - y_low) * (bottom - top)
        _draw_polyline(image, xs, ys, np.asarray(rgb, dtype=np.uint8))
    return image


def _span(values: list[float]) -> tuple[float, float]:
    """The values' range; a single value gets a margin so that it lands mid-axis."""
    low, high = min(values), max(values)
    if high > low:
        return low, high
    pad = max(abs(low) * 0.1, 0.5)
    return low - pad, high + pad


def _draw_polyline(
    image: npt.NDArray[np.uint8],
    xs: npt.NDArray[np.float64],
    ys: npt.NDArray[np.float64],
    colour: npt.NDArray[np.uint8],
) -> None:
    """Segments sampled once per pixel of their longer side, 2 pixels thick; a lone
    point becomes a 3 x 3 dot."""
    if len(xs) == 1:
        col, row = round(float(xs[0])), round(float(ys[0]))
        image[max(row - 1, 0) : row + 2, max(col - 1, 0) : col + 2] = colour
        return
    columns: list[npt.NDArray[np.float64]] = []
    rows: list[npt.NDArray[np.float64]] = []
    for x0, y0, x1, y1 in zip(xs[:-1], ys[:-1], xs[1:], ys[1:], strict=True):
        samples = int(max(abs(x1 - x0), abs(y1 - y0))) + 2
        t = np.linspace(0.0, 1.0, samples)
        columns.append(x0 + t * (x1 - x0))
        rows.append(y0 + t * (y1 - y0))
    col_index = np.rint(np.concatenate(columns)).astype(np.int64)
    row_index = np.rint(np.concatenate(rows)).astype(np.int64)
    height, width, _ = image.shape
    for d_row in (0, 1):
        for d_col in (0, 1):
            image[
                np.clip(row_index + d_row, 0, height - 1), np.clip(col_index + d_col, 0, width - 1)
            ] = colour
