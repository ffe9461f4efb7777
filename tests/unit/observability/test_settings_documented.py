from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.unit, pytest.mark.metrics]

ROOT = Path(__file__).resolve().parents[3]
OBSERVABILITY_SETTINGS = (
    "LOG_LEVEL",
    "LOG_JSON",
    "LOG_TO_FILE",
    "LOG_FILE_MAX_MB",
    "LOG_FILE_BACKUPS",
    "LANGFUSE_PUBLIC_KEY",
    "LANGFUSE_SECRET_KEY",
    "LANGFUSE_HOST",
    "LANGFUSE_SAMPLE_RATE",
    "LANGFUSE_TIMEOUT_S",
    "LANGFUSE_FLUSH_TIMEOUT_S",
    "METRICS_BACKEND",
    "DD_AGENT_HOST",
    "DD_DOGSTATSD_PORT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_METRIC_EXPORT_INTERVAL_S",
    "OTEL_SERVICE_NAME",
    "METRICS_SAMPLE_INTERVAL_S",
)


@pytest.mark.parametrize("name", OBSERVABILITY_SETTINGS)
def test_observability_setting_is_documented(name: str) -> None:
    assert f"\n{name}=" in (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    assert name in readme or name.rsplit("_", 1)[0] + "_*" in readme or f"`{name.split('_')[0]}_*`" in readme
