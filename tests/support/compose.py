"""docker-compose.yml as Compose reads it, without Docker: YAML (anchors and merge keys resolved)
then variable interpolation by the Compose specification's rules, so tests can check what a
service would really get from a given environment."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"

_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<operator>:?[-?+])(?P<argument>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<invalid>))"
)


class MissingVariableError(Exception):
    """A ``${NAME:?message}`` whose variable is unset (or empty): Compose refuses to start."""


def interpolate(value: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["invalid"] is not None:
            raise ValueError(f"invalid interpolation in {value!r}")
        name = match["braced"] or match["named"]
        operator, argument = match["operator"], match["argument"] or ""
        current = env.get(name)
        unset_or_empty = not current
        missing = unset_or_empty if operator and operator.startswith(":") else current is None
        if operator in (":-", "-"):
            return argument if missing else str(current)
        if operator in (":?", "?"):
            if missing:
                raise MissingVariableError(f"{name}: {argument}")
            return str(current)
        if operator in (":+", "+"):
            return "" if missing else argument
        return current or ""

    return _REFERENCE.sub(replace, value)


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(item, env) for key, item in node.items()}
    return node


def raw_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def load_compose(env: Mapping[str, str]) -> dict[str, Any]:
    """The file as Compose would run it with ``env`` (raises ``MissingVariableError``)."""
    resolved: dict[str, Any] = _interpolate_tree(raw_compose(), env)
    return resolved
