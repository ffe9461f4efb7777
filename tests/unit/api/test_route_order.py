"""The routers are included hot path first (``app.main.ROUTERS``); that is safe only while no
two of them serve the same method and path."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from fastapi.routing import APIRoute

from app.main import ROUTERS

pytestmark = pytest.mark.unit


def test_no_two_routes_serve_the_same_method_and_path() -> None:
    served = Counter(
        (method, re.sub(r"\{[^}]*\}", "{}", route.path))
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    )
    assert ("POST", "/api/v1/chat") in served  # the routes were found at all
    assert [operation for operation, times in served.items() if times > 1] == []
