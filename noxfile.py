"""Test sessions: one per package (installed alone), integration, typecheck, lint.

Every install goes through `.ci/constraints.txt`, which pins the CPU build of torch.
Run everything with `nox`, or one session with `nox -s arcdata`; extra arguments go to
pytest (`nox -s arcdata -- -m "not slow"`, or `-- -n 0` for one process).
"""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = str(ROOT / ".ci" / "constraints.txt")

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = False
nox.options.error_on_missing_interpreters = True

# Each package with the local packages it depends on (installed from this checkout,
# never from an index), in dependency order.
LOCAL_DEPENDENCIES: dict[str, list[str]] = {
    "arc-data": [],
    "trm-model": [],
    "jd-splits": [],
    "trm-train": ["arc-data", "trm-model", "jd-splits"],
}


# The build backend of the local packages (their `build-system.requires`), installed once
# per session so that pip builds them without an isolated environment each: that
# environment costs about 6 s per package, a fifth of a session's install.
BUILD_BACKEND = ["hatchling>=1.25", "editables"]


def _install(session: nox.Session, *requirements: str, editable: bool = False) -> None:
    """Install `requirements` under the constraints; local packages (`./packages/...`) are
    built with the session's own build backend."""
    # --no-compile: byte-compiling all of torch at install takes longer than the tests of a
    # package; Python compiles the modules a test imports on first use instead (BYTECODE).
    args = ["--no-compile", "-c", CONSTRAINTS]
    if any(requirement.startswith("./packages/") for requirement in requirements):
        session.install(*args, *BUILD_BACKEND)
        args.append("--no-build-isolation")
    for requirement in requirements:
        args += ["-e", requirement] if editable else [requirement]
    session.install(*args)


# The tests are CPU-bound Python on small models: one pytest-xdist worker per CPU, each
# with one torch thread, keeps every core busy. Whole files go to a worker (loadfile), so
# that a module's fixtures (trained runs, stores) are made once.
PARALLEL = ["-n", "auto", "--dist", "loadfile"]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Let the tests write bytecode even where the machine's environment forbids it
# (PYTHONDONTWRITEBYTECODE, set in this project's containers): the suite starts dozens of
# Python processes (workers, CLIs, torchrun ranks), and without cached bytecode each one
# compiles the torch modules it imports again, 2-3 s of CPU per process.
BYTECODE: dict[str, str | None] = {"PYTHONDONTWRITEBYTECODE": None}


def _pytest(session: nox.Session, folder: str) -> None:
    session.run("pytest", *PARALLEL, folder, *session.posargs, env=ONE_THREAD | BYTECODE)


def _test_package(session: nox.Session, package: str) -> None:
    """Install one package (non-editable, with its test extra) and run its tests."""
    local = [f"./packages/{dep}" for dep in LOCAL_DEPENDENCIES[package]]
    _install(session, *local, f"./packages/{package}[test]")
    _pytest(session, f"tests/{package.replace('-', '_')}")


@nox.session
def arcdata(session: nox.Session) -> None:
    """arc-data alone: readers, augmentation, store build and samplers."""
    _test_package(session, "arc-data")


@nox.session
def trmmodel(session: nox.Session) -> None:
    """trm-model alone: the Tiny Recursive Model, its ACT carry and loss head."""
    _test_package(session, "trm-model")


@nox.session
def jdsplits(session: nox.Session) -> None:
    """jd-splits alone: loss splits, the JD step, the batched UPGrad projector."""
    _test_package(session, "jd-splits")


@nox.session
def trmtrain(session: nox.Session) -> None:
    """trm-train with its three local dependencies: loop, optimizers, DDP, resume, scoring."""
    _test_package(session, "trm-train")


def _all_packages_editable(session: nox.Session, *, test_extras: tuple[str, ...]) -> None:
    """Every package, editable; those named in `test_extras` with their test extra."""
    _install(
        session,
        *[
            f"./packages/{package}[test]" if package in test_extras else f"./packages/{package}"
            for package in LOCAL_DEPENDENCIES
        ],
        editable=True,
    )


@nox.session
def integration(session: nox.Session) -> None:
    """All packages together: CLIs end to end and cross-package seams."""
    # trm-train's test extra has what these tests use (pytest, matplotlib). jd-splits' would
    # add the cvxpy and quadprog solvers torchjd imports when present: seconds more to
    # install, and about 2 s more in every trm-train process these tests start.
    _all_packages_editable(session, test_extras=("trm-train",))
    _pytest(session, "tests/integration")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over every package, the tests, the tools and this file."""
    # Every test extra but jd-splits': the solvers it adds are not imported by our code, and
    # cost a fifth of this session's install. Its pytest and hypothesis come with the others.
    _all_packages_editable(session, test_extras=("arc-data", "trm-model", "trm-train"))
    _install(session, "mypy", "nox")
    session.run("mypy")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the whole repository: lint rules and formatting."""
    _install(session, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
