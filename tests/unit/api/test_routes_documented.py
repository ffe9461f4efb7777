"""Every route the app serves is listed in the README's API table (``METHOD /path``, path
parameters by any name)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.routing import BaseRoute

from app.main import create_app
from app.settings import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def normalised(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def served_routes(app: FastAPI) -> set[str]:
    """``METHOD /path`` of every operation, and ``/path`` of what is mounted without methods
    (the MCP endpoint); FastAPI's own documentation pages left out."""
    routes = {
        f"{method.upper()} {normalised(path)}"
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    own_pages = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    for route in app.routes:
        path = getattr(route, "path", None)
        if (
            isinstance(route, BaseRoute)
            and path
            and path not in own_pages
            and not getattr(route, "methods", None)
        ):
            routes.add(normalised(path))
    return routes


def api_table_cells() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## API\n")
    section = readme[start : readme.index("\n## ", start + 1)]
    return "\n".join(line.split("|")[1] for line in section.splitlines() if line.startswith("| `"))


def test_every_route_is_in_the_readme_api_table() -> None:
    routes = served_routes(create_app(Settings(_env_file=None)))  # type: ignore[call-arg]
    listed = {normalised(token) for token in re.findall(r"`([^`]+)`", api_table_cells())}
    assert "POST /api/v1/chat" in routes  # the app's routes were found at all
    missing = sorted(routes - listed)
    assert not missing, f"routes missing from the README's API table: {missing}"
