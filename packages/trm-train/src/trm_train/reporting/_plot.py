"""Line charts of the run report, drawn with matplotlib (the `report` extra).

matplotlib is imported when a chart is drawn, not with this module: without it the
report is still written, saying that its charts need the extra.
"""

from __future__ import annotations

import math
from pathlib import Path

Points = list[tuple[float, float]]

# What installs matplotlib, for the messages that ask for it.
CHARTS_EXTRA = "pip install 'trm-train[report]'"

# matplotlib's default colour cycle (tab10), by name, so the report can say which is which.
SERIES_COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("blue", (0x1F, 0x77, 0xB4)),
    ("orange", (0xFF, 0x7F, 0x0E)),
    ("green", (0x2C, 0xA0, 0x2C)),
    ("red", (0xD6, 0x27, 0x28)),
    ("purple", (0x94, 0x67, 0xBD)),
    ("brown", (0x8C, 0x56, 0x4B)),
)


def charts_available() -> bool:
    """Whether matplotlib can be imported, so that `line_chart` can draw."""
    try:
        import matplotlib.figure  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


def line_chart(
    series: dict[str, Points], path: Path, *, title: str, ylabel: str, xlabel: str = "step"
) -> None:
    """Write a PNG with one line per series ((x, y) points; non-finite ones are left
    out), coloured as `SERIES_COLOURS` in order. Needs matplotlib (ImportError without)."""
    if len(series) > len(SERIES_COLOURS):
        raise ValueError(f"at most {len(SERIES_COLOURS)} series per chart, got {len(series)}")
    try:
        # The object API, not pyplot: no global backend or figure state is touched.
        from matplotlib.figure import Figure  # type: ignore[import-not-found, unused-ignore]
    except ImportError as error:
        raise ImportError(f"line charts need matplotlib ({CHARTS_EXTRA})") from error

    figure = Figure(figsize=(6.4, 3.6), dpi=100)
    axes = figure.subplots()
    drawn = False
    for (name, points), (_, rgb) in zip(series.items(), SERIES_COLOURS, strict=False):
        finite = [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
        if not finite:
            continue
        xs, ys = zip(*finite, strict=True)
        colour = "#{:02x}{:02x}{:02x}".format(*rgb)
        # A lone point would draw no line.
        marker = "o" if len(finite) == 1 else None
        axes.plot(xs, ys, color=colour, label=name, marker=marker, linewidth=1.2)
        drawn = True
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    if drawn:
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")
