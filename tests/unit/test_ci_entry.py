"""``.ci/run`` (the CI entry point) runs the static checks, before the suite so they fail early."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_the_quality_check_before_the_tests() -> None:
    commands = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "make quality-check" in commands, "ruff, mypy and the import contracts are not run in CI"
    assert commands.index("make quality-check") < commands.index("make test")
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\nquality-check:") :].split("\n\n")[0]
    assert "lint" in recipe.splitlines()[1] and "mypy" in recipe and "lint-imports" in recipe
