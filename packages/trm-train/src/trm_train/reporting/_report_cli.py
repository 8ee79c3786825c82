"""`trm-report`: write a run's report.md and print its path."""

from __future__ import annotations

from pathlib import Path

import click

from .._run import CommandError
from ._figures import ReportError
from ._plot import CHARTS_EXTRA, charts_available
from ._report import write_report


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--pictures",
    type=click.IntRange(min=0),
    default=6,
    show_default=True,
    help="Link the prediction pictures of the first N tasks.",
)
def main(run_dir: Path, pictures: int) -> None:
    """Write RUN_DIR/report.md (configuration, metrics, charts in RUN_DIR/report/, the
    latest evaluation's prediction pictures) and print its path. The charts need
    matplotlib (pip install 'trm-train[report]'); without it the report says so.

    Example: trm-report runs/quickstart/run
    """
    try:
        path = write_report(run_dir, num_pictures=pictures)
    except (FileNotFoundError, ValueError, ReportError) as error:
        raise click.UsageError(str(error)) from error
    except OSError as error:  # e.g. a report.md or report/ that cannot be written
        raise CommandError.from_os_error(error) from error
    if not charts_available():
        click.echo(f"no charts drawn: they need matplotlib ({CHARTS_EXTRA})", err=True)
    click.echo(str(path))
