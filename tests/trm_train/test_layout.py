"""The package's layout: every public name from `trm_train`, loaded on first use, so
that importing the package loads none of its jobs."""

from __future__ import annotations

import inspect
import subprocess
import sys

import trm_train


def test_importing_the_package_loads_no_job_and_no_torch() -> None:
    code = "import sys, trm_train; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    assert [name for name in loaded if name.startswith("trm_train.")] == []
    assert "torch" not in loaded


def test_every_public_name_resolves_and_is_listed() -> None:
    assert sorted(trm_train.__all__) == sorted(trm_train._MODULE_OF)
    for name in trm_train.__all__:
        assert getattr(trm_train, name) is not None, name
    assert set(trm_train.__all__) <= set(dir(trm_train))


def test_the_train_function_is_not_shadowed_by_a_subpackage() -> None:
    import trm_train.training._cli  # noqa: F401  (loads the training subpackage)
    from trm_train import train

    assert inspect.isfunction(train) and train.__module__ == "trm_train.training._loop"
