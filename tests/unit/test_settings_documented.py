"""Every variable of ``app.settings.Settings`` is in .env.example and in the README's
configuration table (CONTRIBUTING: a new setting goes in all three)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.settings import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
VARIABLES = sorted(name.upper() for name in Settings.model_fields)


def configuration_rows() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Configuration\n")
    section = readme[start : readme.index("\n## ", start + 1)]
    return [line for line in section.splitlines() if line.startswith("| `")]


def expanded(token: str) -> list[str]:
    """``{GEMINI,GROQ}_MODEL`` is ``GEMINI_MODEL`` and ``GROQ_MODEL``."""
    braces = re.fullmatch(r"\{([A-Z0-9_,]+)\}(\w*)", token)
    if braces is None:
        return [token]
    return [head + braces.group(2) for head in braces.group(1).split(",")]


def documented_in(row: str, name: str) -> bool:
    """A row names a variable in one of the table's spellings: `NAME`; `A_B` / `_C` (A_C, with the
    head of the row before the continuation); `{X,Y}_NAME`; or `PREFIX_*` with its `_SUFFIX`s."""
    first = row.split("|")[1]
    tokens = re.findall(r"`([^`]+)`", first)
    heads = [full for token in tokens if not token.startswith("_") for full in expanded(token)]
    tails = [token for token in tokens if token.startswith("_")]
    if name in heads:
        return True
    for tail in tails:
        if name.endswith(tail) and any(head.startswith(name[: -len(tail)] + "_") for head in heads):
            return True
    for head in heads:
        if head.endswith("_*") and name.startswith(head[:-1]):
            suffix = name[len(head) - 2 :]  # "_API_KEY" of "GEMINI_API_KEY" under `GEMINI_*`
            if f"`{suffix}`" in row or f"`{suffix[1:]}`" in row:
                return True
    return False


def test_every_setting_is_in_the_env_example() -> None:
    example = (ROOT / ".env.example").read_text()
    missing = [name for name in VARIABLES if not re.search(rf"^#?\s*{name}=", example, re.MULTILINE)]
    assert not missing, f"settings missing from .env.example: {missing}"


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    rows = configuration_rows()
    missing = [name for name in VARIABLES if not any(documented_in(row, name) for row in rows)]
    assert not missing, f"settings missing from the README's configuration table: {missing}"
