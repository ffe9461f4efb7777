"""``app.llm`` is a leaf: it is built by the composition root and never reaches back into it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import app.llm

pytestmark = pytest.mark.unit

FORBIDDEN = ("app.resources", "app.api", "app.main")


def imported_modules(source: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_llm_module_imports_the_composition_root_or_the_http_layer() -> None:
    offenders = {
        f"{source.name}: {name}"
        for source in Path(next(iter(app.llm.__path__))).glob("*.py")
        for name in imported_modules(source)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)
    }
    assert offenders == set()
