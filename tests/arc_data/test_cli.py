from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner
from PIL import Image

from arc_data import ARC_PALETTE, grid_image, grid_rows_image, open_store, write_png
from arc_data._cli import main


def read_png(path: Path) -> npt.NDArray[np.uint8]:
    """Decode with Pillow, a reader independent of write_png; expects 8-bit RGB."""
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        pixels = np.asarray(image)
    assert pixels.dtype == np.uint8
    return pixels


@pytest.mark.parametrize("shape", [(7, 5, 3), (1, 1, 3), (2, 40, 3)])
def test_png_round_trip(tmp_path: Path, shape: tuple[int, int, int]) -> None:
    image = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    write_png(tmp_path / "x.png", image)
    np.testing.assert_array_equal(read_png(tmp_path / "x.png"), image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]  # no hidden leftovers


def test_png_failed_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails (disk full at the rename) leaves the previous picture whole and
    no hidden file; the error names the picture, not the hidden file."""
    old = np.zeros((2, 2, 3), np.uint8)
    write_png(tmp_path / "x.png", old)

    def disk_full(source: object, target: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(source), str(target))

    monkeypatch.setattr("arc_data._render.os.replace", disk_full)
    with pytest.raises(OSError, match="No space left on device") as caught:
        write_png(tmp_path / "x.png", np.ones((3, 3, 3), np.uint8))
    assert caught.value.filename == str(tmp_path / "x.png") and caught.value.filename2 is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]
    np.testing.assert_array_equal(read_png(tmp_path / "x.png"), old)


def test_grid_image_draws_cells_in_arc_colours() -> None:
    grid = np.array([[0, 1], [2, 9]], dtype=np.uint8)
    image = grid_image(grid, cell=4)
    assert image.shape == (2 * 5 + 1, 2 * 5 + 1, 3)
    np.testing.assert_array_equal(image[1, 1], ARC_PALETTE[0])
    np.testing.assert_array_equal(image[1, 6], ARC_PALETTE[1])
    np.testing.assert_array_equal(image[6, 1], ARC_PALETTE[2])
    np.testing.assert_array_equal(image[9, 9], ARC_PALETTE[9])
    rows = grid_rows_image([[grid, None], [grid]], cell=4, gap=2)
    assert rows.shape[0] == 2 + 12 + 2 + 11 + 2


def test_build_info_show(tmp_path: Path, hand_made_prefix: Path) -> None:
    output = tmp_path / "s.zarr"
    result = CliRunner().invoke(
        main,
        [
            "build",
            "--source",
            f"kaggle:{hand_made_prefix}",
            "--subsets",
            "train,eval",
            "--test-set",
            "eval",
            "--num-aug",
            "2",
            "--max-grid",
            "10",
            "--output",
            str(output),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        "2 tasks, 6 puzzles" in result.stderr
        and "skipped 1 tasks larger than 10x10" in result.stderr
    )
    info = CliRunner().invoke(main, ["info", str(output)])
    assert info.exit_code == 0
    metadata = json.loads(info.stdout)
    assert metadata["num_puzzle_identifiers"] == 7
    assert metadata["counts"]["test"] == {"examples": 6, "puzzles": 3, "groups": 1}
    assert metadata["tasks"] == 2 and metadata["skipped_tasks"] == 1

    store = open_store(output)
    identifier = int(store.test.puzzle_identifiers[1])
    png = tmp_path / "p.png"
    shown = CliRunner().invoke(
        main, ["show", str(output), "--puzzle", str(identifier), "--out", str(png), "--cell", "3"]
    )
    assert shown.exit_code == 0, shown.output
    assert "eval/b" in shown.stderr and "5 examples" in shown.stderr
    image = read_png(png)
    # Task b's largest grid is 6x6 and it has 5 pairs: the picture is tall and in palette colours.
    assert image.shape[0] > 5 * (3 * 4) and image.shape[2] == 3
    palette = {tuple(c) for c in ARC_PALETTE.tolist()}
    colours = {tuple(c) for c in image.reshape(-1, 3).tolist()}
    assert len(colours & palette) >= 5

    bad = CliRunner().invoke(main, ["show", str(output), "--puzzle", "99", "--out", str(png)])
    assert bad.exit_code == 2 and "puzzle identifier 99 is not in 1..6" in bad.stderr


def test_console_script_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "arc_data._cli", "build", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for option in (
        "--source",
        "--subsets",
        "--test-set",
        "--num-aug",
        "--seed",
        "--max-grid",
        "--output",
        "--overwrite",
    ):
        assert option in result.stdout


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _one_line_failure(result: Any, *fragments: str) -> None:
    """Exit 2 and one `error:` line holding every fragment, no traceback (a build's
    progress label may come before)."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.strip().splitlines() if line != "encoding tasks"]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_show_creates_the_folder_of_out(tmp_path: Path, hand_made_store: Path) -> None:
    png = tmp_path / "missing" / "dir" / "p.png"
    shown = CliRunner().invoke(
        main, ["show", str(hand_made_store), "--puzzle", "1", "--out", str(png), "--cell", "2"]
    )
    assert shown.exit_code == 0, shown.output
    assert _files(tmp_path) == ["missing", "missing/dir", "missing/dir/p.png"]
    assert read_png(png).shape[2] == 3


