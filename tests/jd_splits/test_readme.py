"""The python code blocks of the package README and of the repository README's jd-splits
section run as written (small sizes), so that the documentation cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
READMES = [ROOT / "packages" / "jd-splits" / "README.md", ROOT / "README.md"]
EXAMPLES = [
    (readme, index, code)
    for readme in READMES
    for index, code in enumerate(
        re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.DOTALL)
    )
]


def test_each_readme_has_examples() -> None:
    counts = {readme: sum(r == readme for r, _, _ in EXAMPLES) for readme in READMES}
    assert counts == {READMES[0]: 3, READMES[1]: 1}


@pytest.mark.parametrize(
    ("readme", "index", "code"),
    EXAMPLES,
    ids=[f"{readme.parent.name}-{index}" for readme, index, _ in EXAMPLES],
)
def test_readme_example_runs(readme: Path, index: int, code: str) -> None:
    exec(compile(code, f"{readme}:example{index}", "exec"), {})
