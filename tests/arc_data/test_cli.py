from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from arc_data import ARC_PALETTE, grid_image, grid_rows_image, open_store, write_png
from arc_data._cli import main


def read_png(path: Path) -> np.ndarray:
    """Decode an 8-bit RGB PNG with filter type 0 (what write_png produces), by hand."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat, header = 8, b"", b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body)
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        position += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", header[:10])
    assert (depth, colour_type) == (8, 2)
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + 3 * width)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(height, width, 3)


def test_png_round_trip(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, (7, 5, 3)).astype(np.uint8)
    write_png(tmp_path / "x.png", image)
    np.testing.assert_array_equal(read_png(tmp_path / "x.png"), image)


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