def test_show_out_below_a_file(tmp_path: Path, hand_made_store: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    png = tmp_path / "afile" / "sub" / "p.png"
    shown = CliRunner().invoke(
        main, ["show", str(hand_made_store), "--puzzle", "1", "--out", str(png)]
    )
    _one_line_failure(shown, str(png), "cannot create its folder", "Not a directory")
    assert _files(tmp_path) == ["afile"]
    png = tmp_path / "afile" / "p.png"
    shown = CliRunner().invoke(
        main, ["show", str(hand_made_store), "--puzzle", "1", "--out", str(png)]
    )
    _one_line_failure(shown, str(png), f"{tmp_path / 'afile'} is a file, not a folder")
    assert _files(tmp_path) == ["afile"] and (tmp_path / "afile").read_text() == "not a folder"


def test_show_out_is_a_folder(tmp_path: Path, hand_made_store: Path) -> None:
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "keep.txt").write_text("kept")
    out = tmp_path / "pictures"
    shown = CliRunner().invoke(
        main, ["show", str(hand_made_store), "--puzzle", "1", "--out", str(out)]
    )
    # The message names the path asked for, not the hidden file written first.
    _one_line_failure(shown, f"error: {out}: ")
    assert ".partial" not in shown.stderr
    assert _files(tmp_path) == ["pictures", "pictures/keep.txt"]


def test_show_failed_write_removes_the_folders_it_made(
    tmp_path: Path, hand_made_store: Path
) -> None:
    # The folders can be made, the file cannot (its name is over the 255-byte limit).
    png = tmp_path / "new" / "sub" / ("x" * 300 + ".png")
    shown = CliRunner().invoke(
        main, ["show", str(hand_made_store), "--puzzle", "1", "--out", str(png)]
    )
    _one_line_failure(shown, str(png), "File name too long")
    assert _files(tmp_path) == []


def test_info_reports_an_os_error(tmp_path: Path) -> None:
    store = tmp_path / ("s" * 300)  # os.stat fails with ENAMETOOLONG
    result = CliRunner().invoke(main, ["info", str(store)])
    _one_line_failure(result, str(store), "File name too long")


def test_build_output_below_a_file(tmp_path: Path, hand_made_prefix: Path) -> None:
    (tmp_path / "afile").write_text("x")
    output = tmp_path / "afile" / "s.zarr"
    result = CliRunner().invoke(
        main,
        ["build", "--source", f"kaggle:{hand_made_prefix}", "--subsets", "eval",
         "--test-set", "eval", "--num-aug", "0", "--output", str(output)],
    )  # fmt: skip
    _one_line_failure(result, str(output), f"{tmp_path / 'afile'} is a file, not a folder")
    assert _files(tmp_path) == ["afile"]


@pytest.mark.parametrize("filename", [None, "/somewhere/chunk"])
def test_build_os_error_while_writing(
    tmp_path: Path,
    hand_made_prefix: Path,
    monkeypatch: pytest.MonkeyPatch,
    filename: str | None,
) -> None:
    """A disk that fills up mid-build: one line naming the file (or the store when the
    error names none), and the partial store removed."""

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr("arc_data._build._metadata", disk_full)
    output = tmp_path / "s.zarr"
    result = CliRunner().invoke(
        main,
        ["build", "--source", f"kaggle:{hand_made_prefix}", "--subsets", "eval",
         "--test-set", "eval", "--num-aug", "0", "--output", str(output)],
    )  # fmt: skip
    _one_line_failure(result, f"{filename or output}: No space left on device")
    assert _files(tmp_path) == []
