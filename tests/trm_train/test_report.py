"""The run report: sections and figures from the run's files, matplotlib charts (and a
report without them when matplotlib is missing), links."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import attrs
import numpy as np
import numpy.typing as npt
import PIL.Image
import pytest
from click.testing import CliRunner

import arc_data
from trm_train import Distributed, LoggingConfig, line_chart, tiny, train, write_report
from trm_train.reporting._plot import SERIES_COLOURS
from trm_train.reporting._report_cli import main


def _png_size(path: Path) -> tuple[int, int]:
    """The (width, height) of a PNG that Pillow decodes whole."""
    with PIL.Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # decodes every pixel: a damaged file raises here
        return image.size


def _png_pixels(path: Path) -> npt.NDArray[np.uint8]:
    """The PNG's pixels as an RGB array (height, width, 3), decoded by Pillow (matplotlib
    writes RGBA; its figures are opaque)."""
    with PIL.Image.open(path) as image:
        assert image.format == "PNG" and image.mode in ("RGB", "RGBA"), image.mode
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _has_colour(image: npt.NDArray[np.uint8], rgb: tuple[int, int, int]) -> bool:
    return bool((image == np.asarray(rgb, dtype=np.uint8)).all(axis=2).any())


def _table_value(text: str, name: str) -> str:
    match = re.search(rf"^\| {re.escape(name)} \| (.+) \|$", text, flags=re.MULTILINE)
    assert match is not None, f"no row {name!r} in the report"
    return match.group(1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, transform_store: Callable[..., Path]) -> Path:
    """Three steps of a shrunk tiny model with JD (iwrm_q_halt_in), evaluated at steps 2
    and 3, on three hand-made 2x2 transpose tasks."""
    root = tmp_path_factory.mktemp("report")
    store = transform_store(
        tasks=3,
        shape=(2, 2),
        transform="transpose",
        seed=3,
        num_aug=2,
        held_out=True,
        pairs=4,
        tests=2,
    )
    meta = arc_data.open_store(store).metadata
    config = tiny(meta.num_puzzle_identifiers, meta.seq_len, store)
    config = attrs.evolve(
        config,
        model=attrs.evolve(config.model, hidden_size=32, halt_max_steps=2),
        objective=attrs.evolve(config.objective, split="iwrm_q_halt_in"),
        data=attrs.evolve(config.data, global_batch_size=4),
        loop=attrs.evolve(config.loop, steps=3, eval_every=2),
        logging=LoggingConfig(wandb="disabled"),
    )
    train(config, root / "run", Distributed(), progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def report(run_dir: Path) -> str:
    path = write_report(run_dir)
    assert path == run_dir / "report.md"
    return path.read_text()


def test_report_states_the_configuration(report: str) -> None:
    assert report.startswith("# Run report: run\n")
    assert _table_value(report, "split") == "`iwrm_q_halt_in`"
    assert _table_value(report, "aggregator") == "upgrad"
    assert _table_value(report, "engine").startswith("auto (used: ")
    assert _table_value(report, "global batch") == "4 x 1 accumulation"
    assert _table_value(report, "learning rate").startswith("0.001 (warm-up 20 steps")
    assert (
        _table_value(report, "tasks")
        == "3 within 10x10 (0 larger ones skipped), 2 augmentations each"
    )
    # 3 tasks x 2 test inputs x (1 + 2 augmentations).
    assert _table_value(report, "test split") == "18 examples, 9 task versions, 3 tasks"
    assert _table_value(report, "puzzle embedding table") == "10 x 32"
    params = int(_table_value(report, "trainable parameters").replace(",", ""))
    # hidden 32, 2 layers of attention (4 x 32^2) and SwiGLU (3 x 32 x 256), embeddings, heads.
    assert params == 12 * 32 + 2 * (4 * 32 * 32 + 3 * 32 * 256) + 32 * 12 + 32 * 2 + 2


def test_training_table_matches_metrics_jsonl(run_dir: Path, report: str) -> None:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3]
    # A tenth of 3 rows is the last one.
    assert float(_table_value(report, "loss")) == pytest.approx(rows[-1]["train/loss"], rel=1e-3)
    cosine = statistics.fmean(row["jd/cosine_to_mean"] for row in rows)
    value = float(_table_value(report, "GD cosine (mean over the run)"))
    assert value == pytest.approx(cosine, rel=1e-3)
    seconds = statistics.median(row["train/step_seconds"] for row in rows)
    value = float(_table_value(report, "step time, s (median over the run)"))
    assert value == pytest.approx(seconds, rel=1e-3)


def test_the_table_averages_the_last_tenth_of_the_logged_steps(
    run_dir: Path, tmp_path: Path
) -> None:
    # 30 steps of distinct figures: the last tenth is steps 28 to 30, and a window one
    # row longer or shorter (or the last row alone) gives another mean.
    copy = tmp_path / "run"
    copy.mkdir()
    shutil.copy(run_dir / "config.json", copy / "config.json")
    rows = [
        {
            "step": step,
            "train/loss": 3.0 - 0.05 * step,
            "train/accuracy": 0.02 * step,
            "train/exact_accuracy": 0.01 * step,
            "train/steps": 1.0 + 0.1 * step,
            "train/step_seconds": 0.5 + step,
            "jd/cosine_to_mean": 1.0 / step,
        }
        for step in range(1, 31)
    ]
    (copy / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    text = write_report(copy).read_text()
    assert "Means over the last tenth of the logged steps (28 to 30)" in text
    assert _table_value(text, "loss") == "1.55"  # (1.6 + 1.55 + 1.5) / 3
    assert _table_value(text, "token accuracy") == "0.58"  # (0.56 + 0.58 + 0.6) / 3
    assert _table_value(text, "exact accuracy") == "0.29"
    assert _table_value(text, "mean supervision steps") == "3.9"
    assert _table_value(text, "q-halt accuracy") == "n/a"  # never logged
    assert "train exact accuracy 0.29 (last tenth of the steps)." in text
    # The other rows cover the whole run.
    cosine = statistics.fmean(1.0 / step for step in range(1, 31))
    assert float(_table_value(text, "GD cosine (mean over the run)")) == pytest.approx(
        cosine, rel=1e-3
    )
    assert _table_value(text, "step time, s (median over the run)") == "16"  # 15.5 and 16.5
    assert _table_value(text, "training time, s (sum of step times)") == "480"


def test_evaluation_is_the_newest(run_dir: Path, report: str) -> None:
    assert sorted(p.name for p in (run_dir / "eval").iterdir()) == [
        "step-00000002",
        "step-00000003",
    ]
    metrics = json.loads((run_dir / "eval/step-00000003/metrics.json").read_text())
    assert "## Evaluation (step 3)" in report
    for k in (1, 2, 5, 10, 100, 1000):
        value = float(_table_value(report, f"pass@{k}"))
        assert value == pytest.approx(metrics[f"pass@{k}"], abs=1e-4)
    assert _table_value(report, "held-out tasks") == "3"
    assert _table_value(report, "test inputs") == "6"
    assert "pass@2 " in report.split("\n\n")[1]  # the headline


def test_links_resolve_and_pngs_decode(run_dir: Path, report: str) -> None:
    pytest.importorskip("matplotlib")
    links = re.findall(r"\]\(([^)]+)\)", report)
    charts = [link for link in links if link.startswith("report/")]
    pictures = [link for link in links if "/pictures/" in link]
    assert charts == ["report/loss.png", "report/accuracy.png", "report/gd_cosine.png"]
    assert pictures == [f"eval/step-00000003/pictures/transpose{i:02d}.png" for i in range(3)]
    assert "eval/step-00000003/metrics.json" in links
    for link in links:
        assert (run_dir / link).is_file(), link
    for chart in charts:
        assert _png_size(run_dir / chart) == (640, 360)
    for picture in pictures:
        width, height = _png_size(run_dir / picture)
        assert width > 0 and height > 0
    assert "attempt 1 and attempt 2" in report


def test_chart_captions_give_ranges_and_colours(run_dir: Path, report: str) -> None:
    pytest.importorskip("matplotlib")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [row["train/loss"] for row in rows]
    caption = next(line for line in report.splitlines() if line.startswith("Training loss: x"))
    match = re.fullmatch(r"Training loss: x step 1 to 3, y (\S+) to (\S+); blue: loss\.", caption)
    assert match is not None, caption
    assert float(match.group(1)) == pytest.approx(min(losses), rel=1e-3)
    assert float(match.group(2)) == pytest.approx(max(losses), rel=1e-3)
    # The accuracy chart holds the evaluations of steps 2 and 3 as its third series.
    caption = next(line for line in report.splitlines() if line.startswith("Accuracy: x"))
    assert caption.endswith("; green: eval pass@2.")


def test_report_without_evaluation_or_metrics(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bare"
    copy.mkdir()
    shutil.copy(run_dir / "config.json", copy / "config.json")
    text = write_report(copy).read_text()
    assert "No evaluation yet" in text and "No metrics were logged" in text
    assert "Training loss: nothing was logged." in text
    assert not list((copy / "report").iterdir())


def test_chart_draws_each_series_in_its_colour(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    series = {
        "rising": [(0.0, 0.0), (1.0, 1.0), (2.0, float("nan")), (3.0, 2.0)],
        "dot": [(1.5, 1.0)],
        "empty": [],
        "infinite": [(1.0, float("inf"))],
    }
    line_chart(series, tmp_path / "chart.png", title="t", ylabel="y")
    image = _png_pixels(tmp_path / "chart.png")
    assert image.shape == (360, 640, 3)
    (_, blue), (_, orange), (_, green), (_, red) = SERIES_COLOURS[:4]
    assert _has_colour(image, blue) and _has_colour(image, orange)
    # Series without a finite point draw nothing, not even a legend entry.
    assert not _has_colour(image, green) and not _has_colour(image, red)


def test_bad_chart_arguments(tmp_path: Path) -> None:
    many = {str(i): [(0.0, 0.0)] for i in range(len(SERIES_COLOURS) + 1)}
    with pytest.raises(ValueError, match="at most 6 series"):
        line_chart(many, tmp_path / "c.png", title="t", ylabel="y")


def test_cli_prints_the_path_and_rejects_bad_runs(run_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [str(run_dir)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(run_dir / "report.md")

    result = CliRunner().invoke(main, [str(tmp_path / "missing")])
    assert result.exit_code == 2 and "not a training run (no config.json)" in result.output

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    shutil.copy(run_dir / "config.json", damaged / "config.json")
    (damaged / "metrics.jsonl").write_text('{"step": 1}\n{"step": \n')
    result = CliRunner().invoke(main, [str(damaged)])
    assert result.exit_code == 2 and f"{damaged / 'metrics.jsonl'}: not JSON lines" in result.output


def test_without_matplotlib_the_report_is_written_and_asks_for_the_extra(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "run"
    # The run's own files, without the report the other tests wrote.
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("report", "report.md"))
    # A None entry makes `import matplotlib...` raise ImportError, as when not installed.
    for name in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, name, None)
    result = CliRunner().invoke(main, [str(copy), "--pictures", "0"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(copy / "report.md")
    assert "no charts drawn: they need matplotlib (pip install 'trm-train[report]')" in (
        result.stderr
    )
    text = (copy / "report.md").read_text()
    assert "## Charts\n\nNo charts: drawing them needs matplotlib" in text
    assert "## Training" in text and "## Evaluation (step 3)" in text
    assert not list((copy / "report").iterdir())
    with pytest.raises(ImportError, match=r"trm-train\[report\]"):
        line_chart({"a": [(0.0, 0.0)]}, tmp_path / "c.png", title="t", ylabel="y")
