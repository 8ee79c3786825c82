"""Reporting: `report.md` of a run, from the files it wrote (config, metrics, the latest
evaluation), with matplotlib charts when the `report` extra is installed; and the
`trm-report` command (`_report_cli`).

Exports `write_report` and `line_chart`.
"""

from ._plot import line_chart
from ._report import write_report

__all__ = ["line_chart", "write_report"]
