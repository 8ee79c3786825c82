"""The error of bad input; errors of the file system worded for the command line."""

from __future__ import annotations

from pathlib import Path


class ArcDataError(ValueError):
    """Malformed input or misuse: the message names the file, task and what is wrong.

    The CLI prints it as one line on stderr and exits with code 2.
    """


def describe_os_error(error: OSError, fallback_paths: list[str]) -> str:
    """`PATH: reason` for an `OSError`: the file(s) it names, else `fallback_paths`."""
    if error.filename is not None:
        where = str(error.filename)
        if error.filename2 is not None:
            where += f" -> {error.filename2}"
    else:
        where = ", ".join(fallback_paths) or "?"
    reason = error.strerror or str(error) or type(error).__name__
    return f"{where}: {reason}"


def make_parent_folder(path: Path) -> None:
    """Create `path`'s folder and the missing ones above it, or raise `ArcDataError`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as error:
        raise ArcDataError(
            f"{path}: cannot create its folder ({error.filename} is a file, not a folder)"
        ) from error
    except OSError as error:
        raise ArcDataError(
            f"{path}: cannot create its folder ({describe_os_error(error, [str(path.parent)])})"
        ) from error
