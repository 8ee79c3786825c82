"""The package's public names, loaded on first use, so that code needing only the split
or engine names (a configuration, an evaluation command) does not import torchjd."""

from __future__ import annotations

import subprocess
import sys

import jd_splits


def test_the_split_and_engine_names_load_without_torchjd() -> None:
    code = (
        "import sys\n"
        "from jd_splits import ENGINE_NAMES, SPLIT_NAMES, canonical_split_name, get_split\n"
        "get_split(canonical_split_name('IWRM_with_q_halt_in'))\n"
        "print(' '.join(sorted(sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    assert "jd_splits._presets" in loaded
    assert [name for name in loaded if name.split(".")[0] in ("torchjd", "cvxpy")] == []
    assert "jd_splits._descent" not in loaded


def test_every_public_name_resolves_and_is_listed() -> None:
    assert sorted(jd_splits.__all__) == sorted(jd_splits._MODULE_OF)
    for name in jd_splits.__all__:
        assert getattr(jd_splits, name) is not None, name
    assert set(jd_splits.__all__) <= set(dir(jd_splits))
    assert jd_splits.JacobianDescent.__module__ == "jd_splits._descent"
