from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from app.observability.metrics import DomainMetrics
from app.observability.metrics.prometheus import PrometheusBackend

pytestmark = [pytest.mark.unit, pytest.mark.metrics]

DASHBOARD = Path(__file__).resolve().parents[3] / "observability" / "grafana-dashboard.json"
PROMQL_WORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "max", "clamp_min", "time", "le"}


async def exposed_sample_names() -> set[str]:
    """Every sample name the service exposes: domain metrics, HTTP requests included."""
    metrics = DomainMetrics(PrometheusBackend())
    metrics.http_request("GET", "/ping", 200, 0.01)  # as the edge layer records every request
    payload = metrics.backend.exposition()
    assert payload is not None
    names = set()
    for line in payload[0].decode().splitlines():
        if line.startswith("# TYPE "):
            family, kind = line.split()[2:4]
            names.add(family)
            if kind == "histogram":
                names |= {family + "_bucket", family + "_count", family + "_sum"}
    return names


async def test_every_dashboard_query_uses_metrics_the_service_exposes() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exposed = await exposed_sample_names()
    titles = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        titles.append(panel["title"])
        for target in panel["targets"]:
            expr = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]', "", target["expr"])
            expr = re.sub(r"\d+(\.\d+)?(e-?\d+)?", "", expr)  # numbers such as 1e-9
            used = {word for word in re.findall(r"[a-z_][a-z0-9_]*", expr) if word not in PROMQL_WORDS}
            used -= {
                "handler",
                "mode",
                "provider",
                "outcome",
                "layer",
                "scope",
                "reason",
                "kind",
                "state",
                "pool",
            }
            assert used and used <= exposed, (panel["title"], used - exposed)
    for required in (
        "Request rate",
        "Latency",
        "Error",
        "Vector search p99",
        "Provider attempts",
        "Cooldown",
        "Cache hit",
        "Rate-limited",
        "Ingestion",
    ):
        assert any(required in title for title in titles), required
